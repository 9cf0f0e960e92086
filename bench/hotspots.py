"""Where a cache hit's time goes: the gateway (1 worker) under `py-spy record` while the
load generator drives `GET /sites/{id}` hits, summarized as the top functions by own
samples (the function was on top of the stack), by inclusive samples (anywhere on it),
and the top source files by own samples.

py-spy samples Python stacks only: time in C code (uvloop, orjson, the kernel's socket
calls) is charged to the Python function that called it.  Samples are of the whole
process, idle threads excluded (`py-spy record` without `--idle`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from loadgen import run_load
from model import SITE_PATH, Plan
from procs import Processes
from services import MEASURING_ENV, http_get, start_gateway, start_simulator

RATE = 200  # samples per second
_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


@dataclass(frozen=True, slots=True)
class Hotspots:
    samples: int
    own: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]
    files: list[tuple[str, int]]
    trunk: list[str]  # left out of `inclusive`: on every sampled stack


def _function(frame: str) -> str:
    """`name (path:line)` -> `name (path)`: lines of one function count together."""
    return _FRAME_LINE.sub(")", frame)


def _file(function: str) -> str:
    return function.rpartition(" (")[2].rstrip(")") or function


def _parse(collapsed: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in collapsed.splitlines():
        match = _LINE.match(line.strip())
        if match is not None:
            stack = [_function(frame) for frame in match.group(1).split(";") if frame]
            if stack:
                stacks.append((stack, int(match.group(2))))
    return stacks


def _trunk(stacks: list[tuple[list[str], int]]) -> set[str]:
    """Frames every sample shares from the root down (runpy, main, the event loop's run):
    100% inclusive by construction, so they would only crowd the inclusive table."""
    if not stacks:
        return set()
    prefix = stacks[0][0]
    for stack, _ in stacks[1:]:
        common = 0
        while common < min(len(prefix), len(stack)) and prefix[common] == stack[common]:
            common += 1
        prefix = prefix[:common]
    return set(prefix)


def summarize(collapsed: str, top: int) -> Hotspots:
    """Top-`top` tables from py-spy's raw (collapsed-stack) output: `f1;f2;...;fn count`."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    files: Counter[str] = Counter()
    stacks = _parse(collapsed)
    trunk = _trunk(stacks)
    for stack, count in stacks:
        own[stack[-1]] += count
        files[_file(stack[-1])] += count
        for function in set(stack) - trunk:
            inclusive[function] += count
    samples = sum(count for _, count in stacks)
    return Hotspots(samples, own.most_common(top), inclusive.most_common(top),
                    files.most_common(top), sorted(trunk))  # fmt: skip


def markdown(hotspots: Hotspots, context: str) -> str:
    def table(title: str, rows: list[tuple[str, int]], what: str = "function (file)") -> list[str]:
        lines = [f"### {title}", "", f"| share | samples | {what} |", "|---:|---:|---|"]
        for name, count in rows:
            share = count / max(1, hotspots.samples)
            lines.append(f"| {share:.1%} | {count} | `{name}` |")
        return [*lines, ""]

    return "\n".join(
        [
            "# Where a cache hit's time goes",
            "",
            context,
            "",
            f"{hotspots.samples} samples. Own: the function itself was running (or a C call "
            "it made; `Runner.run` own is the event loop itself: uvloop's polling and socket "
            "I/O). Inclusive: it was anywhere on the stack (frames on every stack, such as "
            "`main`, are left out).",
            "",
            *table("Top functions by own samples", hotspots.own),
            *table("Top functions by inclusive samples", hotspots.inclusive),
            *table("Top files by own samples", hotspots.files, "file"),
        ]
    )


def py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy (it is in the dev extra)")
    return found


def profile(
    procs: Processes, plan: Plan, *, seconds: float, top: int, raw: Path | None = None
) -> tuple[Hotspots, str]:
    """Profile `seconds` of hits on one gateway worker; the summary and its context line.
    py-spy's collapsed stacks go to `raw` (for flame-graph tools) when given."""
    binary = py_spy()
    upstream = start_simulator(procs, "simulator-profile", sites=plan.hit_sites,
                               connectors=plan.connectors_per_site,
                               cpus=plan.cpus.client, source=plan.source)  # fmt: skip
    settings = {**MEASURING_ENV, "GATEWAY_LOG_LEVEL": plan.log_level}
    gateway, base = start_gateway(procs, "gateway-profile", upstream_port=upstream,
                                  settings=settings, cpus=plan.cpus.server,
                                  source=plan.source)  # fmt: skip
    for _ in range(2):  # the first fills
        http_get(base + SITE_PATH)
    run_load(base + SITE_PATH, tool=plan.tool, connections=plan.connections,
             seconds=plan.warmup, cpus=plan.cpus.client)  # fmt: skip
    output = raw or procs.workdir / "profile.collapsed"
    command = [binary, "record", "--pid", str(gateway.pid), "--duration", f"{seconds:g}",
               "--rate", str(RATE), "--format", "raw",
               "--output", str(output)]  # fmt: skip
    recorder = procs.start("py-spy", command, cpus=plan.cpus.client)
    load = run_load(base + SITE_PATH, tool=plan.tool, connections=plan.connections,
                    seconds=seconds, cpus=plan.cpus.client)  # fmt: skip
    try:
        recorder.wait(seconds + 60)
    except subprocess.TimeoutExpired:
        raise RuntimeError("py-spy did not finish") from None
    finally:
        procs.stop(recorder)
        procs.stop(gateway)
        procs.stop_named("simulator-profile")
    if not output.exists():
        raise RuntimeError(f"py-spy wrote nothing: {procs.log_path('py-spy').read_text()}")
    context = (
        f"`GET {SITE_PATH}` cache hits on one gateway worker (CPU {plan.cpus.server or 'any'}), "
        f"{plan.tool} -c{plan.connections} for {seconds:g} s at {load.rps:,.0f} req/s "
        f"(p99 {load.p99_ms:.2f} ms) under `py-spy record --rate {RATE}`; "
        f"GATEWAY_LOG_LEVEL={plan.log_level}."
    )
    return summarize(output.read_text(), top), context
