"""The services a comparison runs, each a real process on a free loopback port: the
simulator (`python -m gateway.simulator`), the gateway (`python -m gateway`, configured only
through its environment variables), `redis-server`, bare aiohttp copies, nginx and an OTLP
trace sink; plus the small synchronous HTTP helpers that check, warm and scrape them.  Every
process is started through `Processes`, so it is stopped by pid whatever happens."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nginx
from common import API_KEY, API_SECRET, free_port
from procs import HOST, POLL, Processes
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
FLEET_BUILD_TIMEOUT = 300.0  # the simulator builds a 500 x 200 fleet before it listens
HTTP_TIMEOUT = 120.0
# For measurements: nothing turns stale mid-run, the upstream budget never throttles a
# miss, no background refresher competes for the CPU, SIGTERM stops at once.
MEASURING_ENV = {
    "GATEWAY_CACHE_TTL": "3600",
    "GATEWAY_UPSTREAM_RPS": "1000",
    "GATEWAY_REFRESH_SHARE": "0",
    "GATEWAY_SHUTDOWN_DELAY": "0",
}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def http_get(url: str, headers: dict[str, str] | None = None) -> Answer:
    """One GET on a fresh connection, identity encoding unless `headers` say otherwise."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname or HOST, parts.port, timeout=HTTP_TIMEOUT
    )
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", path, headers={"Accept-Encoding": "identity", **(headers or {})})
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        connection.close()


def wait_ok(url: str, timeout: float = START_TIMEOUT) -> None:
    """Until `url` answers 200 (connection errors and other statuses: try again)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_get(url).status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout}s")
        time.sleep(POLL * 5)


def start_simulator(
    procs: Processes,
    name: str,
    *,
    sites: int,
    connectors: int,
    latency: float = 0.0,
    cpus: str | None = None,
    source: Path = REPO,
) -> int:
    """The simulator of the tree at `source` serving `build_fleet(sites, connectors)`;
    returns its port."""
    port = free_port()
    command = [sys.executable, "-m", "gateway.simulator", "--host", HOST, "--port", str(port),
               "--key", API_KEY, "--secret", API_SECRET, "--latency", f"{latency:g}",
               "--sites", str(sites), "--connectors-per-site", str(connectors)]  # fmt: skip
    process = procs.start(name, command, cwd=source, cpus=cpus)
    procs.wait_port(process, port, FLEET_BUILD_TIMEOUT)
    return port


def gateway_env(upstream_port: int, port: int, settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without any gateway setting, plus the run's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHARGEPILOT_", "GATEWAY_", "REDIS_", "PROMETHEUS_", "OTEL_"))
    }
    env.update(
        CHARGEPILOT_BASE_URL=f"http://{HOST}:{upstream_port}/rest/v1",
        CHARGEPILOT_API_KEY=API_KEY,
        CHARGEPILOT_API_SECRET=API_SECRET,
        GATEWAY_HOST=HOST,
        GATEWAY_PORT=str(port),
    )
    env.update(settings)
    return env


def start_gateway(
    procs: Processes,
    name: str,
    *,
    upstream_port: int,
    settings: dict[str, str],
    cpus: str | None = None,
    source: Path = REPO,
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m gateway` of the tree at `source` (its working directory, so first on
    sys.path) with `settings` (environment variables); the process and its base URL, once
    `/readyz` answers 200."""
    port = free_port()
    env = gateway_env(upstream_port, port, settings)
    command = [sys.executable, "-m", "gateway"]
    process = procs.start(name, command, env=env, cwd=source, cpus=cpus)
    procs.wait_port(process, port, START_TIMEOUT)
    base = f"http://{HOST}:{port}"
    wait_ok(f"{base}/readyz")
    return process, base


