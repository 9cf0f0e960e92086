"""Cache hits, side by side: the gateway (1 and 2 workers), bare aiohttp serving the very
same bytes, and nginx proxy_cache in front of the same simulator.

Every row is one server configuration and one path, loaded with `Plan.connections`
keep-alive connections from one load-generator thread: an unmeasured warm-up run, then
`Plan.rounds` measured runs of which the row keeps the median by req/s (all are in JSON).
Single-process servers run on `Cpus.server` and the load generator on `Cpus.client`; with
two processes neither is pinned (both CPUs serve, and the load generator competes).
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass

from loadgen import Load, run_load
from model import SITE_PATH, Plan, Row
from procs import Processes, children_cpu_seconds, machine_busy_seconds, tree_cpu_seconds
from services import (
    MEASURING_ENV,
    cache_lookups,
    http_get,
    start_bare,
    start_gateway,
    start_nginx,
    start_simulator,
)

SITE_ROUTE = "/sites/{id}"
PAGE_ROUTE = "/connectors"
WORKER_COUNTS = (1, 2)
OTHERS_NOTE = 0.05  # say so when other processes took this share of the CPUs
LOADGEN_BOUND = 0.9  # wrk -t1 is one thread: near one CPU, it, not the server, is the limit


@dataclass(frozen=True, slots=True)
class Measured:
    load: Load  # the median run
    rounds: list[float]  # req/s of every run
    cpu_us: float  # server CPU per request, all runs
    others_share: float  # of all CPUs, used by processes other than server and load
    loadgen_cpu: float  # CPUs the load generator kept busy (1.0: one CPU, its ceiling)


def warm(url: str, plan: Plan, cpus: str | None, headers: dict[str, str] | None = None) -> None:
    """One unmeasured run: connections opened, caches filled, code paths warm."""
    if plan.warmup <= 0:
        return
    run_load(url, tool=plan.tool, connections=plan.connections, seconds=plan.warmup, cpus=cpus,
             headers=headers)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """One configuration of a rotated measurement: a URL, the headers every request
    carries, and the server processes whose CPU time it is charged."""

    url: str
    server_pids: list[int]
    headers: dict[str, str] | None = None


def measure(url: str, plan: Plan, cpus: str | None, server_pids: list[int]) -> Measured:
    """`plan.rounds` runs; the median run (by req/s), every run's req/s, the CPU time the
    server's processes spent per request, and the share of the machine's CPUs that other
    processes (neither the server nor the load generator) used meanwhile."""
    return measure_rotated([Target(url, server_pids)], plan, cpus)[0]


def measure_rotated(targets: list[Target], plan: Plan, cpus: str | None) -> list[Measured]:
    """`measure` for several configurations at once, their runs taken in turn (A B C, A B C,
    ...) so that drift on a shared machine spreads evenly over them: ratios between them are
    then fairer than between rows measured one after the other."""
    runs: list[list[Load]] = [[] for _ in targets]
    server, client, busy, elapsed = ([0.0] * len(targets) for _ in range(4))
    for _ in range(plan.rounds):
        for index, target in enumerate(targets):
            cpu, child = tree_cpu_seconds(target.server_pids), children_cpu_seconds()
            machine, started = machine_busy_seconds(), time.monotonic()
            runs[index].append(run_load(target.url, tool=plan.tool, connections=plan.connections,
                                        seconds=plan.seconds, cpus=cpus,
                                        headers=target.headers))  # fmt: skip
            server[index] += tree_cpu_seconds(target.server_pids) - cpu
            client[index] += children_cpu_seconds() - child
            busy[index] += machine_busy_seconds() - machine
            elapsed[index] += time.monotonic() - started
    capacity = os.cpu_count() or 1
    measured = []
    for index, loads in enumerate(runs):
        others = busy[index] - server[index] - client[index]
        median = statistics.median_low([run.rps for run in loads])
        measured.append(Measured(
            load=next(run for run in loads if run.rps == median),
            rounds=[run.rps for run in loads],
            cpu_us=round(server[index] * 1e6 / max(1, sum(run.requests for run in loads)), 1),
            others_share=round(max(0.0, others) / (elapsed[index] * capacity), 3),
            loadgen_cpu=round(client[index] / elapsed[index], 3),
        ))  # fmt: skip
    return measured


def hit_row(key: str, label: str, path: str, body: bytes, measured: Measured) -> Row:
    kind, workers, _ = key.split("-", 2)
    load = measured.load
    row = Row(
        key=key, label=label, kind=kind, workers=int(workers), path=path,
        body_bytes=len(body), rps=load.rps, p50_ms=load.p50_ms, p99_ms=load.p99_ms,
        cpu_us=measured.cpu_us, requests=load.requests, errors=load.errors, tool=load.tool,
        rounds_rps=measured.rounds,
    )  # fmt: skip
    row.details["others_cpu_share"] = measured.others_share
    row.details["loadgen_cpus"] = measured.loadgen_cpu
    notes = []
    if measured.loadgen_cpu >= LOADGEN_BOUND:
        notes.append("the load generator was CPU-bound (req/s is a floor)")
    if measured.others_share >= OTHERS_NOTE:
        notes.append(f"other processes used {measured.others_share:.0%} of the CPUs")
    row.notes = "; ".join(notes)
    return row


def note_lookups(row: Row, lookups: Counter[str]) -> None:
    """The row's cache lookups during its runs, and a note when some were not hits."""
    row.details["cache_lookups"] = dict(lookups)
    row.details["hit_share"] = round(lookups["hit"] / max(1, lookups.total()), 4)
    if row.details["hit_share"] < 1:
        row.notes = "; ".join(
            filter(None, [f"hit share {row.details['hit_share']:.4f}", row.notes])
        )


