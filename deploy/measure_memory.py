"""Measure the resident memory of one `python -m gateway` process, for the pod's resources.

    .venv/bin/python deploy/measure_memory.py [--sites 500 --connectors 200] [--redis]

Starts, all on 127.0.0.1 and each in its own process, the ChargePilot simulator serving
`--sites` sites of `--connectors` connectors, optionally a `redis-server` (`--redis`: the
gateway then runs as in Kubernetes, with `REDIS_URL`), and the gateway with its default
settings, then runs these phases and reads from /proc the gateway's `VmRSS` (at the
phase's end), `VmHWM` (the peak RSS since the phase began: it is reset through
/proc/PID/clear_refs) and the CPU time it used in the phase:

    started   when the gateway listens (idle; the fleet refresher's first fetch of the
              fleet list is already under way)
    fill      the first fleet-wide `GET /connectors`: the cold fleet fill
    pages     every further `/connectors` page, once
    walks     every `/connectors` page and every `/sites/{id}`, `/sites/{id}/connectors`
              and `/sites/{id}/nodes`, `--passes` times with `--concurrency` clients: after
              a fleet fill with Redis the sites' entries live in Redis, and these bring them
              back into the process, as serving them (or the refresher's site refreshes)
              does
    refill    until the fleet refresher (GATEWAY_REFRESH_SHARE of GATEWAY_UPSTREAM_RPS, one
              list refresh per (sites + 1) slots: about (sites + 1) / 2.5 s with the
              defaults) has refreshed the fleet list again, now with the sites in the
              process: the fill every cycle repeats in production; `--refills N` waits
              for N of them (phases refill, refill_2, ...: a peak that grows from one to
              the next is a leak), `--refills 0` skips them

and prints one JSON object; `peak_rss_mib` is the highest VmHWM of all phases, `loadavg`
the machine's 1-minute load average at the end (a loaded machine starves the fill and
raises its peak: re-run an outlier).  Every process it starts it stops (SIGTERM, then
SIGKILL) on the way out.  Linux only (/proc).
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
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
KEY, SECRET = "measure-key", "measure-secret"
SITE_ROUTES = ("", "/connectors", "/nodes")
# Fleet refresher slots per second with the defaults: GATEWAY_REFRESH_SHARE (0.5) x
# GATEWAY_UPSTREAM_RPS (5).
DEFAULT_REFRESH_RATE = 2.5
# Seconds between looks at /metrics while waiting for a refill: rendering it costs the
# gateway CPU, which the phase's cpu_seconds would count.
POLL = 2.0


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> None:
    """Start `pid`'s VmHWM again from its current RSS (Linux >= 4.0; a no-op where refused)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


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


async def drive(
    port: int, pid: int, passes: int, concurrency: int, refills: int, refill_timeout: float
) -> dict[str, Any]:
    """Run the phases; each records VmRSS at its end and VmHWM, the peak since its start."""
    base = f"http://{HOST}:{port}"
    phases: dict[str, Any] = {"started": memory(pid)}
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def phase(name: str, work: Awaitable[Any]) -> Any:
            reset_peak(pid)
            began, cpu = time.monotonic(), cpu_seconds(pid)
            result = await work
            phases[name] = {**memory(pid), "seconds": round(time.monotonic() - began, 2),
                            "cpu_seconds": round(cpu_seconds(pid) - cpu, 2),
                            "list_refreshes": await list_refreshes(session, base)}  # fmt: skip
            return result

        page = await phase("fill", get_json(session, f"{base}/connectors?limit=1000"))
        pages = await phase("pages", connector_pages(session, base, page))
        sites = (await get_json(session, f"{base}/sites"))["data"]
        paths = [f"/sites/{site['id']}{route}" for site in sites for route in SITE_ROUTES]
        paths = (pages + paths) * passes
        await phase("walks", walk(session, base, paths, concurrency))
        phases["requests"] = len(paths)
        previous = "walks"
        for number in range(1, refills + 1):
            name = "refill" if number == 1 else f"refill_{number}"
            seen = phases[previous]["list_refreshes"]
            await phase(name, refilled(session, base, seen, refill_timeout))
            previous = name
    return phases


async def connector_pages(
    session: aiohttp.ClientSession, base: str, page: dict[str, Any]
) -> list[str]:
    """Every `/connectors` page after the first, fetched once; returns all their paths."""
    paths = ["/connectors?limit=1000"]
    while page["next_cursor"] is not None:
        paths.append(f"/connectors?limit=1000&cursor={page['next_cursor']}")
        page = await get_json(session, base + paths[-1])
    return paths


async def walk(
    session: aiohttp.ClientSession, base: str, paths: list[str], concurrency: int
) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)

    async def client() -> None:
        while not queue.empty():
            await get_json(session, base + queue.get_nowait())

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def refilled(session: aiohttp.ClientSession, base: str, seen: float, limit: float) -> None:
    """Until the fleet refresher has refreshed the fleet list once more than `seen`."""
    try:
        async with asyncio.timeout(limit):
            while True:  # polled: the count is another process's, over HTTP
                if await list_refreshes(session, base) > seen:
                    return
                await asyncio.sleep(POLL)
    except TimeoutError:
        raise SystemExit(f"no fleet list refresh in {limit:.0f} s (--refill-timeout)") from None


async def list_refreshes(session: aiohttp.ClientSession, base: str) -> float:
    """The refresher's successful fleet-list refreshes so far (`/metrics`)."""
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "gateway_fleet_refreshes"
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels.get("target") == "list"
        and sample.labels.get("outcome") == "ok"
    )


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
    parser.add_argument(
        "--refills",
        type=int,
        default=1,
        help="fleet list refreshes to measure after the walks (0: none)",
    )
    parser.add_argument("--refill-timeout", type=float, default=None,
                        help="seconds to wait for each (default: twice the refresher's cycle "
                             "with the default settings, plus 120)")  # fmt: skip
    args = parser.parse_args()
    if args.refill_timeout is None:
        args.refill_timeout = 2 * (args.sites + 1) / DEFAULT_REFRESH_RATE + 120
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
        phases = asyncio.run(
            drive(
                gateway_port, pid, args.passes, args.concurrency, args.refills, args.refill_timeout
            )
        )
    peak = max(value["VmHWM"] for value in phases.values() if isinstance(value, dict))
    result = {"sites": args.sites, "connectors_per_site": args.connectors,
              "cache": "redis" if args.redis else "embedded", **phases,
              "peak_rss_mib": peak, "loadavg": os.getloadavg()[0]}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
