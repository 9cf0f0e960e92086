"""Content codings on cache hits: bytes on the wire, and hit throughput with gzip, br or zstd
accepted against identity, for the fleet list, one site and a connectors page.

One gateway (1 worker, pinned like the hit rows' single-process servers) in front of the hit
rows' simulator.  For each path: one GET per coding on a fresh socket (the exact bytes of
the answer's head and body; `Content-Encoding` must be the coding asked for, and the body
must decode to the identity bytes), asked twice so the second is a hit; one unmeasured
warm-up run per coding; then `Plan.rounds` rounds in which the load generator drives
identity, gzip, br and zstd in turn (`hits.measure_rotated`), every request carrying
`Accept-Encoding: <coding>` (identity too, so every row parses one header).  Ratios against
the identity row of the same path: body bytes, req/s, p99 and server CPU per request.
"""

from __future__ import annotations

import gzip
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import brotli
from hits import Target, hit_row, measure_rotated, note_lookups, warm
from model import LIST_PATH, SITE_PATH, Plan, Row
from procs import HOST, Processes
from services import HTTP_TIMEOUT, MEASURING_ENV, cache_lookups, start_gateway, start_simulator

try:  # the standard library from Python 3.14, as the gateway does
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd

IDENTITY = "identity"
CODINGS = (IDENTITY, "gzip", "br", "zstd")
DECODE: dict[str, Callable[[bytes], bytes]] = {
    IDENTITY: lambda body: body,
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "zstd": zstd.decompress,
}
ROUTES = {"list": "/sites", "site": "/sites/{id}", "page": "/connectors"}


@dataclass(frozen=True, slots=True)
class Wire:
    """One answer as it crossed the socket."""

    status: int
    headers: dict[str, str]  # names in lower case
    head_bytes: int  # status line and headers, with the blank line that ends them
    body: bytes


def wire_get(url: str, headers: dict[str, str]) -> Wire:
    """One GET on a fresh connection (`Connection: close`), read to the end: the exact
    bytes on the wire.  The answer must carry a Content-Length that matches its body."""
    parts = urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    chunks = []
    with socket.create_connection((host, port), timeout=HTTP_TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    head, separator, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    found = {}
    for field in fields:
        name, _, value = field.partition(":")
        found[name.strip().lower()] = value.strip()
    if not separator or found.get("content-length") != str(len(body)):
        raise RuntimeError(f"GET {url}: no Content-Length matching the body: {head[:300]!r}")
    return Wire(int(status_line.split()[1]), found, len(head) + len(separator), body)


def check_codings(url: str) -> dict[str, Wire]:
    """Each coding's answer (a cache hit), checked: 200, the coding asked for, and a body
    that decodes to the identity bytes."""
    wires: dict[str, Wire] = {}
    for coding in CODINGS:
        first, wire = (wire_get(url, {"Accept-Encoding": coding}) for _ in range(2))
        sent = wire.headers.get("content-encoding", IDENTITY)
        if first.status != 200 or wire.status != 200 or sent != coding:
            raise RuntimeError(f"GET {url} with {coding}: {wire.status}, coding {sent}")
        if "; hit" not in wire.headers.get("cache-status", ""):
            raise RuntimeError(f"GET {url} with {coding}: not a hit: {wire.headers}")
        wires[coding] = wire
    for coding, wire in wires.items():
        if DECODE[coding](wire.body) != wires[IDENTITY].body:
            raise RuntimeError(f"GET {url}: the {coding} body does not decode to identity's")
    return wires


def add_identity_ratios(rows: list[Row], base: Row) -> None:
    """Every row against `base` (same path, identity): bytes, req/s, p99, CPU per request."""
    for row in rows:
        if row is base or not (row.rps and base.rps and row.body_bytes and base.body_bytes):
            continue
        row.ratios["bytes/identity"] = round(row.body_bytes / base.body_bytes, 3)
        row.ratios["req/s/identity"] = round(row.rps / base.rps, 3)
        if row.p99_ms and base.p99_ms:
            row.ratios["p99/identity"] = round(row.p99_ms / base.p99_ms, 3)
        text = [
            f"bytes {row.ratios['bytes/identity']:.3f}x",
            f"{row.ratios['req/s/identity']:.2f}x req/s",
        ]
        if row.cpu_us and base.cpu_us:
            row.ratios["cpu/identity"] = round(row.cpu_us / base.cpu_us, 3)
            text.append(f"CPU/req {row.ratios['cpu/identity']:.2f}x")
        row.ratio = ", ".join(text) + " identity"


def encoding_rows(procs: Processes, plan: Plan) -> list[Row]:
    """For the list, one site and a connectors page: one row per coding, identity first."""
    server, client = plan.cpus.server, plan.cpus.client
    upstream = start_simulator(procs, "simulator-encodings", sites=plan.hit_sites,
                               connectors=plan.connectors_per_site, cpus=client,
                               source=plan.source)  # fmt: skip
    settings = {**MEASURING_ENV, "GATEWAY_WORKERS": "1", "GATEWAY_LOG_LEVEL": plan.log_level}
    process, base = start_gateway(procs, "gateway-encodings", upstream_port=upstream,
                                  settings=settings, cpus=server, source=plan.source)  # fmt: skip
    rows: list[Row] = []
    for target, path in (("list", LIST_PATH), ("site", SITE_PATH), ("page", plan.page_path)):
        wires = check_codings(base + path)
        targets = [Target(base + path, [process.pid], {"Accept-Encoding": c}) for c in CODINGS]
        for one in targets:
            warm(one.url, plan, client, one.headers)
        before = cache_lookups(base, ROUTES[target])
        measured = measure_rotated(targets, plan, client)
        lookups = cache_lookups(base, ROUTES[target]) - before
        group = []
        for coding, result in zip(CODINGS, measured, strict=True):
            wire = wires[coding]
            label = f"gateway, 1 worker: GET {path}, Accept-Encoding: {coding}"
            row = hit_row(f"encoding-1-{target}-{coding}", label, path, wire.body, result)
            row.details.update(coding=coding, head_bytes=wire.head_bytes,
                               wire_bytes=wire.head_bytes + len(wire.body))  # fmt: skip
            note_lookups(row, lookups)  # the four codings' runs together
            group.append(row)
        add_identity_ratios(group, group[0])
        rows += group
    procs.stop(process)
    procs.stop_named("simulator-encodings")
    return rows
