"""deploy/measure_memory.py runs end to end on a tiny fleet with Redis: the tool the pod's
memory is sized from must not rot silently.  Its figures are not judged, only that every
phase was measured and that the walk and the refill did what they say."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEASURE = ROOT / "deploy" / "measure_memory.py"
SITES, CONNECTORS = 3, 2

pytestmark = pytest.mark.slow


def test_measure_memory_runs_every_phase_and_prints_json() -> None:
    done = subprocess.run(
        [sys.executable, str(MEASURE), "--sites", str(SITES), "--connectors", str(CONNECTORS),
         "--redis", "--passes", "1", "--concurrency", "2", "--refill-timeout", "60"],
        capture_output=True, text=True, timeout=180, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["sites"], result["connectors_per_site"], result["cache"]) == (
        SITES, CONNECTORS, "redis",
    )  # fmt: skip
    phases = ("fill", "pages", "walks", "refill")
    for name in ("started", *phases):
        memory = result[name]
        assert 0 < memory["VmRSS"] <= memory["VmHWM"], name
    assert result["peak_rss_mib"] == max(result[name]["VmHWM"] for name in ("started", *phases))
    # One /connectors page (6 connectors), and the three routes of every site.
    assert result["requests"] == 1 + 3 * SITES
    assert all(result[name]["cpu_seconds"] >= 0 for name in phases)
    assert result["refill"]["list_refreshes"] > result["walks"]["list_refreshes"] >= 1
    assert math.isfinite(result["loadavg"])
