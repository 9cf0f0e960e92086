"""Benchmark: what structured logging and metrics cost on the cache-hit path.

    python bench/hit_path_bench.py [--requests 20000 --concurrency 32 --rounds 3]
    python bench/hit_path_bench.py --client wrk --seconds 5   # wrk as the client
    python bench/hit_path_bench.py --quick --json             # smoke run, machine-readable

One gateway (embedded cache) is warmed with `GET /sites/site-0001`, then that same cache hit
is driven in three configurations, run in rotation round after round (A B C, A B C, ...) so
drift in machine load hits all three alike:

- A `logs_on`:  `gateway.logs.configure("INFO", stream=<file>)`, one JSON access line each;
- B `logs_off`: `configure("WARNING", ...)`, access lines filtered out;
- C `metrics_off`: as B, against a second gateway app whose Prometheus metric objects are
  no-ops, so B/C is what the metrics cost.

Reported: the median throughput of each, the ratios A/B (logging) and C/B (metrics removed),
and the per-request cost in microseconds, 1/rps_A - 1/rps_B (likewise B vs C). By default
the client is aiohttp in this same process (counts bounded): its CPU is in every request's
time, which dilutes the ratios but not the per-request cost difference. `--client wrk`
drives the gateway from wrk (one thread) instead, for `--seconds` per run, so the ratios are
the gateway's own. Isolated figures (a tight loop of the one access-log call, and of the
three metric updates a hit makes) are printed alongside as a cross-check.
Everything binds 127.0.0.1; the log file is a temporary file removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp
from common import API_KEY, API_SECRET, percentile_ms, serve
from inprocess import gateway_settings
from prometheus_client.metrics import MetricWrapperBase

from gateway import logs
from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.simulator import SimulatorConfig, create_simulator_app

PATH = "/sites/site-0001"
ROUTE = "/sites/{id}"
REQUEST_TIMEOUT = 30.0
ISOLATED_CALLS = 20_000
CONFIGS = ("logs_on", "logs_off", "metrics_off")
_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_TOTAL = re.compile(r"(\d+) requests in")
_WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    config: str
    requests: int
    errors: int  # aiohttp: not a 200 cache hit; wrk: non-2xx/3xx answers and socket errors
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float


class NullMetric:
    """Stands in for a Prometheus metric: accepts every update and records nothing."""

    def labels(self, *values: str, **labels: str) -> NullMetric:
        return self

    def inc(self, amount: float = 1) -> None:
        return None

    def dec(self, amount: float = 1) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def observe(self, value: float) -> None:
        return None


def null_metrics() -> Metrics:
    """A `Metrics` whose every metric is a no-op (its `/metrics` would render nothing)."""
    metrics = Metrics()
    for name, value in list(vars(metrics).items()):
        if isinstance(value, MetricWrapperBase):
            setattr(metrics, name, NullMetric())
    return metrics


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per run (aiohttp client)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="rotations of A B C")
    parser.add_argument("--client", choices=("aiohttp", "wrk"), default="aiohttp")
    parser.add_argument("--seconds", type=float, default=5.0, help="per run (wrk client)")
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds for everything")
    parser.add_argument("--quick", action="store_true", help="2000 requests, 16 clients, 2 rounds")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.concurrency, args.rounds, args.seconds = 2000, 16, 2, 1.0
    if args.requests < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--requests, --concurrency and --rounds must be >= 1")
    if args.seconds <= 0 or args.time_cap <= 0 or args.deadline <= 0:
        parser.error("--seconds, --time-cap and --deadline must be > 0")
    if args.client == "wrk" and shutil.which("wrk") is None:
        parser.error("--client wrk: wrk is not installed (apt-get install wrk)")
    return args


def set_logging(config: str, stream: IO[str]) -> None:
    logs.configure("INFO" if config == "logs_on" else "WARNING", stream=stream)


async def aiohttp_load(
    session: aiohttp.ClientSession, url: str, config: str, args: argparse.Namespace
) -> Run:
    latencies: list[float] = []
    counters = {"issued": 0, "errors": 0}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    started = time.perf_counter()
    stop_at = started + args.time_cap

    async def worker() -> None:
        while counters["issued"] < args.requests and time.perf_counter() < stop_at:
            counters["issued"] += 1
            sent = time.perf_counter()
            try:
                async with session.get(url, timeout=timeout) as response:
                    await response.read()
                    ok = response.status == 200 and "; hit;" in response.headers["Cache-Status"]
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append(time.perf_counter() - sent)
            counters["errors"] += 0 if ok else 1

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return Run(
        config=config,
        requests=len(latencies),
        errors=counters["errors"],
        seconds=round(seconds, 3),
        rps=round(len(latencies) / seconds, 1),
        p50_ms=percentile_ms(latencies, 0.50),
        p99_ms=percentile_ms(latencies, 0.99),
    )


async def wrk_load(url: str, config: str, args: argparse.Namespace) -> Run:
    command = ["wrk", "-t1", f"-c{args.concurrency}", f"-d{args.seconds:g}s", "--latency", url]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), args.seconds + 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode()
    rps, total = _WRK_RPS.search(text), _WRK_TOTAL.search(text)
    if process.returncode != 0 or rps is None or total is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {text}")
    latency = {p: float(v) * _UNIT[unit] for p, v, unit in _WRK_LATENCY.findall(text)}
    errors = _WRK_ERRORS.search(text)
    socket_errors = _WRK_SOCKET_ERRORS.search(text)
    return Run(
        config=config,
        requests=int(total.group(1)),
        errors=(int(errors.group(1)) if errors else 0)
        + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0),
        seconds=args.seconds,
        rps=float(rps.group(1)),
        p50_ms=round(latency.get("50", 0.0), 3),
        p99_ms=round(latency.get("99", 0.0), 3),
    )


def isolated_costs(stream: IO[str], metrics: Metrics) -> dict[str, float]:
    """Microseconds per call of the access-log line (on minus off) and of a hit's metrics."""
    access_log = logging.getLogger("gateway.access")
    extra = {"route": ROUTE, "method": "GET", "status": 200, "duration_ms": 0.3,
             "client": "anonymous", "cache": "hit", "error": None}  # fmt: skip

    def timed_logging(config: str) -> float:
        set_logging(config, stream)
        started = time.perf_counter()
        for _ in range(ISOLATED_CALLS):
            access_log.info("request", extra=extra)
        return (time.perf_counter() - started) / ISOLATED_CALLS

    log_on, log_off = timed_logging("logs_on"), timed_logging("logs_off")
    started = time.perf_counter()
    for _ in range(ISOLATED_CALLS):
        metrics.http_requests.labels(ROUTE, "GET", "200").inc()
        metrics.http_duration.labels(ROUTE).observe(0.0003)
        metrics.cache_lookups.labels(ROUTE, "hit").inc()
    metric_cost = (time.perf_counter() - started) / ISOLATED_CALLS
    return {
        "access_line_us": round((log_on - log_off) * 1e6, 2),
        "hit_metrics_us": round(metric_cost * 1e6, 2),
    }


