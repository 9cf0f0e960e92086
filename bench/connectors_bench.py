"""Benchmark: the fleet-wide connector list against single-site reads, all on loopback.

    python bench/connectors_bench.py [--sites 500 --connectors 200 --requests N
                                      --concurrency C --redis-url redis://127.0.0.1:6379/0]
    python bench/connectors_bench.py --quick --json     # smoke run, machine-readable

What it measures, in one process that runs the gateway app and the HTTP client:

1. the first fill: a cold `GET /connectors?limit=1000`, which makes the gateway fetch the
   whole fleet, normalize and flatten it and write every cache entry. Timed once plainly
   (with the growth of peak RSS, `ru_maxrss`), then once more after `POST /admin/purge`
   under tracemalloc for the peak of Python allocations (tracing slows it down, so that
   second time is reported separately);
2. cache-hit throughput and latency of `GET /connectors?limit=1000` walking every page of
   the fleet (each request names a different cursor) versus `GET /sites/{id}` cycling over
   every site, with the same client session, concurrency, request count and time cap;
   and their ratio `connectors_page_rps / site_rps`.

The simulator serves `build_fleet(SITES, CONNECTORS)` (`python -m gateway.simulator
--sites ... --connectors-per-site ...` builds exactly that) from a child process, so the
gateway's time and memory are not mixed with the simulator's; `--inline-simulator` runs it
in this process instead. The client shares the gateway's event loop, so absolute numbers
include client overhead; the ratio is the figure to compare between runs. Everything binds
127.0.0.1, every phase has a time cap, and the child is stopped on the way out.
Needs the package installed (`pip install -e .`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from common import (
    API_KEY,
    API_SECRET,
    HOST,
    free_port,
    percentile_ms,
    serve,
)
from inprocess import gateway_settings

from gateway.app import create_app
from gateway.settings import Secret
from gateway.simulator import SimulatorConfig, build_fleet, create_simulator_app

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
ADMIN_TOKEN = "bench-admin-token"
PAGE_LIMIT = 1000
SIMULATOR_START_TIMEOUT = 120.0
FILL_TIMEOUT = 300.0
REQUEST_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Load:
    requests: int
    errors: int  # answers that were not a 200 cache hit, failed connections included
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mib_per_s: float


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--connectors", type=int, default=200, help="connectors per site")
    parser.add_argument("--requests", type=int, default=2000, help="requests per endpoint")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per endpoint")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds for everything")
    parser.add_argument("--redis-url", help="loopback Redis instead of the embedded cache")
    parser.add_argument("--inline-simulator", action="store_true")
    parser.add_argument("--quick", action="store_true", help="50 sites x 20, 200 requests")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.sites, args.connectors, args.requests = 50, 20, 200
    if args.sites < 1 or args.connectors < 1 or args.requests < 1 or args.concurrency < 1:
        parser.error("--sites, --connectors, --requests and --concurrency must be >= 1")
    if args.time_cap <= 0 or args.deadline <= 0:
        parser.error("--time-cap and --deadline must be > 0")
    if args.redis_url is not None:
        parts = urlsplit(args.redis_url)
        if parts.scheme not in ("redis", "unix") or (
            parts.scheme == "redis" and parts.hostname not in LOOPBACK
        ):
            parser.error("--redis-url must be redis://127.0.0.1... or unix://... (loopback only)")
    return args


def max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


@contextlib.asynccontextmanager
async def child_simulator(sites: int, connectors: int) -> AsyncIterator[str]:
    """`python -m gateway.simulator` serving build_fleet(sites, connectors); its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "gateway.simulator", "--host", HOST, "--port", str(port),
               "--key", API_KEY, "--secret", API_SECRET,
               "--sites", str(sites), "--connectors-per-site", str(connectors)]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), SIMULATOR_START_TIMEOUT)
        if not line:
            raise RuntimeError(f"the simulator exited early (status {await process.wait()})")
        yield f"http://{HOST}:{port}"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def simulator(args: argparse.Namespace) -> AsyncIterator[str]:
    if not args.inline_simulator:
        async with child_simulator(args.sites, args.connectors) as url:
            yield url
        return
    config = SimulatorConfig(api_key=API_KEY, api_secret=API_SECRET)
    fleet = build_fleet(args.sites, args.connectors)
    async with serve(create_simulator_app(config, sites=fleet)) as url:
        yield url


async def get_ok(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with session.get(url, **kwargs) as response:
        if response.status != 200:
            raise RuntimeError(f"GET {url} answered {response.status}: {await response.text()}")
        return await response.json(content_type=None)


async def timed_fill(session: aiohttp.ClientSession, gateway: str) -> float:
    started = time.perf_counter()
    url = f"{gateway}/connectors?limit={PAGE_LIMIT}"
    timeout = aiohttp.ClientTimeout(total=FILL_TIMEOUT)
    async with session.get(url, timeout=timeout) as response:
        await response.read()
        status = response.headers.get("Cache-Status", "")
        if response.status != 200 or "fwd=miss" not in status:
            raise RuntimeError(f"the first fill answered {response.status} ({status!r})")
    return time.perf_counter() - started


async def measure_fill(session: aiohttp.ClientSession, gateway: str) -> dict[str, float]:
    rss_before = max_rss_bytes()
    seconds = await timed_fill(session, gateway)
    rss_delta = max_rss_bytes() - rss_before
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with session.post(f"{gateway}/admin/purge", json={}, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"purge answered {response.status}: {await response.text()}")
    tracemalloc.start()
    try:
        traced_seconds = await timed_fill(session, gateway)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "seconds": round(seconds, 3),
        "rss_delta_bytes": rss_delta,
        "traced_seconds": round(traced_seconds, 3),
        "tracemalloc_peak_bytes": peak,
    }


