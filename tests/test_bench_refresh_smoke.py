"""The refresher benchmark runs end to end (`--quick`); its numbers are not judged here,
only that each was measured and says what it should (the share, every change seen)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "refresh_bench.py"

pytestmark = pytest.mark.slow


def test_quick_refresh_bench_prints_its_results_as_json() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=BENCH.parent.parent,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    refresh, diff = result["refresh"], result["diff"]
    assert result["refresher_calls_per_s"] == result["rps"] * result["share"] > 0
    assert 0 < refresh["upstream_calls_per_s"] <= result["refresher_calls_per_s"] * 1.1
    assert refresh["period_s"] == pytest.approx(
        (result["sites"] + 1) / result["refresher_calls_per_s"], rel=0.01
    )
    assert refresh["lag_max_s"] > 0 and refresh["lag_mean_s"] <= refresh["lag_max_s"]
    assert refresh["cpu_ms_per_refresh"]["gateway"] > 0
    assert refresh["changes"] > 0 and refresh["changes_seen"] == refresh["changes"]
    assert diff["sites"] == result["sites"] and diff["changes_per_site"] == [2]
    assert 0 < diff["p50_us"] <= diff["p99_us"] <= diff["max_us"]