def summarize(runs: list[Run]) -> dict[str, Any]:
    median = {c: statistics.median(r.rps for r in runs if r.config == c) for c in CONFIGS}

    def cost_us(slower: str, faster: str) -> float:
        return round((1 / median[slower] - 1 / median[faster]) * 1e6, 2)

    return {
        "median_rps": {config: round(value, 1) for config, value in median.items()},
        "logging_ratio": round(median["logs_on"] / median["logs_off"], 4),
        "logging_cost_us_per_request": cost_us("logs_on", "logs_off"),
        "metrics_off_ratio": round(median["metrics_off"] / median["logs_off"], 4),
        "metrics_cost_us_per_request": cost_us("logs_off", "metrics_off"),
    }


async def run(args: argparse.Namespace, log_path: Path) -> dict[str, Any]:
    simulator = create_simulator_app(SimulatorConfig(api_key=API_KEY, api_secret=API_SECRET))
    runs: list[Run] = []
    with log_path.open("a", encoding="utf-8") as stream:
        set_logging("logs_off", stream)
        async with (
            serve(simulator) as simulator_url,
            serve(create_app(gateway_settings(simulator_url))) as gateway,
            serve(create_app(gateway_settings(simulator_url), metrics=null_metrics())) as bare,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as s,
        ):
            url = {
                "logs_on": gateway + PATH,
                "logs_off": gateway + PATH,
                "metrics_off": bare + PATH,
            }
            warmup = argparse.Namespace(**{**vars(args), "requests": 2 * args.concurrency + 500})
            for target in (gateway, bare):  # the first request fills, the rest warm the path
                await aiohttp_load(s, target + PATH, "warmup", warmup)
            lines = {"before": 0, "written": 0, "requests": 0}
            for _ in range(args.rounds):
                for config in CONFIGS:
                    set_logging(config, stream)
                    stream.flush()
                    size_before = log_path.stat().st_size
                    if args.client == "wrk":
                        result = await wrk_load(url[config], config, args)
                    else:
                        result = await aiohttp_load(s, url[config], config, args)
                    stream.flush()
                    if config == "logs_on":
                        lines["written"] += log_path.stat().st_size - size_before
                        lines["requests"] += result.requests
                    runs.append(result)
            set_logging("logs_off", stream)
        isolated = isolated_costs(stream, Metrics())
        logs.configure("WARNING", stream=sys.stderr)  # the file is about to close
    bytes_per_line = lines["written"] / max(1, lines["requests"])
    return {
        "path": PATH,
        "client": args.client,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "requests_per_run": args.requests if args.client == "aiohttp" else None,
        "seconds_per_run": args.seconds if args.client == "wrk" else None,
        "runs": [dataclasses.asdict(r) for r in runs],
        "errors": sum(r.errors for r in runs),
        "log_bytes_per_request": round(bytes_per_line, 1),
        **summarize(runs),
        "isolated": isolated,
    }


