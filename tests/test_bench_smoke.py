"""The connectors benchmark runs end to end (`--quick`); its numbers are not judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "connectors_bench.py"
LOAD_KEYS = {"requests", "errors", "seconds", "rps", "p50_ms", "p99_ms", "mib_per_s"}


def test_quick_bench_prints_its_results_as_json() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=BENCH.parent.parent,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    assert set(result) >= {
        "sites",
        "connectors_per_site",
        "connectors_total",
        "cache",
        "upstream_calls",
        "fill",
        "connectors_page",
        "site",
        "ratio",
    }
    assert result["connectors_total"] == result["sites"] * result["connectors_per_site"] > 0
    assert result["cache"] == "memory"
    assert result["upstream_calls"] == 2, "two cold fills; every other request is a cache hit"
    fill = result["fill"]
    assert fill["seconds"] > 0 and fill["traced_seconds"] > 0
    assert fill["tracemalloc_peak_bytes"] > 0 and fill["rss_delta_bytes"] >= 0
    for name in ("connectors_page", "site"):
        load = result[name]
        assert set(load) == LOAD_KEYS
        assert load["requests"] > 0 and load["errors"] == 0
        assert all(load[key] > 0 for key in ("seconds", "rps", "p50_ms", "p99_ms", "mib_per_s"))
        assert load["p99_ms"] >= load["p50_ms"]
    assert result["ratio"] > 0
