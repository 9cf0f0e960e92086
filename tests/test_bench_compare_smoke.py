"""`bench/compare.py --quick` runs end to end and reports every row with sane fields.

No timing is judged.  What is judged: every configuration is measured (or, for nginx when
it is not installed, says why not), the bare server serves the gateway's very bytes, the
one-worker gateway answered only hits, the miss path saw only misses and the simulator's
latency, the fleet's connectors are all reachable by paging and Redis was never lost.
Without wrk the same run uses the Python load generator (the second test forces it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPARE = REPO / "bench" / "compare.py"
HIT_KEYS = [f"{kind}-{w}-site" for w in (1, 2) for kind in ("gateway", "bare", "nginx")] + [
    f"{kind}-{w}-page" for w in (1, 2) for kind in ("gateway", "bare")
]
ALL_KEYS = [*HIT_KEYS, "upstream-miss", "gateway-miss", "fleet"]


def run_compare(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(COMPARE), "--quick", "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"compare.py exited {done.returncode} without JSON: {done.stderr[-3000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return result


def check_hit_rows(rows: dict[str, dict[str, Any]], tool: str) -> None:
    nginx_installed = shutil.which("nginx") is not None
    for key in HIT_KEYS:
        row = rows[key]
        if key.startswith("nginx") and not nginx_installed:
            assert row["skipped"] == "nginx is not installed" and row["rps"] is None
            continue
        assert row["skipped"] is None, key
        assert row["tool"] == tool, key
        assert row["requests"] > 0 and row["errors"] == 0, (key, row)
        assert row["rps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"], (key, row)
        assert row["body_bytes"] > 0 and len(row["rounds_rps"]) == 1
        # CPU time comes in 10 ms ticks: a 0.2 s smoke load on a busy machine may show none.
        assert row["cpu_us"] >= 0
        assert 0 <= row["details"]["others_cpu_share"] <= 1 and row["details"]["loadgen_cpus"] > 0
    for workers in (1, 2):
        for target in ("site", "page"):
            gateway, bare = rows[f"gateway-{workers}-{target}"], rows[f"bare-{workers}-{target}"]
            assert gateway["body_bytes"] == bare["body_bytes"], "bare serves the gateway's bytes"
            assert gateway["ratios"]["gateway/bare"] > 0
            lookups = gateway["details"]["cache_lookups"]
            assert lookups["hit"] > 0 and set(lookups) <= {"hit", "miss"}, lookups
            if workers == 1:  # warmed before the load: nothing but hits
                assert gateway["details"]["hit_share"] == 1.0, lookups
            else:  # the other worker may meet the key cold once (its own cache)
                assert gateway["ratios"]["2w/1w"] > 0
        if nginx_installed:
            assert rows[f"gateway-{workers}-site"]["ratios"]["gateway/nginx"] > 0
    assert 15_000 <= rows["gateway-1-site"]["body_bytes"] <= 30_000, "a site of about 20 KB"


def test_quick_compare_reports_every_row_and_writes_the_results_file(tmp_path: Path) -> None:
    results_file = tmp_path / "RESULTS.md"
    result = run_compare("--out", str(results_file), "--label", "smoke")

    rows = {row["key"]: row for row in result["rows"]}
    assert [row["key"] for row in result["rows"]] == ALL_KEYS
    check_hit_rows(rows, "wrk" if shutil.which("wrk") else "python")
    assert set(result["machine"]) >= {"cpu", "cores", "memory_gib", "kernel"}
    assert result["versions"]["python"] and result["versions"]["aiohttp"]

    plan = result["plan"]
    upstream, miss = rows["upstream-miss"], rows["gateway-miss"]
    assert upstream["requests"] == miss["requests"] == plan["miss_samples"]
    assert upstream["errors"] == miss["errors"] == 0
    assert upstream["p50_ms"] >= plan["miss_latency"] * 1000, "the simulator's latency applies"
    assert miss["details"]["misses"] == plan["miss_samples"], "purged: every request is cold"
    assert miss["details"]["not_misses"] == 0
    assert miss["details"]["added_p50_ms"] == pytest.approx(miss["p50_ms"] - upstream["p50_ms"])
    assert sum(miss["details"]["upstream_calls_per_request"].values()) >= 1, "a miss goes up"

    fleet = rows["fleet"]["details"]
    expected = plan["fleet_sites"] * plan["fleet_connectors"]
    assert fleet["expected"] == {"sites": plan["fleet_sites"], "connectors": expected}
    assert fleet["first_status"] == 200 and "fwd=miss" in fleet["first_cache_status"]
    assert fleet["all_connectors_reachable"] and fleet["paging"]["distinct_ids"] == expected
    assert fleet["paging"]["pages"] == -(-expected // plan["fleet_page_limit"])
    assert fleet["rss_kib_after"]["VmRSS"] > 0
    assert fleet["redis_log_events"] == [] and fleet["redis_errors_by_operation"] == {}
    assert fleet["gateway_cpu_seconds_during_fill"] >= 0
    assert fleet["readyz"]["redis"] == "up"

    text = results_file.read_text()
    assert text.startswith("# Benchmark results") and "\n## smoke\n" in text
    for row in result["rows"]:
        assert f"| {row['label']} |" in text


def test_quick_compare_falls_back_to_the_python_load_generator() -> None:
    result = run_compare("--loadgen", "python", "--parts", "hits", "--seconds", "0.2")

    rows = {row["key"]: row for row in result["rows"]}
    assert list(rows) == HIT_KEYS
    check_hit_rows(rows, "python")


CODINGS = ("identity", "gzip", "br", "zstd")
ENCODING_KEYS = [f"encoding-1-{t}-{c}" for t in ("list", "site", "page") for c in CODINGS]
TRACING_KEYS = [f"tracing-1-{name}" for name in ("off", "on", "sampled", "down")]


def test_quick_compare_measures_codings_and_tracing() -> None:
    result = run_compare("--parts", "encodings,tracing")

    rows = {row["key"]: row for row in result["rows"]}
    assert list(rows) == [*ENCODING_KEYS, *TRACING_KEYS]
    tool = "wrk" if shutil.which("wrk") else "python"
    for row in rows.values():
        assert row["skipped"] is None and row["tool"] == tool, row["key"]
        assert row["requests"] > 0 and row["errors"] == 0, (row["key"], row)
        assert row["rps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"], row["key"]
        assert row["cpu_us"] >= 0 and row["details"]["hit_share"] == 1.0, row["key"]
    for target in ("list", "site", "page"):
        identity = rows[f"encoding-1-{target}-identity"]
        assert identity["ratios"] == {} and identity["details"]["coding"] == "identity"
        for coding in CODINGS[1:]:
            row = rows[f"encoding-1-{target}-{coding}"]
            assert row["details"]["coding"] == coding
            assert 0 < row["body_bytes"] < identity["body_bytes"], (target, coding)
            assert row["details"]["wire_bytes"] == row["body_bytes"] + row["details"]["head_bytes"]
            ratios = row["ratios"]
            assert ratios["bytes/identity"] == round(row["body_bytes"] / identity["body_bytes"], 3)
            assert ratios["req/s/identity"] > 0 and "identity" in row["ratio"]
    assert 15_000 <= rows["encoding-1-site-identity"]["body_bytes"] <= 30_000

    off, on, sampled, down = (rows[key] for key in TRACING_KEYS)
    assert off["body_bytes"] == on["body_bytes"] == sampled["body_bytes"] == down["body_bytes"]
    assert "otlp_endpoint" not in off["details"] and "spans_received" not in down["details"]
    for row in (on, sampled, down):
        assert row["ratios"]["req/s/off"] > 0 and row["ratio"].endswith(" off")
    for row in (on, sampled):
        details = row["details"]
        assert details["spans_expected"] >= row["requests"] > 0, "a span per request"
        assert 0 <= details["spans_received"] <= details["spans_expected"]
        assert details["sink"]["errors"] == 0
        assert f"spans received {details['spans_received']:,}" in row["notes"]
    assert on["details"]["spans_received"] > 0 and on["details"]["sink"]["exports"] > 0
    assert on["details"]["spans_dropped"] == (
        on["details"]["spans_expected"] - on["details"]["spans_received"]
    )
    assert sampled["details"]["spans_received"] < sampled["details"]["spans_expected"]
    for row in (off, on, sampled, down):
        assert row["details"]["log_bytes_during_runs"] > 0, "INFO: an access line per request"
        assert all(n > 0 for n in row["details"]["log_warnings"].values())
