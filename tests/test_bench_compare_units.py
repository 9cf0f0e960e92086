"""The pure parts of `bench/compare.py`: wrk parsing, request signing (checked against the
simulator's own verifier, which shares no code with the bench), the nginx config, ratios,
rotated runs, the results file's sections, the profile summary, and the OTLP sink."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import codings  # noqa: E402
import hits  # noqa: E402
import hotspots  # noqa: E402
import loadgen  # noqa: E402
import model  # noqa: E402
import nginx  # noqa: E402
import otlp_sink  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
import traced  # noqa: E402
from upstream_auth import signed_headers  # noqa: E402

from gateway.simulator.app import check_signature  # noqa: E402
from gateway.simulator.state import SimulatorConfig  # noqa: E402

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:41234/sites/site-0001
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.01ms    1.20ms  40.11ms   90.00%
    Req/Sec    10.70k   500.00    11.50k    70.00%
  Latency Distribution
     50%    5.80ms
     75%    6.20ms
     90%    7.00ms
     99%  812.00us
  53250 requests in 5.00s, 1.02GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  10650.00
Transfer/sec:    208.00MB
"""


def test_wrk_output_is_parsed_with_units_and_errors() -> None:
    load = loadgen.parse_wrk(WRK_OUTPUT)

    assert load == loadgen.Load(
        tool="wrk", requests=53250, errors=7, seconds=5.0, rps=10650.0, p50_ms=5.8, p99_ms=0.812
    )
    with pytest.raises(ValueError):
        loadgen.parse_wrk("unable to connect to 127.0.0.1:9 Connection refused")


def test_wrk_runs_last_whole_seconds() -> None:
    assert loadgen.run_seconds("wrk", 0.3) == 1.0
    assert loadgen.run_seconds("wrk", 2.6) == 3.0
    assert loadgen.run_seconds("python", 0.3) == 0.3


def test_signed_headers_pass_the_simulators_check_for_that_exact_path() -> None:
    config = SimulatorConfig(api_key="k", api_secret="s")
    path = "/rest/v1/sites/site-0001"
    headers = signed_headers("k", "s", path, now=1_000_000)

    assert check_signature(config, "GET", path, headers, "", 1_000_100) is None
    assert check_signature(config, "GET", path + "x", headers, "", 1_000_100) is not None
    assert check_signature(config, "GET", path, headers, "", 1_000_400) is not None  # too old
    assert check_signature(SimulatorConfig(api_key="k", api_secret="t"), "GET", path, headers,
                           "", 1_000_100) is not None  # fmt: skip


def test_nginx_config_signs_each_exact_upstream_path(tmp_path: Path) -> None:
    text = nginx.config_text(tmp_path, port=8081, upstream_port=9001, paths=["/sites/a"],
                             workers=2, api_key="k", secret="s", now=1_000_000)  # fmt: skip
    expected = signed_headers("k", "s", "/rest/v1/sites/a", now=1_000_000)

    assert "location = /sites/a {" in text
    assert "proxy_pass http://simulator/rest/v1/sites/a;" in text
    assert "server 127.0.0.1:9001;" in text and "listen 127.0.0.1:8081;" in text
    for name, value in expected.items():
        assert f'proxy_set_header {name} "{value}";' in text
    assert "worker_processes 2;" in text and "daemon off;" in text
    assert f"pid {tmp_path}/nginx.pid;" in text
    if shutil.which("nginx") is not None:  # the real parser agrees it is valid
        nginx.write_config(tmp_path, text)
        nginx.check_config(tmp_path)
        done = subprocess.run([*nginx.command(tmp_path), "-T"], capture_output=True, text=True)
        assert "proxy_cache bench;" in done.stdout


def row(key: str, rps: float | None, cpu_us: float | None = None) -> model.Row:
    kind, workers, _ = key.split("-", 2)
    return model.Row(key=key, label=key, kind=kind, workers=int(workers), rps=rps, cpu_us=cpu_us)