def start_redis(procs: Processes, name: str) -> str:
    """A throwaway `redis-server` (no persistence) on a free port; its URL."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "",
               "--appendonly", "no", "--dir", str(procs.workdir),
               "--protected-mode", "no"]  # fmt: skip
    process = procs.start(name, command)
    procs.wait_port(process, port, START_TIMEOUT)
    return f"redis://{HOST}:{port}/0"


def start_bare(
    procs: Processes, name: str, bodies: dict[str, bytes], *, copies: int, cpus: str | None
) -> tuple[list[int], str]:
    """`copies` bare aiohttp processes sharing one port, answering `bodies` by path; their
    pids and base URL once every path answers."""
    port = free_port()
    routes = []
    for index, (path, body) in enumerate(bodies.items()):
        file = procs.workdir / f"{name}-body-{index}.json"
        file.write_bytes(body)
        routes.append(f"--route={path}={file}")
    command = [sys.executable, str(REPO / "bench" / "bare.py"), f"--port={port}", *routes]
    pids = []
    for copy in range(copies):
        process = procs.start(f"{name}-{copy}", command, cpus=cpus)
        procs.wait_port(process, port, START_TIMEOUT)
        pids.append(process.pid)
    base = f"http://{HOST}:{port}"
    for path in bodies:
        wait_ok(base + path)
    return pids, base


def start_otlp_sink(procs: Processes, name: str, *, cpus: str | None) -> tuple[int, str]:
    """`bench/otlp_sink.py` (answers every OTLP/HTTP trace export, counts spans); its pid
    and base URL (the value for `OTEL_EXPORTER_OTLP_ENDPOINT`) once `/stats` answers."""
    port = free_port()
    command = [sys.executable, str(REPO / "bench" / "otlp_sink.py"), f"--port={port}"]
    process = procs.start(name, command, cpus=cpus)
    procs.wait_port(process, port, START_TIMEOUT)
    base = f"http://{HOST}:{port}"
    wait_ok(f"{base}/stats")
    return process.pid, base


def sink_stats(base: str) -> dict[str, Any]:
    """What the OTLP sink at `base` has received so far (see bench/otlp_sink.py)."""
    answer = http_get(f"{base}/stats")
    if answer.status != 200:
        raise RuntimeError(f"the OTLP sink answered {answer.status} to /stats")
    stats: dict[str, Any] = json.loads(answer.body)
    return stats


def start_nginx(
    procs: Processes,
    name: str,
    *,
    upstream_port: int,
    paths: list[str],
    workers: int,
    cpus: str | None,
) -> tuple[int, str]:
    """nginx proxy_cache for `paths` in front of the simulator; its master's pid and base
    URL once every path is a cache HIT."""
    port = free_port()
    workdir = procs.workdir / name
    text = nginx.config_text(
        workdir, port=port, upstream_port=upstream_port, paths=paths, workers=workers,
        api_key=API_KEY, secret=API_SECRET,
    )  # fmt: skip
    nginx.write_config(workdir, text)
    nginx.check_config(workdir)
    process = procs.start(name, nginx.command(workdir), cpus=cpus)
    procs.wait_port(process, port, START_TIMEOUT)
    base = f"http://{HOST}:{port}"
    for path in paths:
        statuses = [http_get(base + path) for _ in range(2)]
        if (
            any(a.status != 200 for a in statuses)
            or statuses[1].headers.get("x-cache-status") != "HIT"
        ):
            raise RuntimeError(
                f"nginx did not cache {path}: {[(a.status, a.body[:200]) for a in statuses]}"
            )
    return process.pid, base


def cache_lookups(base: str, route: str) -> Counter[str]:
    """`gateway_cache_lookups_total` of `route` by result, from the gateway's /metrics."""
    totals: Counter[str] = Counter()
    for family in metric_families(base):
        if family.name == "gateway_cache_lookups":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("route") == route:
                    totals[sample.labels["result"]] += int(sample.value)
    return totals


def counter_by_label(base: str, family_name: str, label: str) -> dict[str, float]:
    """A counter family's `_total` samples summed by one label (empty when absent)."""
    totals: dict[str, float] = {}
    for family in metric_families(base):
        if family.name == family_name:
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    value = sample.labels.get(label, "")
                    totals[value] = totals.get(value, 0.0) + sample.value
    return totals


def metric_families(base: str) -> list[Metric]:
    answer = http_get(f"{base}/metrics")
    if answer.status != 200:
        raise RuntimeError(f"/metrics answered {answer.status}")
    return list(text_string_to_metric_families(answer.body.decode()))
