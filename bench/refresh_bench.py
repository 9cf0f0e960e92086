"""Benchmark: the fleet refresher keeping 500 sites fresh at 5 upstream calls/s, and the
change feed's diff.

    python bench/refresh_bench.py [--sites 500 --connectors 20 --rps 10 --share 0.5
                                   --cycles 1.2 --out bench/RESULTS.md]
    python bench/refresh_bench.py --quick --json      # smoke run, machine-readable

Real processes on loopback: `redis-server`, the simulator (`--sites N
--connectors-per-site C`) and `python -m gateway` with `REDIS_URL`, `GATEWAY_UPSTREAM_RPS`
and `GATEWAY_REFRESH_SHARE` set, so its refresher spends `rps x share` calls a second
(default 10 x 0.5 = 5).  Nothing else asks the gateway for data.  After the first cycle
(the first list fill and a full round of sites), it measures over `--cycles` periods:

- refresh lag: `gateway_fleet_refresh_lag_seconds` scraped every `SCRAPE` s (its maximum,
  against `gateway_fleet_refresh_period_seconds`, the expected period);
- upstream calls/s, counted by the simulator (`/_sim/stats`), against the share;
- CPU per refresh: the gateway's and redis-server's CPU seconds over the window divided by
  the refreshes made (`gateway_fleet_refreshes_total`: sites and one list per cycle);
- change latency: one site changed every `--change-every` s (`POST /_sim/mutate`, kind
  `limit`, each time another site); from the change to its `site.updated` on an open
  `/changes` stream;

then, in this process, the diff: for every site of the same fleet, normalized, one fuse
limit changed and one connector added, the time of what the recorder does per changed
site (read the previous body, `diff_sites`, write the changes), and its size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from common import percentile, percentile_ms
from procs import HOST, Processes, cpu_seconds, stop_on_signals
from services import START_TIMEOUT, free_port, http_get, start_gateway, start_simulator

from gateway.diff import diff_sites
from gateway.jsonutil import dumps, loads
from gateway.normalize import normalize_site
from gateway.simulator import build_fleet, iter_nodes

SCRAPE = 2.0
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--connectors", type=int, default=20, help="connectors per site")
    parser.add_argument("--rps", type=float, default=10.0, help="GATEWAY_UPSTREAM_RPS")
    parser.add_argument("--share", type=float, default=0.5, help="GATEWAY_REFRESH_SHARE")
    parser.add_argument("--cycles", type=float, default=1.2, help="periods measured")
    parser.add_argument("--change-every", type=float, default=10.0, help="seconds")
    parser.add_argument("--out", type=Path, help="append the results to this markdown file")
    parser.add_argument("--label", default="fleet refresher and change feed")
    parser.add_argument("--quick", action="store_true", help="40 sites at 40 x 0.5 calls/s")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.sites, args.connectors, args.rps, args.cycles, args.change_every = 40, 5, 40, 2, 1
    if args.sites < 1 or args.connectors < 1 or args.rps <= 0 or not 0 < args.share <= 1:
        parser.error("--sites and --connectors >= 1, --rps > 0, 0 < --share <= 1")
    return args


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(base: str) -> str:
    return http_get(f"{base}/metrics").body.decode()


def upstream_calls(sim: str) -> int:
    return int(json.loads(http_get(f"{sim}/_sim/stats").body)["total"])


async def watch(base: str, seen: dict[str, float]) -> None:
    """Record when each site's site.updated event arrives on an open stream (until
    cancelled)."""
    headers = {"Accept": "text/event-stream"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{base}/changes", headers=headers) as stream,
    ):
        while True:
            line = await stream.content.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                seen.setdefault(event["site_id"], time.monotonic())


async def change_sites(
    sim: str, sites: list[str], every: float, changed: dict[str, float], stop: asyncio.Event
) -> None:
    """Change one fuse limit of a different site every `every` seconds (a site changed
    twice could change back between two refreshes: nothing to report then)."""
    async with aiohttp.ClientSession() as session:
        for site_id in sites:
            if stop.is_set():
                return
            change = {"kind": "limit", "site_id": site_id}
            async with session.post(f"{sim}/_sim/mutate", json=change) as answer:
                assert answer.status == 200, await answer.text()
            changed[site_id] = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


async def measure(
    args: argparse.Namespace, base: str, sim: str, pids: dict[str, int]
) -> dict[str, Any]:
    # Warm-up: the first list fill and one whole cycle after it.
    expected = (args.sites + 1) / (args.rps * args.share)
    started = time.monotonic()
    while metric(scrape(base), "gateway_fleet_refreshes_total") < args.sites + 1:
        if time.monotonic() - started > 3 * expected + 60:
            raise RuntimeError("the refresher did not complete a cycle")
        await asyncio.sleep(0.5)
    period = metric(scrape(base), "gateway_fleet_refresh_period_seconds")
    stop = asyncio.Event()
    seen: dict[str, float] = {}
    changed: dict[str, float] = {}
    watcher = asyncio.create_task(watch(base, seen))
    await asyncio.sleep(0.5)
    sites = [site["id"] for site in json.loads(http_get(f"{base}/sites").body)["data"]]
    random.Random(1).shuffle(sites)
    changer = asyncio.create_task(change_sites(sim, sites, args.change_every, changed, stop))
    text = scrape(base)
    begin = (time.monotonic(), upstream_calls(sim),
             metric(text, "gateway_fleet_refreshes_total"),
             {name: cpu_seconds(pid) for name, pid in pids.items()})  # fmt: skip
    lags = []
    window = args.cycles * period
    while time.monotonic() - begin[0] < window:
        await asyncio.sleep(SCRAPE)
        lags.append(metric(scrape(base), "gateway_fleet_refresh_lag_seconds"))
    text = scrape(base)
    end = (time.monotonic(), upstream_calls(sim), metric(text, "gateway_fleet_refreshes_total"),
           {name: cpu_seconds(pid) for name, pid in pids.items()})  # fmt: skip
    stop.set()
    await changer
    # Every change is found within about a period; give the last ones up to two.
    deadline = time.monotonic() + 2 * period + 10
    while not changed.keys() <= seen.keys() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    watcher.cancel()
    await asyncio.gather(watcher, changer, return_exceptions=True)
    seconds = end[0] - begin[0]
    refreshes = end[2] - begin[2]
    latencies = sorted(seen[s] - at for s, at in changed.items() if s in seen)
    return {
        "period_s": round(period, 2),
        "window_s": round(seconds, 1),
        "lag_max_s": round(max(lags), 1),
        "lag_mean_s": round(statistics.fmean(lags), 1),
        "upstream_calls_per_s": round((end[1] - begin[1]) / seconds, 2),
        "refreshes_per_s": round(refreshes / seconds, 2),
        "cpu_ms_per_refresh": {
            name: round((end[3][name] - begin[3][name]) * 1000 / max(refreshes, 1), 2)
            for name in pids
        },
        "changes": len(changed),
        "changes_seen": len(latencies),
        "change_latency_p50_s": round(percentile_ms(latencies, 0.5) / 1000, 1),
        "change_latency_max_s": round(latencies[-1], 1) if latencies else 0.0,
    }


def diff_costs(sites: int, connectors: int) -> dict[str, Any]:
    """What the recorder does per changed site, timed over every site of the fleet."""
    times, sizes, counts = [], [], []
    for raw in build_fleet(sites, connectors, seed=1):
        old = normalize_site(raw)
        new = copy.deepcopy(raw)
        nodes = [n for n in iter_nodes(new) if n["parameters"].get("limit") is not None]
        nodes[len(nodes) // 2]["parameters"]["limit"] = 1234
        station = next(n for n in iter_nodes(new) if n["parameters"].get("connectors"))
        station["parameters"]["connectors"].append({"id": f"{raw['id']}-new", "name": "new"})
        previous, current = dumps(old), normalize_site(new)
        started = time.perf_counter()
        diff = diff_sites(loads(previous), current)
        dumps(diff.changes)
        times.append(time.perf_counter() - started)
        sizes.append(len(previous))
        counts.append(len(diff.changes))
    times.sort()
    return {
        "sites": len(times),
        "site_bytes_mean": round(statistics.fmean(sizes)),
        "changes_per_site": sorted(set(counts)),
        "p50_us": round(percentile(times, 0.5) * 1e6, 1),
        "p99_us": round(percentile(times, 0.99) * 1e6, 1),
        "max_us": round(times[-1] * 1e6, 1),
    }


def start_redis(procs: Processes) -> tuple[str, int]:
    """A throwaway redis-server: its URL and pid (its CPU is part of a refresh's cost)."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "",
               "--appendonly", "no", "--dir", str(procs.workdir),
               "--protected-mode", "no"]  # fmt: skip
    process = procs.start("redis", command)
    procs.wait_port(process, port, START_TIMEOUT)
    return f"redis://{HOST}:{port}/0", process.pid


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir, Processes(Path(workdir)) as procs:
        redis_url, redis_pid = start_redis(procs)
        sim_port = start_simulator(procs, "simulator", sites=args.sites,
                                   connectors=args.connectors)  # fmt: skip
        settings = {"REDIS_URL": redis_url, "GATEWAY_UPSTREAM_RPS": f"{args.rps:g}",
                    "GATEWAY_REFRESH_SHARE": f"{args.share:g}", "GATEWAY_SHUTDOWN_DELAY": "0",
                    "GATEWAY_LOG_LEVEL": "WARNING"}  # fmt: skip
        gateway, base = start_gateway(procs, "gateway", upstream_port=sim_port, settings=settings)
        sim = f"http://127.0.0.1:{sim_port}"
        pids = {"gateway": gateway.pid, "redis": redis_pid}
        refresh = asyncio.run(measure(args, base, sim, pids))
    return {
        "sites": args.sites,
        "connectors_per_site": args.connectors,
        "rps": args.rps,
        "share": args.share,
        "refresher_calls_per_s": args.rps * args.share,
        "refresh": refresh,
        "diff": diff_costs(args.sites, args.connectors),
    }


