"""Tracing on the hit path: `GET /sites/site-0001` hits with tracing off, on (OTLP/HTTP to a
local sink) and on with the collector down (the endpoint a closed port), in one run.

Three gateways (1 worker each, pinned like the hit rows' single-process servers, so they
take turns on one CPU) in front of the hit rows' simulator; the only difference is
`OTEL_EXPORTER_OTLP_ENDPOINT` (every other `OTEL_*` at the SDK's defaults: batch processor
queue 2048, batches of 512, every 5 s).  The sink (`bench/otlp_sink.py`) runs beside the load
generator.  Each gateway is checked (a hit) and warmed, then `Plan.rounds` rounds take
off, on, down in turn (`hits.measure_rotated`).  Ratios against off: req/s, p99, server CPU
per request (the exporter's thread lives in the gateway's process, so its CPU counts).

Spans: once the runs are over, the sink's count of `GET /sites/{id}` spans is awaited until
it reaches the gateway's own count of lookups on that route (every request to it, warm-up
and checks included: one server span each) or stops growing for longer than the batch
processor's delay; the difference was dropped.  The SDK logs a warning per span its full queue
drops and an error per batch it fails to export: each gateway's warning and error lines during
the runs are counted by message, with the bytes it logged.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from common import free_port
from hits import SITE_ROUTE, Target, hit_row, measure_rotated, note_lookups, warm
from model import SITE_PATH, Plan, Row
from procs import HOST, POLL, Processes, tree_cpu_seconds
from services import (
    MEASURING_ENV,
    cache_lookups,
    http_get,
    sink_stats,
    start_gateway,
    start_otlp_sink,
    start_simulator,
)

CONFIGS = ("off", "on", "down")
LABELS = {
    "off": "tracing off",
    "on": "tracing on (OTLP/HTTP to a local sink)",
    "down": "tracing on, collector down (closed port)",
}
SPAN_NAME = f"GET {SITE_ROUTE}"
QUIET = 7.0  # no new span for longer than the batch processor's 5 s delay: all are in
SETTLE_CAP = 60.0


def settled_spans(sink: str, expected: int) -> int:
    """The sink's `GET /sites/{id}` spans once it has `expected` of them or no more came
    for `QUIET` seconds after the first (at most `SETTLE_CAP`)."""
    started = changed = time.monotonic()
    last = -1
    while True:
        count = int(sink_stats(sink)["spans_by_name"].get(SPAN_NAME, 0))
        now = time.monotonic()
        if count >= expected or now - started > SETTLE_CAP:
            return count
        if count != last:
            last, changed = count, now
        elif now - changed > QUIET and count > 0:  # none yet: wait for the first export
            return count
        time.sleep(POLL * 10)


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
    for name in ("on", "down"):
        row = rows[name]
        if not (row.rps and off.rps):
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


def tracing_rows(procs: Processes, plan: Plan) -> list[Row]:
    server, client = plan.cpus.server, plan.cpus.client
    upstream = start_simulator(procs, "simulator-tracing", sites=plan.hit_sites,
                               connectors=plan.connectors_per_site, cpus=client,
                               source=plan.source)  # fmt: skip
    sink_pid, sink = start_otlp_sink(procs, "otlp-sink", cpus=client)
    endpoints = {"off": None, "on": sink, "down": f"http://{HOST}:{free_port()}"}
    gateways, bodies = {}, {}
    for name in CONFIGS:
        settings = {**MEASURING_ENV, "GATEWAY_WORKERS": "1", "GATEWAY_LOG_LEVEL": plan.log_level}
        if endpoints[name] is not None:
            settings["OTEL_EXPORTER_OTLP_ENDPOINT"] = str(endpoints[name])
        gateways[name] = start_gateway(procs, f"gateway-tracing-{name}", upstream_port=upstream,
                                       settings=settings, cpus=server,
                                       source=plan.source)  # fmt: skip
        bodies[name] = _first_hit(gateways[name][1])
        warm(gateways[name][1] + SITE_PATH, plan, client)
    logs = {name: procs.log_path(f"gateway-tracing-{name}") for name in CONFIGS}
    before = {name: cache_lookups(base, SITE_ROUTE) for name, (_, base) in gateways.items()}
    log_sizes = {name: _log_size(path) for name, path in logs.items()}
    sink_cpu = tree_cpu_seconds([sink_pid])
    targets = [Target(base + SITE_PATH, [process.pid]) for process, base in gateways.values()]
    measured = measure_rotated(targets, plan, client)
    sink_cpu = tree_cpu_seconds([sink_pid]) - sink_cpu
    rows: dict[str, Row] = {}
    for name, result in zip(CONFIGS, measured, strict=True):
        process, base = gateways[name]
        label = f"gateway, 1 worker: GET {SITE_PATH}, {LABELS[name]}"
        row = rows[name] = hit_row(f"tracing-1-{name}", label, SITE_PATH, bodies[name], result)
        note_lookups(row, cache_lookups(base, SITE_ROUTE) - before[name])
        if name != "off":
            row.details["otlp_endpoint"] = endpoints[name]
    served = cache_lookups(gateways["on"][1], SITE_ROUTE).total()
    received = settled_spans(sink, served)
    on = rows["on"]
    on.details.update(spans_expected=served, spans_received=received,
                      spans_dropped=served - received, sink=sink_stats(sink),
                      sink_cpu_seconds_during_runs=round(sink_cpu, 2))  # fmt: skip
    share = (served - received) / max(1, served)
    spans_note = f"spans received {received:,} of {served:,} requests ({share:.1%} dropped)"
    on.notes = "; ".join(filter(None, [spans_note, on.notes]))
    for name in CONFIGS:
        written = _log_since(logs[name], log_sizes[name])
        warnings = warnings_in(written)
        rows[name].details.update(log_bytes_during_runs=len(written), log_warnings=dict(warnings))
        if warnings:
            megabytes = len(written) / 1e6
            note = f"{warnings.total():,} warning/error log lines ({megabytes:.1f} MB of log)"
            rows[name].notes = "; ".join(filter(None, [rows[name].notes, note]))
    add_off_ratios(rows)
    for process, _ in gateways.values():
        procs.stop(process)
    procs.stop_named("otlp-sink")
    procs.stop_named("simulator-tracing")
    return [rows[name] for name in CONFIGS]
