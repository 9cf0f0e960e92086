"""Benchmark: a cold-start storm across two gateway instances, with and without shared Redis.

    python bench/storm_bench.py [--requests 10000 --concurrency 200 --latency 0.05 --rps R]
    python bench/storm_bench.py --quick --json     # smoke run, machine-readable

What it measures: N client requests (concurrency C) spread round-robin over TWO gateway
instances and over K distinct cache keys, all starting cold, against a simulator whose every
answer takes `--latency` seconds. The figure of merit is the number of upstream calls the
simulator logged, per 10,000 client requests, in three configurations:

- naive pass-through (computed, not run): one upstream call per client request, N;
- two instances without Redis (embedded caches; collapsing inside each process only):
  each instance fills every key once, instances x fills;
- two instances on one Redis (cross-replica locks): every fill happens once, fills.

Keys and fills: the keys are `/sites/{id}` and `/sites/{id}/connectors` for the 12 demo
sites, plus `/sites`. On a cold cache the known-id gate fetches the fleet list first
(`GET /sites`, the "fleet fill"), which stores every site and its views too: 25 keys need
one fill.

Everything runs in this process (simulator, both gateways, client) on 127.0.0.1, except
`redis-server`, which this script starts on a free port and stops on the way out. Client
throughput and latency include the client's own CPU on the same event loop, so compare them
between the two runs of one invocation, not with other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp
import redis
import redis.asyncio as aioredis
from common import API_KEY, API_SECRET, HOST, free_port, percentile_ms, serve
from inprocess import gateway_settings

from gateway import logs
from gateway.app import create_app
from gateway.app_keys import METRICS
from gateway.metrics import Metrics
from gateway.simulator import SIM_STATE, SimulatorConfig, create_simulator_app, demo_fleet

INSTANCES = 2
REQUEST_TIMEOUT = 30.0
REDIS_START_TIMEOUT = 10.0
PER_10K = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class StormResult:
    """One storm against one configuration."""

    upstream_calls: int
    upstream_per_10k: float
    expected_upstream_calls: int
    upstream_by_path: dict[str, int]
    requests: int
    errors: int  # answers other than 200, failed connections and timeouts included
    cache_status: dict[str, int]  # hit, miss (fetched), collapsed (joined a fetch), other
    redis_errors: dict[str, int]  # by operation, both instances together
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="simulator latency (s)")
    parser.add_argument("--rps", type=float, default=1000.0, help="GATEWAY_UPSTREAM_RPS")
    parser.add_argument("--time-cap", type=float, default=120.0, help="seconds per storm")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds for everything")
    parser.add_argument("--quick", action="store_true", help="500 requests, concurrency 50")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.concurrency = 500, 50
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be >= 1")
    if args.latency < 0 or args.rps <= 0 or args.time_cap <= 0 or args.deadline <= 0:
        parser.error("--latency must be >= 0; --rps, --time-cap and --deadline must be > 0")
    return args


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway `redis-server` on a free loopback port, no persistence; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="storm-bench-redis-") as directory:
        command = [binary, "--port", str(port), "--bind", HOST, "--save", "",
                   "--appendonly", "no", "--dir", directory, "--protected-mode", "no"]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.2)
            deadline = time.monotonic() + REDIS_START_TIMEOUT
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.02)
            client.close()
            yield f"redis://{HOST}:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def storm_paths(site_ids: list[str]) -> list[str]:
    """Every key the storm asks for; site keys first, `/sites` last (see the docstring)."""
    paths = [f"/sites/{site_id}" for site_id in site_ids]
    paths += [f"/sites/{site_id}/connectors" for site_id in site_ids]
    return [*paths, "/sites"]


def fill_of(path: str) -> str:
    """The upstream fetch that fills a key on a cold cache: the fleet fill, for every key
    (a site's miss waits for the known-id gate's list, which stores the site)."""
    return "fleet"


def classify(cache_status: str) -> str:
    if "; hit" in cache_status:
        return "hit"
    if "collapsed" in cache_status:
        return "collapsed"
    if "fwd=miss" in cache_status:
        return "miss"
    return "other"


def counter_by_label(metric: Any, label: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                totals[sample.labels[label]] += int(sample.value)
    return totals


async def storm(
    gateways: list[str], paths: list[str], *, requests: int, concurrency: int, time_cap: float
) -> dict[str, Any]:
    """`requests` GETs from `concurrency` workers; request i asks gateway i % G for key
    (i // G) % K, so the first G*K requests cover every key on every gateway."""
    targets = [gateway + path for path in paths for gateway in gateways]
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    counters = {"issued": 0, "errors": 0}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    started = time.perf_counter()
    stop_at = started + time_cap

    async def worker(session: aiohttp.ClientSession) -> None:
        while counters["issued"] < requests and time.perf_counter() < stop_at:
            url = targets[counters["issued"] % len(targets)]
            counters["issued"] += 1
            sent = time.perf_counter()
            try:
                async with session.get(url, timeout=timeout) as response:
                    await response.read()
                    ok = response.status == 200
                    statuses[classify(response.headers.get("Cache-Status", ""))] += 1
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append(time.perf_counter() - sent)
            counters["errors"] += 0 if ok else 1

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": counters["errors"],
        "cache_status": dict(sorted(statuses.items())),
        "seconds": round(seconds, 3),
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": percentile_ms(latencies, 0.50),
        "p99_ms": percentile_ms(latencies, 0.99),
    }


