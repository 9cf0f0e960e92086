"""One command for the whole comparison: the gateway against bare aiohttp and nginx
proxy_cache on cache hits, the latency a miss adds, and the first fill of a large fleet;
on request, content codings and tracing on the hit path.

    python bench/compare.py                      # full run, prints one table (a few minutes)
    python bench/compare.py --quick --json       # smoke run, machine-readable
    python bench/compare.py --out bench/RESULTS.md --label 'after the redesign'
    python bench/compare.py --profile            # where a hit's time goes (py-spy)
    python bench/compare.py --parts encodings,tracing   # gzip/br/zstd vs identity, tracing

Everything is a real process on 127.0.0.1: the simulator (`python -m gateway.simulator`),
the gateway (`python -m gateway`, configured by environment variables only), bare aiohttp
(`bench/bare.py`), nginx, redis-server, and the load generator (wrk -t1, or
`bench/loadgen.py` when wrk is missing).  Every one is stopped by pid at the end, on
Ctrl-C, on SIGTERM, on an error, and when `--deadline` passes.  What the rows and columns
mean: bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import report
from codings import encoding_rows
from cold import fleet_row, miss_rows
from hits import hit_rows
from hotspots import markdown, profile
from loadgen import run_seconds
from model import QUICK, Plan, Row, add_ratios, markdown_table, text_table
from procs import Cpus, Processes, stop_on_signals
from traced import tracing_rows

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"wrk": "wrk", "nginx": "nginx-light", "redis-server": "redis-server"}
PARTS = ("hits", "miss", "fleet", "encodings", "tracing")
DEFAULT_PARTS = "hits,miss,fleet"
WHY = {
    "wrk": "the load generator (wrk -t1 -c64)",
    "nginx": "the nginx proxy_cache rows",
    "redis-server": "the 500 x 200 fleet on Redis",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 0.5 s loads")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--out", type=Path, help="(re)write this results file's section")
    parser.add_argument("--label", default="latest run", help="the section heading for --out")
    parser.add_argument("--parts", default=DEFAULT_PARTS,
                        help=f"which of {','.join(PARTS)} (default {DEFAULT_PARTS})")  # fmt: skip
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--seconds", type=float, help="per measured load run (default 5)")
    parser.add_argument("--rounds", type=int, help="measured runs per row (default 3)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--log-level", default="INFO", help="GATEWAY_LOG_LEVEL (hits, misses)")
    parser.add_argument(
        "--gateway-source",
        type=Path,
        default=REPO,
        metavar="DIR",
        help="run the gateway and simulator of this checkout (default: this one)",
    )
    parser.add_argument("--no-install", action="store_true", help="never apt-get missing tools")
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds for everything")
    parser.add_argument("--profile", action="store_true", help="profile hits with py-spy only")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=25, help="rows per profile table")
    parser.add_argument("--profile-out", type=Path, default=REPO / "bench" / "PROFILE.md")
    parser.add_argument("--profile-raw", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    for name in ("seconds", "rounds", "connections", "deadline", "profile_seconds", "top"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if not args.parts or not set(args.parts) <= set(PARTS):
        parser.error(f"--parts: a comma-separated selection of {','.join(PARTS)}")
    args.gateway_source = args.gateway_source.resolve()
    if not (args.gateway_source / "gateway" / "__main__.py").is_file():
        parser.error(f"--gateway-source: no gateway/__main__.py in {args.gateway_source}")
    if args.loadgen == "wrk" and shutil.which("wrk") is None and (args.quick or args.no_install):
        parser.error("--loadgen wrk: wrk is not installed")
    return args


def ensure_tools(args: argparse.Namespace) -> None:
    """apt-get what a full run needs and lacks, saying what and why; never in --quick runs
    (they fall back: Python load generator, rows marked not run), never with sudo."""
    missing = [binary for binary in PACKAGES if shutil.which(binary) is None]
    if not missing or args.quick or args.no_install:
        return
    packages = [PACKAGES[binary] for binary in missing]
    if os.geteuid() != 0:
        print(f"bench: missing {', '.join(missing)}; not root, so not installing "
              f"(apt-get install {' '.join(packages)}); falling back", file=sys.stderr)  # fmt: skip
        return
    for binary in missing:
        print(f"bench: installing Debian package {PACKAGES[binary]} with apt-get, for "
              f"{WHY[binary]}", file=sys.stderr)  # fmt: skip
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
                   check=True, timeout=1200, env=env)  # fmt: skip


def make_plan(args: argparse.Namespace) -> Plan:
    tool = args.loadgen
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    overrides: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.seconds is not None:
        overrides["seconds"] = args.seconds
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    return Plan(quick=args.quick, tool=tool, nginx=shutil.which("nginx") is not None,
                cpus=Cpus.detect(), source=args.gateway_source, connections=args.connections,
                log_level=args.log_level, **overrides)  # fmt: skip


def load_description(plan: Plan, parts: Sequence[str]) -> str:
    tool = "wrk -t1" if plan.tool == "wrk" else "Python fallback (bench/loadgen.py), 1 process"
    seconds, warmup = (run_seconds(plan.tool, t) if t else 0 for t in (plan.seconds, plan.warmup))
    text = (f"{tool}, {plan.connections} connections, {plan.rounds} x {seconds:g} s per row "
            f"after a {warmup:g} s warm-up, the median run kept")  # fmt: skip
    if {"encodings", "tracing"} & set(parts):
        text += "; codings and tracing: the configurations' runs in turn"
    if "miss" in parts:
        text += (f"; misses: aiohttp, one at a time, {plan.miss_samples} requests over "
                 f"{plan.miss_sites} sites of {plan.connectors_per_site} connectors")  # fmt: skip
    return text


def run_rows(procs: Processes, plan: Plan, parts: list[str]) -> list[Row]:
    rows: list[Row] = []
    if "hits" in parts:
        print("bench: cache hits (gateway, bare aiohttp, nginx)", file=sys.stderr, flush=True)
        rows += hit_rows(procs, plan)
    if "miss" in parts:
        print("bench: the miss path", file=sys.stderr, flush=True)
        rows += miss_rows(procs, plan)
    if "fleet" in parts and shutil.which("redis-server") is None:
        rows.append(Row(key="fleet", kind="fleet", label="gateway + Redis, fleet",
                        skipped="redis-server is not installed"))  # fmt: skip
    elif "fleet" in parts:
        print(f"bench: the {plan.fleet_sites} x {plan.fleet_connectors} fleet on Redis",
              file=sys.stderr, flush=True)  # fmt: skip
        rows.append(fleet_row(procs, plan))
    if "encodings" in parts:
        print("bench: content codings on hits (identity, gzip, br, zstd)", file=sys.stderr,
              flush=True)  # fmt: skip
        rows += encoding_rows(procs, plan)
    if "tracing" in parts:
        print("bench: tracing on hits (off, on, sampled, collector down)", file=sys.stderr,
              flush=True)  # fmt: skip
        rows += tracing_rows(procs, plan)
    add_ratios(rows)
    return rows


def _deadline(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"bench: --deadline passed; stopping everything (signal {signum})")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    ensure_tools(args)
    plan = make_plan(args)
    stop_on_signals()
    signal.signal(signal.SIGALRM, _deadline)
    signal.alarm(max(1, int(args.deadline)))
    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    machine, versions = report.machine(), report.versions(plan.tool, plan.source)
    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        with Processes(workdir) as procs:
            if args.profile:
                hotspots, context = profile(procs, plan, seconds=args.profile_seconds,
                                            top=args.top, raw=args.profile_raw)  # fmt: skip
            else:
                rows = run_rows(procs, plan, args.parts)
    except BaseException:
        print(f"bench: stopped early; the processes' logs are in {workdir}", file=sys.stderr)
        raise
    finally:
        signal.alarm(0)
    shutil.rmtree(workdir, ignore_errors=True)
    if args.profile:
        names = ", ".join(f"{name} {value}" for name, value in versions.items() if value)
        text = markdown(hotspots, f"{context} Run {started:%Y-%m-%d %H:%M} UTC; {names}.")
        args.profile_out.write_text(text + "\n")
        print(text)
        return 0
    result = {
        "started": f"{started:%Y-%m-%d %H:%M} UTC",
        "command": shlex.join([".venv/bin/python", "bench/compare.py", *argv]),
        "seconds": round(time.monotonic() - clock, 1),
        "machine": machine,
        "versions": versions,
        "load": load_description(plan, args.parts),
        "pinning": plan.cpus.describe(),
        "plan": dataclasses.asdict(plan),
        "rows": [row.as_dict() for row in rows],
    }
    print(json.dumps(result, indent=2, default=str) if args.json else text_table(rows))
    if args.out is not None:
        section = report.section(args.label, result, markdown_table(rows))
        report.write_section(args.out, args.label, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