def markdown(args: argparse.Namespace, result: dict[str, Any], seconds: float) -> str:
    r, d = result["refresh"], result["diff"]
    cpu = r["cpu_ms_per_refresh"]
    command = " ".join(["python", "bench/refresh_bench.py", *sys.argv[1:]])
    return f"""
## {args.label}

Run {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} with `{command}` ({seconds:.0f} s);
python {platform.python_version()}, {platform.machine()}.

{result["sites"]} sites x {result["connectors_per_site"]} connectors on Redis, `GATEWAY_UPSTREAM_RPS={result["rps"]:g}`,
`GATEWAY_REFRESH_SHARE={result["share"]:g}`: the refresher's {result["refresher_calls_per_s"]:g} calls/s, no client traffic.

| measure | value |
|---|---:|
| expected period (sites + list at the share) | {r["period_s"]} s |
| refresh lag, max / mean over {r["window_s"]} s | {r["lag_max_s"]} / {r["lag_mean_s"]} s |
| upstream calls/s (simulator's count) | {r["upstream_calls_per_s"]} |
| refreshes/s | {r["refreshes_per_s"]} |
| CPU per refresh: gateway / redis-server | {cpu["gateway"]} / {cpu["redis"]} ms |
| change to event on `/changes`: p50 / max ({r["changes_seen"]} of {r["changes"]} changes) | {r["change_latency_p50_s"]} / {r["change_latency_max_s"]} s |
| diff per changed site ({d["sites"]} sites, {d["site_bytes_mean"]:,} bytes each, {d["changes_per_site"]} changes): p50 / p99 / max | {d["p50_us"]} / {d["p99_us"]} / {d["max_us"]} µs |
"""  # noqa: E501


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    started = time.monotonic()
    result = run(args)
    seconds = time.monotonic() - started
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(markdown(args, result, seconds))
    if args.out is not None:
        with args.out.open("a", encoding="utf-8") as out:
            out.write(markdown(args, result, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