def test_ratios_pair_rows_of_the_same_workers_and_target() -> None:
    rows = [row("gateway-1-site", 50.0, 40.0), row("bare-1-site", 100.0, 20.0),
            row("nginx-1-site", 200.0, 10.0), row("gateway-2-site", 90.0),
            row("bare-2-site", 180.0), row("nginx-2-site", None),
            row("gateway-1-page", 10.0)]  # fmt: skip
    model.add_ratios(rows)

    assert rows[0].ratios == {"gateway/bare": 0.5, "cpu gateway/bare": 2.0,
                              "gateway/nginx": 0.25, "cpu gateway/nginx": 4.0}  # fmt: skip
    assert rows[0].ratio == "0.50x bare, 0.25x nginx; CPU/req 2.0x bare, 4.0x nginx"
    assert rows[3].ratios == {"gateway/bare": 0.5, "2w/1w": 1.8}
    assert rows[3].ratio == "0.50x bare, 1.80x 1 worker"
    assert rows[4].ratios == {"2w/1w": 1.8}
    assert rows[5].ratios == {} and rows[6].ratios == {}  # not run; no bare page row


def test_tables_show_every_row_and_why_one_was_not_run() -> None:
    rows = [row("gateway-1-site", 1234.5), row("nginx-1-site", None)]
    rows[1].skipped = "nginx is not installed"

    text, markdown = model.text_table(rows), model.markdown_table(rows)
    assert "1,234" in text and "not run: nginx is not installed" in text
    assert markdown.count("\n") == 3 and "| nginx-1-site | - | - | - | - | - | - |" in markdown


