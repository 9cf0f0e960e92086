"""nginx `proxy_cache` in front of the simulator, the off-the-shelf rival to the gateway.

nginx cannot sign requests, but the simulator (like ChargePilot, as far as is known)
accepts a signature for 300 s after its timestamp.  So each proxied path gets one exact
`location`, whose upstream request carries headers signed at start for that exact upstream
path; nginx fetches it once and serves it from its cache (`X-Cache-Status: HIT`) after.
It runs as the current user, from a config written into a temporary directory (pid file,
logs, temp and cache directories all in there), `daemon off`, on a loopback port, and is
stopped by pid like every other process of the benchmark.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from procs import HOST
from upstream_auth import signed_headers

UPSTREAM_PREFIX = "/rest/v1"
CACHE_SECONDS = 3600


def user_directive() -> str:
    """nginx's workers switch to `nobody` when started by root; keep the current user."""
    if os.geteuid() != 0:
        return ""  # not root: nginx cannot switch users, and warns if told to
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


def location(path: str, *, api_key: str, secret: str, now: float | None) -> str:
    upstream_path = UPSTREAM_PREFIX + path
    headers = signed_headers(api_key, secret, upstream_path, now=now)
    lines = [
        f"        location = {path} {{",
        f"            proxy_pass http://simulator{upstream_path};",
        # A location's proxy_set_header replaces every inherited one, so all are here.
        '            proxy_set_header Connection "";',
        # One cached variant: the upstream's identity bytes, whatever the client accepts.
        '            proxy_set_header Accept-Encoding "";',
        *(f'            proxy_set_header {name} "{value}";' for name, value in headers.items()),
        "        }",
    ]
    return "\n".join(lines)


def config_text(
    workdir: Path,
    *,
    port: int,
    upstream_port: int,
    paths: list[str],
    workers: int,
    api_key: str,
    secret: str,
    now: float | None = None,
) -> str:
    """nginx.conf serving each of `paths` (gateway-style, e.g. `/sites/site-0001`) from a
    cache filled from `http://127.0.0.1:<upstream_port>/rest/v1<path>`."""
    locations = "\n".join(location(p, api_key=api_key, secret=secret, now=now) for p in paths)
    return f"""\
{user_directive()}worker_processes {workers};
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log {workdir}/access.log;
    sendfile on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy_temp;
    fastcgi_temp_path {workdir}/fastcgi_temp;
    uwsgi_temp_path {workdir}/uwsgi_temp;
    scgi_temp_path {workdir}/scgi_temp;
    proxy_cache_path {workdir}/cache levels=1:2 keys_zone=bench:10m max_size=1g
                     inactive={CACHE_SECONDS}s use_temp_path=off;
    upstream simulator {{
        server {HOST}:{upstream_port};
        keepalive 16;
    }}
    server {{
        listen {HOST}:{port};
        proxy_http_version 1.1;
        proxy_cache bench;
        proxy_cache_valid 200 {CACHE_SECONDS}s;
        proxy_cache_lock on;
        add_header X-Cache-Status $upstream_cache_status always;
{locations}
    }}
}}
"""


def command(workdir: Path) -> list[str]:
    """How to run nginx with the config in `workdir` (`-e`: no default error log first)."""
    return ["nginx", "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e",
            str(workdir / "error.log")]  # fmt: skip


def write_config(workdir: Path, text: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "nginx.conf").write_text(text)


def check_config(workdir: Path) -> None:
    """`nginx -t` on the written config; raises with nginx's own message when it is bad."""
    done = subprocess.run(
        [*command(workdir), "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"nginx rejected its config: {done.stderr.strip()}")


def version() -> str | None:
    if shutil.which("nginx") is None:
        return None
    done = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10)
    return done.stderr.strip().removeprefix("nginx version: ") or None