async def run_storm(
    args: argparse.Namespace, paths: list[str], redis_url: str | None, expected: int
) -> StormResult:
    """Fresh simulator, fresh (flushed) Redis, two fresh gateways; one cold storm."""
    if redis_url is not None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.flushall()
        finally:
            await client.aclose()
    config = SimulatorConfig(api_key=API_KEY, api_secret=API_SECRET, latency=args.latency)
    simulator_app = create_simulator_app(config)
    state = simulator_app[SIM_STATE]
    async with serve(simulator_app) as simulator_url, contextlib.AsyncExitStack() as stack:
        settings = gateway_settings(simulator_url, redis_url=redis_url, upstream_rps=args.rps)
        apps = [create_app(settings, metrics=Metrics()) for _ in range(INSTANCES)]
        gateways = [await stack.enter_async_context(serve(app)) for app in apps]
        load = await storm(
            gateways,
            paths,
            requests=args.requests,
            concurrency=args.concurrency,
            time_cap=args.time_cap,
        )
        redis_errors: Counter[str] = Counter()
        for app in apps:
            redis_errors.update(counter_by_label(app[METRICS].redis_errors, "operation"))
    calls = state.count()
    by_path = Counter(call.path.removeprefix("/rest/v1") for call in state.calls)
    return StormResult(
        upstream_calls=calls,
        upstream_per_10k=round(calls * PER_10K / max(1, load["requests"]), 2),
        expected_upstream_calls=expected,
        upstream_by_path=dict(sorted(by_path.items())),
        redis_errors=dict(sorted(redis_errors.items())),
        **load,
    )


async def run(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    site_ids = [str(site["id"]) for site in demo_fleet()]
    paths = storm_paths(site_ids)
    fills = len({fill_of(path) for path in paths})
    without_redis = await run_storm(args, paths, None, INSTANCES * fills)
    with_redis = await run_storm(args, paths, redis_url, fills)
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "instances": INSTANCES,
        "simulator_latency_s": args.latency,
        "upstream_rps": args.rps,
        "keys": paths,
        "distinct_keys": len(paths),
        "distinct_fills": fills,
        "naive": {"upstream_calls": args.requests, "upstream_per_10k": float(PER_10K)},
        "without_redis": dataclasses.asdict(without_redis),
        "with_redis": dataclasses.asdict(with_redis),
        "goal": {
            "upstream_calls": fills,
            "met": with_redis.upstream_calls == fills,
        },
        "upstream_ratio_redis_vs_no_redis": round(
            with_redis.upstream_calls / max(1, without_redis.upstream_calls), 4
        ),
        "rps_ratio_redis_vs_no_redis": round(with_redis.rps / max(1e-9, without_redis.rps), 4),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"cold storm: {result['requests']} requests, concurrency {result['concurrency']}, "
        f"{result['instances']} gateway instances, simulator latency "
        f"{result['simulator_latency_s'] * 1000:.0f} ms, upstream_rps {result['upstream_rps']:g}",
        f"{result['distinct_keys']} distinct keys ({len(result['keys']) - 1} site views + "
        f"/sites) = {result['distinct_fills']} distinct upstream fills",
        "",
        f"{'configuration':<28}{'upstream':>9}{'per 10k':>9}{'expected':>9}{'errors':>7}"
        f"{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}",
        f"{'naive pass-through':<28}{result['requests']:>9}{PER_10K:>9.0f}"
        f"{result['requests']:>9}{'-':>7}{'-':>9}{'-':>9}{'-':>9}",
    ]
    configurations = (
        ("2 instances, no Redis", "without_redis"),
        ("2 instances, one Redis", "with_redis"),
    )
    for name, key in configurations:
        row = result[key]
        lines.append(
            f"{name:<28}{row['upstream_calls']:>9}{row['upstream_per_10k']:>9.1f}"
            f"{row['expected_upstream_calls']:>9}{row['errors']:>7}{row['rps']:>9.1f}"
            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
        )
    goal = result["goal"]
    lines += [
        "",
        f"cache status, no Redis:   {result['without_redis']['cache_status']}",
        f"cache status, with Redis: {result['with_redis']['cache_status']}",
        f"redis errors (by operation) in the Redis storm: {result['with_redis']['redis_errors']}",
        f"goal (with Redis, upstream calls == distinct fills == {goal['upstream_calls']}): "
        + ("met" if goal["met"] else "NOT MET"),
        f"upstream calls, Redis / no Redis = {result['upstream_ratio_redis_vs_no_redis']:.3f}; "
        f"client req/s, Redis / no Redis = {result['rps_ratio_redis_vs_no_redis']:.3f}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The gateways' own log lines (a warning per instance about the embedded cache, access
    # lines) would drown the table; this benchmark is about upstream calls, not logging.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process logs
    logs.configure("WARNING", stream=devnull)

    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with redis_server() as redis_url, asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(asyncio.wait_for(run(args, redis_url), args.deadline))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0 if result["goal"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
