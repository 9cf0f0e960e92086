"""What one comparison is made of: its `Plan` (sizes, durations, tools, pinning), the
`Row`s it measures, the ratios between rows, and the one table they print as."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import Cpus

SITE_PATH = "/sites/site-0001"
LIST_PATH = "/sites"


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    tool: str  # load generator: "wrk" or "python"
    nginx: bool  # nginx installed: measure it
    cpus: Cpus
    source: Path  # the tree whose gateway and simulator run (`python -m` from there)
    connections: int = 64
    seconds: float = 5.0  # one measured load run
    warmup: float = 2.0  # an unmeasured run before the measured ones (0: none)
    rounds: int = 3  # measured runs per row; the row keeps the median by req/s
    hit_sites: int = 20
    connectors_per_site: int = 50  # a site of ~20 KB normalized (~16 KB upstream)
    page_limit: int = 100  # the /connectors page measured as a hit
    miss_sites: int = 100  # the fleet behind the miss path (a design may fetch all of it)
    miss_samples: int = 200  # cold requests, one at a time
    miss_latency: float = 0.05
    fleet_sites: int = 500
    fleet_connectors: int = 200
    fleet_page_limit: int = 1000
    log_level: str = "INFO"  # GATEWAY_LOG_LEVEL for the hit and miss gateways

    @property
    def page_path(self) -> str:
        return f"/connectors?limit={self.page_limit}"


QUICK = {
    "seconds": 0.5,  # wrk: 1 s (whole seconds only)
    "warmup": 0.0,
    "rounds": 1,
    "hit_sites": 4,
    "miss_sites": 10,
    "miss_samples": 20,
    "fleet_sites": 20,
    "fleet_connectors": 20,
    "fleet_page_limit": 100,
}


@dataclass(slots=True)
class Row:
    key: str  # e.g. "gateway-1-site": kind, workers, target
    label: str
    kind: str  # gateway, bare, nginx, upstream, miss, fleet
    workers: int | None = None
    path: str | None = None
    body_bytes: int | None = None
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us: float | None = None  # server CPU time (all its processes) per request
    requests: int | None = None
    errors: int | None = None
    tool: str | None = None
    rounds_rps: list[float] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    ratio: str = ""
    notes: str = ""
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def add_ratios(rows: list[Row]) -> None:
    """gateway/bare and gateway/nginx (req/s, and server CPU per request; same workers and
    target) and 2 workers over 1 (req/s, any server), as numbers in `ratios` and as text
    in `ratio`."""
    by_key = {row.key: row for row in rows if row.rps}
    for row in rows:
        kind, _, rest = row.key.partition("-")
        workers, _, target = rest.partition("-")
        if row.rps is None or not target:
            continue
        speed, cost = [], []
        for rival in ("bare", "nginx"):
            other = by_key.get(f"{rival}-{workers}-{target}")
            if kind != "gateway" or other is None or not other.rps:
                continue
            row.ratios[f"gateway/{rival}"] = round(row.rps / other.rps, 3)
            speed.append(f"{row.ratios[f'gateway/{rival}']:.2f}x {rival}")
            if row.cpu_us and other.cpu_us:
                row.ratios[f"cpu gateway/{rival}"] = round(row.cpu_us / other.cpu_us, 3)
                cost.append(f"{row.ratios[f'cpu gateway/{rival}']:.1f}x {rival}")
        single = by_key.get(f"{kind}-1-{target}")
        if workers == "2" and single is not None and single.rps:
            row.ratios["2w/1w"] = round(row.rps / single.rps, 3)
            speed.append(f"{row.ratios['2w/1w']:.2f}x 1 worker")
        if speed:  # other rows (encodings, tracing) carry ratios of their own
            row.ratio = ", ".join(speed) + (f"; CPU/req {', '.join(cost)}" if cost else "")


COLUMNS = ("configuration", "bytes", "req/s", "p50 ms", "p99 ms", "CPU us/req", "ratio", "notes")


def _cells(row: Row) -> list[str]:
    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    notes = row.notes if row.skipped is None else f"not run: {row.skipped}"
    body = "-" if row.body_bytes is None else f"{row.body_bytes:,}"
    return [row.label, body, number(row.rps, 0), number(row.p50_ms, 2), number(row.p99_ms, 2),
            number(row.cpu_us, 1), row.ratio or "-", notes or ""]  # fmt: skip


def text_table(rows: list[Row]) -> str:
    cells = [list(COLUMNS), *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for index, line in enumerate(cells):
        padded = [
            c.ljust(w) if i in (0, 6, 7) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    return "\n".join(lines)
