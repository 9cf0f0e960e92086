"""Tracing on the hit path: `GET /sites/site-0001` hits with tracing off, on (OTLP/HTTP to a
local sink), on with 1% of traces sampled, and on with the collector down (the endpoint a
closed port), in one run.

Four gateways (1 worker each, pinned like the hit rows' single-process servers, so they
take turns on one CPU) in front of the hit rows' simulator; they differ only in
`OTEL_EXPORTER_OTLP_ENDPOINT` and, for the sampled one, `OTEL_TRACES_SAMPLER(_ARG)`; every
other `OTEL_*` is the SDK's default (batch processor: queue 2048, batches of 512, every
5 s).  Each traced gateway with a collector has its own sink (`bench/otlp_sink.py`, beside
the load generator).  Each gateway is checked (a hit) and warmed, then `Plan.rounds` rounds
take off, on, sampled, down in turn (`hits.measure_rotated`).  Ratios against off: req/s,
p99, server CPU per request (the exporter's thread lives in the gateway's process, so its
CPU counts).

Spans: after the runs, each gateway's lookups on `/sites/{id}` are read (every request to
it, warm-up and checks included: one server span each), then it is stopped, which exports
what its batch queue still holds (within the gateway's bounded shutdown); the sink's count
of `GET /sites/{id}` spans is then final, and for the unsampled gateway the difference was
dropped.  Each gateway's warning and error log lines during the runs are counted by message
(the SDK's own: a full queue dropping spans, failed exports; it repeats a message at most
once per 20 s), with the bytes it logged.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from common import free_port
from hits import SITE_ROUTE, Target, hit_row, measure_rotated, note_lookups, warm
from model import SITE_PATH, Plan, Row
from procs import HOST, Processes, tree_cpu_seconds
from services import (
    MEASURING_ENV,
    cache_lookups,
    http_get,
    sink_stats,
    start_gateway,
    start_otlp_sink,
    start_simulator,
)

CONFIGS = ("off", "on", "sampled", "down")
SINKS = ("on", "sampled")  # each its own sink, so each count is that gateway's alone
SAMPLED = "0.01"
EXTRA_ENV = {
    "sampled": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": SAMPLED,
    }
}
LABELS = {
    "off": "tracing off",
    "on": "tracing on (OTLP/HTTP to a local sink)",
    "sampled": f"tracing on, {float(SAMPLED):.0%} sampled (parentbased_traceidratio)",
    "down": "tracing on, collector down (closed port)",
}
SPAN_NAME = f"GET {SITE_ROUTE}"


def _first_hit(base: str) -> bytes:
    answers = [http_get(base + SITE_PATH) for _ in range(2)]
    if any(a.status != 200 for a in answers) or "; hit" not in answers[1].headers.get(
        "cache-status", ""
    ):
        seen = [(a.status, a.headers.get("cache-status")) for a in answers]
        raise RuntimeError(f"gateway {SITE_PATH}: no cache hit among {seen}")
    return answers[1].body


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _log_since(path: Path, offset: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read()


def warnings_in(log: bytes) -> Counter[str]:
    """Warning and error lines of a gateway's JSON log by `logger: msg` (the first 100
    characters of the message; access lines are info)."""
    found: Counter[str] = Counter()
    for line in log.splitlines():
        if b'"level":"warning"' not in line and b'"level":"error"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        found[f"{record.get('logger')}: {str(record.get('msg'))[:100]}"] += 1
    return found


def add_off_ratios(rows: dict[str, Row]) -> None:
    off = rows["off"]
    for row in rows.values():
        if row is off or not (row.rps and off.rps):
            continue
        row.ratios["req/s/off"] = round(row.rps / off.rps, 3)
        text = [f"{row.ratios['req/s/off']:.2f}x req/s"]
        if row.p99_ms and off.p99_ms:
            row.ratios["p99/off"] = round(row.p99_ms / off.p99_ms, 3)
            text.append(f"p99 {row.ratios['p99/off']:.2f}x")
        if row.cpu_us and off.cpu_us:
            row.ratios["cpu/off"] = round(row.cpu_us / off.cpu_us, 3)
            text.append(f"CPU/req {row.ratios['cpu/off']:.2f}x")
        row.ratio = ", ".join(text) + " off"


def _spans_note(row: Row, served: int, stats: dict[str, Any]) -> None:
    received = int(stats["spans_by_name"].get(SPAN_NAME, 0))
    share = received / max(1, served)
    row.details.update(spans_expected=served, spans_received=received, sink=stats)
    if row.key.endswith("-on"):
        row.details["spans_dropped"] = served - received
        note = f"spans received {received:,} of {served:,} requests ({1 - share:.1%} dropped)"
    else:
        note = f"spans received {received:,} of {served:,} requests ({share:.1%})"
    row.notes = "; ".join(filter(None, [note, row.notes]))


def _log_note(row: Row, written: bytes) -> None:
    warnings = warnings_in(written)
    row.details.update(log_bytes_during_runs=len(written), log_warnings=dict(warnings))
    if warnings:
        megabytes = len(written) / 1e6
        note = f"{warnings.total():,} warning/error log lines ({megabytes:.1f} MB of log)"
        row.notes = "; ".join(filter(None, [row.notes, note]))


def tracing_rows(procs: Processes, plan: Plan) -> list[Row]:
    server, client = plan.cpus.server, plan.cpus.client
    upstream = start_simulator(procs, "simulator-tracing", sites=plan.hit_sites,
                               connectors=plan.connectors_per_site, cpus=client,
                               source=plan.source)  # fmt: skip
    sinks = {name: start_otlp_sink(procs, f"otlp-sink-{name}", cpus=client) for name in SINKS}
    endpoints = {name: base for name, (_, base) in sinks.items()}
    endpoints["down"] = f"http://{HOST}:{free_port()}"  # nothing listens there
    gateways, bodies = {}, {}
    for name in CONFIGS:
        settings = {**MEASURING_ENV, "GATEWAY_WORKERS": "1", "GATEWAY_LOG_LEVEL": plan.log_level,
                    **EXTRA_ENV.get(name, {})}  # fmt: skip
        if name in endpoints:
            settings["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoints[name]
        gateways[name] = start_gateway(procs, f"gateway-tracing-{name}", upstream_port=upstream,
                                       settings=settings, cpus=server,
                                       source=plan.source)  # fmt: skip
        bodies[name] = _first_hit(gateways[name][1])
        warm(gateways[name][1] + SITE_PATH, plan, client)
    logs = {name: procs.log_path(f"gateway-tracing-{name}") for name in CONFIGS}
    before = {name: cache_lookups(base, SITE_ROUTE) for name, (_, base) in gateways.items()}
    log_sizes = {name: _log_size(path) for name, path in logs.items()}
    sink_pids = [pid for pid, _ in sinks.values()]
    sink_cpu = tree_cpu_seconds(sink_pids)
    targets = [Target(base + SITE_PATH, [process.pid]) for process, base in gateways.values()]
    measured = measure_rotated(targets, plan, client)
    sink_cpu = tree_cpu_seconds(sink_pids) - sink_cpu
    rows: dict[str, Row] = {}
    for name, result in zip(CONFIGS, measured, strict=True):
        process, base = gateways[name]
        label = f"gateway, 1 worker: GET {SITE_PATH}, {LABELS[name]}"
        row = rows[name] = hit_row(f"tracing-1-{name}", label, SITE_PATH, bodies[name], result)
        after = cache_lookups(base, SITE_ROUTE)
        note_lookups(row, after - before[name])
        # Stopped, a gateway exports what its queue still holds (bounded by its shutdown):
        # after that the sink has every span it will ever get.
        procs.stop(process)
        _log_note(row, _log_since(logs[name], log_sizes[name]))
        if name in endpoints:
            row.details["otlp_endpoint"] = endpoints[name]
        if name in sinks:
            _spans_note(row, after.total(), sink_stats(sinks[name][1]))
    rows["on"].details["sink_cpu_seconds_during_runs"] = round(sink_cpu, 2)
    add_off_ratios(rows)
    for name in SINKS:
        procs.stop_named(f"otlp-sink-{name}")
    procs.stop_named("simulator-tracing")
    return [rows[name] for name in CONFIGS]