def _server_cpus(plan: Plan, workers: int) -> tuple[str | None, str | None]:
    """(server, load generator) CPUs: pinned apart for one process, free for two."""
    return (plan.cpus.server, plan.cpus.client) if workers == 1 else (None, None)


def gateway_rows(
    procs: Processes, plan: Plan, upstream_port: int
) -> tuple[list[Row], dict[str, bytes]]:
    """The gateway's hits; also returns the exact bytes it served, by path."""
    rows: list[Row] = []
    bodies: dict[str, bytes] = {}
    targets = ((SITE_PATH, SITE_ROUTE, "site"), (plan.page_path, PAGE_ROUTE, "page"))
    for workers in WORKER_COUNTS:
        server, client = _server_cpus(plan, workers)
        settings = {**MEASURING_ENV, "GATEWAY_WORKERS": str(workers),
                    "GATEWAY_LOG_LEVEL": plan.log_level}  # fmt: skip
        process, base = start_gateway(
            procs, f"gateway-{workers}w", upstream_port=upstream_port, settings=settings,
            cpus=server, source=plan.source,
        )  # fmt: skip
        for path, route, target in targets:
            # Fresh connections, so with 2 workers (each its own cache) both likely fill.
            answers = [http_get(base + path) for _ in range(2 + 4 * (workers - 1))]
            hits = [a for a in answers if "; hit" in a.headers.get("cache-status", "")]
            if any(a.status != 200 for a in answers) or not hits:
                seen = [(a.status, a.headers.get("cache-status")) for a in answers]
                raise RuntimeError(f"gateway {path}: no cache hit among {seen}")
            answer = hits[0]
            bodies.setdefault(path, answer.body)
            warm(base + path, plan, client)
            before = cache_lookups(base, route)
            measured = measure(base + path, plan, client, [process.pid])
            lookups = cache_lookups(base, route) - before
            noun = "worker" if workers == 1 else "workers"
            row = hit_row(f"gateway-{workers}-{target}", f"gateway, {workers} {noun}: GET {path}",
                       path, answer.body, measured)  # fmt: skip
            note_lookups(row, lookups)
            rows.append(row)
        procs.stop(process)
    return rows, bodies


def bare_rows(procs: Processes, plan: Plan, bodies: dict[str, bytes]) -> list[Row]:
    rows = []
    for workers in WORKER_COUNTS:
        server, client = _server_cpus(plan, workers)
        pids, base = start_bare(procs, f"bare-{workers}", bodies, copies=workers, cpus=server)
        for path, target in ((SITE_PATH, "site"), (plan.page_path, "page")):
            warm(base + path, plan, client)
            measured = measure(base + path, plan, client, pids)
            noun = "process" if workers == 1 else "processes"
            label = f"bare aiohttp, {workers} {noun}: same bytes as GET {path}"
            rows.append(hit_row(f"bare-{workers}-{target}", label, path, bodies[path], measured))
        for name in [f"bare-{workers}-{copy}" for copy in range(workers)]:
            procs.stop_named(name)
    return rows


def nginx_rows(procs: Processes, plan: Plan, upstream_port: int) -> list[Row]:
    rows = []
    for workers in WORKER_COUNTS:
        noun = "worker" if workers == 1 else "workers"
        label = f"nginx proxy_cache, {workers} {noun}: GET {SITE_PATH}"
        if not plan.nginx:
            rows.append(Row(key=f"nginx-{workers}-site", label=label, kind="nginx",
                            workers=workers, path=SITE_PATH,
                            skipped="nginx is not installed"))  # fmt: skip
            continue
        server, client = _server_cpus(plan, workers)
        pid, base = start_nginx(procs, f"nginx-{workers}", upstream_port=upstream_port,
                           paths=[SITE_PATH], workers=workers, cpus=server)  # fmt: skip
        body = http_get(base + SITE_PATH).body
        warm(base + SITE_PATH, plan, client)
        measured = measure(base + SITE_PATH, plan, client, [pid])
        row = hit_row(f"nginx-{workers}-site", label, SITE_PATH, body, measured)
        row.notes = "; ".join(filter(None, ["upstream bytes (not normalized)", row.notes]))
        rows.append(row)
        procs.stop_named(f"nginx-{workers}")
    return rows


def hit_rows(procs: Processes, plan: Plan) -> list[Row]:
    """Every hit row, in table order: /sites/{id} (1 then 2), then the /connectors page."""
    upstream = start_simulator(procs, "simulator-hits", sites=plan.hit_sites,
                               connectors=plan.connectors_per_site,
                               cpus=plan.cpus.client, source=plan.source)  # fmt: skip
    gateway, bodies = gateway_rows(procs, plan, upstream)
    bare = bare_rows(procs, plan, bodies)
    rival = nginx_rows(procs, plan, upstream)
    procs.stop_named("simulator-hits")
    by_key = {row.key: row for row in [*gateway, *bare, *rival]}
    order = [f"{kind}-{w}-site" for w in WORKER_COUNTS for kind in ("gateway", "bare", "nginx")]
    order += [f"{kind}-{w}-page" for w in WORKER_COUNTS for kind in ("gateway", "bare")]
    return [by_key[key] for key in order]