def table(result: dict[str, Any]) -> str:
    client = (
        f"{result['requests_per_run']} requests per run"
        if result["client"] == "aiohttp"
        else f"{result['seconds_per_run']:g} s per run"
    )
    lines = [
        f"cache hits of GET {result['path']}: client {result['client']}, concurrency "
        f"{result['concurrency']}, {client}, {result['rounds']} rounds of A B C",
        "",
        f"{'round':>5}  {'config':<12}{'requests':>9}{'errors':>7}{'req/s':>10}"
        f"{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for index, run in enumerate(result["runs"]):
        lines.append(
            f"{index // len(CONFIGS) + 1:>5}  {run['config']:<12}{run['requests']:>9}"
            f"{run['errors']:>7}{run['rps']:>10.1f}{run['p50_ms']:>9.2f}{run['p99_ms']:>9.2f}"
        )
    median = result["median_rps"]
    isolated = result["isolated"]
    lines += [
        "",
        "median req/s: " + ", ".join(f"{c} {median[c]:.1f}" for c in CONFIGS),
        f"logging:  logs_on / logs_off = {result['logging_ratio']:.3f}, "
        f"+{result['logging_cost_us_per_request']:.1f} us per request "
        f"({result['log_bytes_per_request']:.0f} log bytes per request)",
        f"metrics:  metrics_off / logs_off = {result['metrics_off_ratio']:.3f}, "
        f"+{result['metrics_cost_us_per_request']:.1f} us per request",
        f"isolated: one access line +{isolated['access_line_us']:.1f} us, "
        f"a hit's three metric updates {isolated['hit_metrics_us']:.1f} us",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with (
        tempfile.TemporaryDirectory(prefix="hit-path-bench-") as directory,
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        log_path = Path(directory) / "gateway.log"
        result = runner.run(asyncio.wait_for(run(args, log_path), args.deadline))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