def test_results_file_sections_are_replaced_or_appended(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    report.write_section(path, "baseline", "## baseline\n\nold numbers\n")
    report.write_section(path, "after", "## after\n\n### detail\nnew numbers\n")
    report.write_section(path, "baseline", "## baseline\n\nfixed numbers\n")

    text = path.read_text()
    assert text.startswith(report.TITLE)
    assert text.count("## baseline") == 1 and "old numbers" not in text
    assert text.index("fixed numbers") < text.index("## after") < text.index("### detail")


COLLAPSED = """\
<module> (m.py:1);main (m.py:5);handle (h.py:10);log (logging/__init__.py:3) 30
<module> (m.py:1);main (m.py:5);handle (h.py:12) 50
<module> (m.py:1);main (m.py:6);write (w.py:2) 20
"""


def test_profile_summary_counts_own_and_inclusive_samples() -> None:
    summary = hotspots.summarize(COLLAPSED, top=3)

    assert summary.samples == 100
    assert summary.own == [("handle (h.py)", 50), ("log (logging/__init__.py)", 30),
                           ("write (w.py)", 20)]  # fmt: skip
    assert summary.trunk == ["<module> (m.py)", "main (m.py)"]  # on every stack
    assert summary.inclusive[0] == ("handle (h.py)", 80)
    assert dict(summary.files) == {"h.py": 50, "logging/__init__.py": 30, "w.py": 20}
    assert "| 50.0% | 50 | `handle (h.py)` |" in hotspots.markdown(summary, "context")


def test_a_load_header_is_name_colon_value() -> None:
    assert loadgen.parse_header("Accept-Encoding: gzip") == ("Accept-Encoding", "gzip")
    assert loadgen.parse_header("X-A:b:c") == ("X-A", "b:c")
    for bad in ("no colon", ": value"):
        with pytest.raises(ValueError):
            loadgen.parse_header(bad)


def test_rotated_runs_take_turns_and_keep_each_configurations_median(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order: list[tuple[str, str | None]] = []
    rps = {"a": iter([30.0, 10.0, 20.0]), "b": iter([5.0, 7.0, 6.0])}

    def fake_load(url: str, **options: object) -> loadgen.Load:
        headers = options["headers"]
        order.append((url, None if headers is None else str(headers)))
        value = next(rps[url])
        return loadgen.Load("wrk", int(value * 10), 0, 1.0, value, 1.0, 2.0)

    monkeypatch.setattr(hits, "run_load", fake_load)
    plan = model.Plan(quick=True, tool="wrk", nginx=False, cpus=procs.Cpus(None, None),
                      source=BENCH.parent, rounds=3)  # fmt: skip
    targets = [hits.Target("a", [], {"Accept-Encoding": "gzip"}), hits.Target("b", [])]
    first, second = hits.measure_rotated(targets, plan, None)

    assert [url for url, _ in order] == ["a", "b"] * 3
    assert order[0][1] == "{'Accept-Encoding': 'gzip'}" and order[1][1] is None
    assert first.rounds == [30.0, 10.0, 20.0] and first.load.rps == 20.0
    assert second.rounds == [5.0, 7.0, 6.0] and second.load.rps == 6.0


def test_ratios_of_codings_and_tracing_rows_are_their_own() -> None:
    identity, gzip_row = (
        row("encoding-1-site-identity", 100.0, 20.0),
        row("encoding-1-site-gzip", 90.0, 30.0),
    )
    identity.body_bytes, gzip_row.body_bytes = 20_000, 1_500
    identity.p99_ms, gzip_row.p99_ms = 2.0, 3.0
    codings.add_identity_ratios([identity, gzip_row], identity)
    off, on, down = (row(f"tracing-1-{name}", rps, cpu) for name, rps, cpu in
                     (("off", 100.0, 10.0), ("on", 80.0, 15.0), ("down", 50.0, None)))  # fmt: skip
    traced.add_off_ratios({"off": off, "on": on, "down": down})  # any number of configurations
    model.add_ratios([identity, gzip_row, off, on, down])  # leaves them as they are

    assert identity.ratios == {} and identity.ratio == ""
    assert gzip_row.ratios == {"bytes/identity": 0.075, "req/s/identity": 0.9,
                               "p99/identity": 1.5, "cpu/identity": 1.5}  # fmt: skip
    assert gzip_row.ratio == "bytes 0.075x, 0.90x req/s, CPU/req 1.50x identity"
    assert on.ratios == {"req/s/off": 0.8, "cpu/off": 1.5} and off.ratios == {}
    assert on.ratio == "0.80x req/s, CPU/req 1.50x off"
    assert down.ratio == "0.50x req/s off"


def test_warning_lines_are_counted_by_logger_and_message() -> None:
    log = b"\n".join([
        b'{"level":"info","logger":"gateway.access","msg":"GET /sites/x 200"}',
        b'{"level":"warning","logger":"otel","msg":"Queue full, dropping Span."}',
        b'{"level":"warning","logger":"otel","msg":"Queue full, dropping Span."}',
        b'{"level":"error","logger":"otel","msg":"' + b"x" * 300 + b'"}',
        b'{"level":"warning", not json',
    ])  # fmt: skip

    assert traced.warnings_in(log) == {"otel: Queue full, dropping Span.": 2,
                                       f"otel: {'x' * 100}": 1}  # fmt: skip


async def test_the_otlp_sink_counts_spans_by_name(aiohttp_client: Any) -> None:
    client = await aiohttp_client(otlp_sink.make_app())
    export = ExportTraceServiceRequest()
    scope = export.resource_spans.add().scope_spans.add()
    for name in ("GET /sites/{id}", "GET /sites/{id}", "GET /readyz"):
        scope.spans.add(name=name)
    body = export.SerializeToString()

    for data, headers in ((body, {}), (gzip.compress(body), {"Content-Encoding": "gzip"})):
        answer = await client.post("/v1/traces", data=data, headers=headers)
        assert answer.status == 200
    assert (await client.post("/v1/traces", data=b"\xff\xff not protobuf")).status == 400
    stats = await (await client.get("/stats")).json()

    assert stats["exports"] == 3 and stats["errors"] == 1 and stats["spans"] == 6
    assert stats["spans_by_name"] == {"GET /sites/{id}": 4, "GET /readyz": 2}
    assert stats["bytes"] == 2 * len(body) + 15, "bodies counted as decoded"
