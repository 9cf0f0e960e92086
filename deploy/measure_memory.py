"""Measure the resident memory of one `python -m gateway` process, for the pod's resources.

    .venv/bin/python deploy/measure_memory.py [--sites 500 --connectors 200] [--redis]

Starts, all on 127.0.0.1 and each in its own process, the ChargePilot simulator serving
`--sites` sites of `--connectors` connectors, optionally a `redis-server` (`--redis`: the
gateway then runs as in Kubernetes, with `REDIS_URL`), and the gateway.  It reads the
gateway's `VmRSS` and `VmHWM` (peak RSS) from /proc after start, after the first fleet-wide
`GET /connectors` (the fill), after walking every `/connectors` page and every `/sites/{id}`
`--passes` times with `--concurrency` clients, and prints one JSON object.  Every process
it starts it stops (SIGTERM, then SIGKILL) on the way out.  Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

HOST = "127.0.0.1"
KEY, SECRET = "measure-key", "measure-secret"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of `pid`, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return fields


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{process.args!r} did not listen on {port} in {timeout} s")


@contextlib.contextmanager
def started(args: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[int]:
    """Run `args` until the block ends; yields its pid once it listens on `port`."""
    with log.open("wb") as log_file:
        process = subprocess.Popen(args, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, process, timeout=120)
        yield process.pid
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def drive(port: int, passes: int, concurrency: int, pid: int) -> dict[str, Any]:
    base = f"http://{HOST}:{port}"
    phases: dict[str, Any] = {"started": memory(pid)}
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        began = time.monotonic()
        page = await get_json(session, f"{base}/connectors?limit=1000")
        phases["fill_seconds"] = round(time.monotonic() - began, 2)
        phases["after_fill"] = memory(pid)
        paths = ["/connectors?limit=1000"]
        while page["next_cursor"] is not None:
            paths.append(f"/connectors?limit=1000&cursor={page['next_cursor']}")
            page = await get_json(session, base + paths[-1])
        sites = (await get_json(session, f"{base}/sites"))["data"]
        paths += [f"/sites/{site['id']}" for site in sites]
        queue: asyncio.Queue[str] = asyncio.Queue()
        for _ in range(passes):
            for path in paths:
                queue.put_nowait(path)

        async def client() -> None:
            while not queue.empty():
                await get_json(session, base + queue.get_nowait())

        await asyncio.gather(*(client() for _ in range(concurrency)))
        phases["after_walks"] = memory(pid)
        phases["requests"] = len(paths) * passes
    return phases


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        if response.status != 200:
            raise SystemExit(f"GET {url}: {response.status} {await response.text()}")
        return await response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--connectors", type=int, default=200)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--redis", action="store_true", help="use a redis-server, as in k8s")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARGEPILOT_", "GATEWAY_"))}
    env.pop("REDIS_URL", None)
    sim_port, gateway_port = free_port(), free_port()
    python = sys.executable
    with (
        tempfile.TemporaryDirectory(prefix="measure-memory-") as scratch,
        contextlib.ExitStack() as stack,
    ):
        logs = Path(scratch)
        stack.enter_context(started(
            [python, "-m", "gateway.simulator", "--host", HOST, "--port", str(sim_port),
             "--key", KEY, "--secret", SECRET, "--sites", str(args.sites),
             "--connectors-per-site", str(args.connectors)],
            sim_port, env, logs / "simulator.log"))  # fmt: skip
        gateway_env = dict(env, CHARGEPILOT_BASE_URL=f"http://{HOST}:{sim_port}/rest/v1",
                           CHARGEPILOT_API_KEY=KEY, CHARGEPILOT_API_SECRET=SECRET,
                           GATEWAY_HOST=HOST, GATEWAY_PORT=str(gateway_port),
                           GATEWAY_LOG_LEVEL="WARNING")  # fmt: skip
        if args.redis:
            redis_port = free_port()
            redis = shutil.which("redis-server") or sys.exit("redis-server is not installed")
            stack.enter_context(started(
                [redis, "--bind", HOST, "--port", str(redis_port), "--save", "",
                 "--appendonly", "no", "--dir", scratch],
                redis_port, env, logs / "redis.log"))  # fmt: skip
            gateway_env["REDIS_URL"] = f"redis://{HOST}:{redis_port}/0"
        pid = stack.enter_context(
            started([python, "-m", "gateway"], gateway_port, gateway_env, logs / "gateway.log")
        )
        phases = asyncio.run(drive(gateway_port, args.passes, args.concurrency, pid))
    result = {"sites": args.sites, "connectors_per_site": args.connectors,
              "cache": "redis" if args.redis else "embedded", **phases,
              "peak_rss_mib": phases["after_walks"]["VmHWM"]}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
