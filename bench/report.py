"""The results file: which machine and versions a run measured, its table, and how to run
it again.  `write_section` (re)writes one `## <label>` section of `bench/RESULTS.md` and
keeps the others, so a later run (after a redesign, say) sits beside the baseline."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import nginx

REPO = Path(__file__).resolve().parent.parent
TITLE = "# Benchmark results: gateway vs bare aiohttp vs nginx proxy_cache"
PREAMBLE = f"""{TITLE}

Written by `bench/compare.py --out bench/RESULTS.md --label '<label>'`, one section per
label (a run with the same label replaces its section; text added under it goes too). What
each number means: [`bench/README.md`](README.md). Re-run on an otherwise idle machine:

```sh
bash scripts/setup
.venv/bin/python bench/compare.py --out bench/RESULTS.md --label 'after <change> (main <commit>)'
.venv/bin/python bench/compare.py --profile     # where a hit's time goes (bench/PROFILE.md)
# the same harness against an older checkout, e.g. the baseline's commit:
git clone -q . /tmp/old && git -C /tmp/old checkout -q f7a7b53
.venv/bin/python bench/compare.py --gateway-source /tmp/old --out bench/RESULTS.md --label '…'
```

Ratios compare rows of one run only; absolute req/s depend on the machine and its load.
"""


def _run(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return ""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    memory = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE)
    return {
        "cpu": model.group(1).strip() if model else platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory.group(1)) / 1024 / 1024, 1) if memory else None,
        "kernel": f"{platform.system()} {platform.release()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions(tool: str, source: Path) -> dict[str, str | None]:
    redis = re.search(r"v=(\S+)", _run(["redis-server", "--version"]))
    wrk = re.search(r"^wrk (\S+)", _run(["wrk", "-v"]), re.MULTILINE)
    # The measured gateway's code: the last commit that changed gateway/ in `source`, and
    # whether it is modified now (bench/ changes do not change what is measured).
    commit = _run(["git", "-C", str(source), "log", "-1", "--format=%h", "--", "gateway"])
    dirty = _run(["git", "-C", str(source), "status", "--porcelain", "--", "gateway"])
    return {
        "python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "redis-py": _version("redis"),
        "orjson": _version("orjson"),
        "redis-server": redis.group(1) if redis else None,
        "nginx": nginx.version(),
        "wrk": wrk.group(1) if wrk else None,
        "load generator": tool,
        "gateway commit": (commit + (" (gateway/ modified)" if dirty else "")) or None,
        "gateway source": None if source == REPO else str(source),
    }


def section(label: str, result: dict[str, Any], table: str) -> str:
    m, v = result["machine"], result["versions"]
    names = ", ".join(f"{name} {value}" for name, value in v.items() if value is not None)
    lines = [
        f"## {label}",
        "",
        f"Run {result['started']} with `{result['command']}` ({result['seconds']:.0f} s).",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['kernel']}; "
        f"load average at start {', '.join(str(x) for x in m['load_average_at_start'])}.",
        f"- Versions: {names}.",
        f"- Load: {result['load']}.",
        f"- Pinning: {result['pinning']}.",
        "",
        table,
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, label: str, text: str) -> None:
    """Replace the `## label` section of `path` with `text`, or append it; other sections
    stay as they were, and the preamble is written afresh."""
    old = path.read_text() if path.exists() else ""
    sections = re.split(r"(?m)^(?=## )", old)[1:]
    heading = f"## {label}"
    if any(s.splitlines()[0] == heading for s in sections):
        sections = [text if s.splitlines()[0] == heading else s for s in sections]
    else:
        sections.append(text)
    path.write_text(PREAMBLE + "\n" + "\n".join(s.rstrip() + "\n" for s in sections))