async def page_paths(session: aiohttp.ClientSession, gateway: str) -> tuple[list[str], int]:
    """The path of every page of the fleet (walking `next_cursor`), and the connector count."""
    paths = [f"/connectors?limit={PAGE_LIMIT}"]
    total = 0
    while True:
        body = await get_ok(session, gateway + paths[-1])
        total += len(body["data"])
        if body["next_cursor"] is None:
            return paths, total
        paths.append(f"/connectors?limit={PAGE_LIMIT}&cursor={body['next_cursor']}")


async def load(
    session: aiohttp.ClientSession,
    gateway: str,
    paths: list[str],
    *,
    requests: int,
    concurrency: int,
    time_cap: float,
) -> Load:
    """`requests` GETs cycling over `paths` from `concurrency` workers, or until the cap."""
    latencies: list[float] = []
    counters = {"issued": 0, "errors": 0, "bytes": 0}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    started = time.perf_counter()
    stop_at = started + time_cap

    async def worker() -> None:
        while counters["issued"] < requests and time.perf_counter() < stop_at:
            path = paths[counters["issued"] % len(paths)]
            counters["issued"] += 1
            sent = time.perf_counter()
            try:
                async with session.get(gateway + path, timeout=timeout) as response:
                    body = await response.read()
                    ok = response.status == 200 and "; hit;" in response.headers["Cache-Status"]
            except (aiohttp.ClientError, TimeoutError):
                ok, body = False, b""
            latencies.append(time.perf_counter() - sent)
            counters["bytes"] += len(body)
            counters["errors"] += 0 if ok else 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()

    return Load(
        requests=len(latencies),
        errors=counters["errors"],
        seconds=round(seconds, 3),
        rps=round(len(latencies) / seconds, 1),
        p50_ms=percentile_ms(latencies, 0.50),
        p99_ms=percentile_ms(latencies, 0.99),
        mib_per_s=round(counters["bytes"] / MIB / seconds, 1),
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with simulator(args) as simulator_url:
        settings = gateway_settings(
            simulator_url,
            redis_url=args.redis_url,
            upstream_timeout=FILL_TIMEOUT / 2,
            upstream_rps=100.0,
            admin_token=Secret(ADMIN_TOKEN),
        )
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with (
            serve(create_app(settings)) as gateway,
            aiohttp.ClientSession(connector=connector) as session,
        ):
            if args.redis_url:  # start cold even if an earlier run left entries behind
                headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                async with session.post(f"{gateway}/admin/purge", json={}, headers=headers):
                    pass
            fill = await measure_fill(session, gateway)
            pages, connectors_total = await page_paths(session, gateway)
            site_ids = [site["id"] for site in (await get_ok(session, f"{gateway}/sites"))["data"]]
            site_paths = [f"/sites/{site_id}" for site_id in site_ids]
            options = {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "time_cap": args.time_cap,
            }
            warmup = {**options, "requests": min(args.requests, 2 * args.concurrency)}
            await load(session, gateway, pages, **warmup)
            await load(session, gateway, site_paths, **warmup)
            connectors_page = await load(session, gateway, pages, **options)
            site = await load(session, gateway, site_paths, **options)
            stats = await get_ok(session, f"{simulator_url}/_sim/stats")
    return {
        "sites": len(site_ids),
        "connectors_per_site": args.connectors,
        "connectors_total": connectors_total,
        "pages": len(pages),
        "page_limit": PAGE_LIMIT,
        "cache": "redis" if args.redis_url else "memory",
        "concurrency": args.concurrency,
        "upstream_calls": stats["total"],
        "fill": fill,
        "connectors_page": asdict(connectors_page),
        "site": asdict(site),
        "ratio": round(connectors_page.rps / site.rps, 4) if site.rps else 0.0,
    }


def table(result: dict[str, Any]) -> str:
    fill = result["fill"]
    lines = [
        f"fleet: {result['sites']} sites x {result['connectors_per_site']} connectors = "
        f"{result['connectors_total']} connectors ({result['pages']} pages of "
        f"{result['page_limit']}), cache={result['cache']}, concurrency="
        f"{result['concurrency']}, upstream calls={result['upstream_calls']}",
        f"first fill (cold GET /connectors?limit={result['page_limit']}): "
        f"{fill['seconds']:.2f} s, peak RSS +{fill['rss_delta_bytes'] / MIB:.1f} MiB; "
        f"under tracemalloc {fill['traced_seconds']:.2f} s, "
        f"traced peak {fill['tracemalloc_peak_bytes'] / MIB:.1f} MiB",
        "",
        f"{'endpoint (cache hits)':<34}{'requests':>9}{'errors':>7}{'req/s':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'MiB/s':>8}",
    ]
    for name, key in (
        (f"GET /connectors?limit={result['page_limit']}", "connectors_page"),
        ("GET /sites/{id}", "site"),
    ):
        row = result[key]
        lines.append(
            f"{name:<34}{row['requests']:>9}{row['errors']:>7}{row['rps']:>9.1f}"
            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['mib_per_s']:>8.1f}"
        )
    lines.append(f"\nconnectors_page_rps / site_rps = {result['ratio']:.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(run(args), args.deadline)

    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(bounded())
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
