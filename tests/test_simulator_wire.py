"""What the simulator puts on and reads off the wire beyond signing: content codings, the
call log's header detail, the EU/US account fleets, and the command line.

Compressed bodies are decoded here with the codec packages directly (``gzip``, ``brotli``,
``backports.zstd``), with the client's own decompression off, so the simulator's encoding
is checked independently of aiohttp's decoding; one test then checks aiohttp's decoding.
"""

from __future__ import annotations

import asyncio
import gzip
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import aiohttp.compression_utils
import brotli
import orjson
import pytest
from aiohttp.test_utils import TestServer

from gateway.simulator import (
    SIM_STATE,
    SimulatorConfig,
    create_simulator_app,
    demo_fleet,
    eu_fleet,
    iter_connectors,
    us_fleet,
)
from gateway.simulator.compression import negotiate
from tests.test_simulator import _free_port, sign

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "zstd": zstd.decompress,
}
MakeServer = Callable[..., Awaitable[TestServer]]


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("deflate", None),
        ("gzip", "gzip"),
        ("GZip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "zstd"),  # aiohttp's own default: equal q, zstd first
        ("gzip, br", "br"),
        ("br;q=0.5, gzip", "gzip"),
        ("zstd;q=0.2, br;q=0.9, gzip;q=0.5", "br"),
        ("gzip;q=0", None),
        ("*", "zstd"),
        ("zstd;q=0, *;q=0.1", "br"),
        ("zstd;q=0, br;q=0, *", "gzip"),
        ("gzip;q=bad", None),
        ("gzip;q=2", None),
        (" br ; q=0.8 , identity", "br"),
    ],
)
def test_negotiation(header: str | None, coding: str | None) -> None:
    assert negotiate(header) == coding


@pytest.fixture
async def raw_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that neither adds Accept-Encoding nor decodes: the test sees raw bytes."""
    async with aiohttp.ClientSession(
        auto_decompress=False, skip_auto_headers=["Accept-Encoding"]
    ) as session:
        yield session


async def raw_get(
    session: aiohttp.ClientSession, server: TestServer, path: str, accept: str | None
) -> tuple[int, dict[str, str], bytes]:
    headers = sign(path) | ({"Accept-Encoding": accept} if accept is not None else {})
    async with session.get(server.make_url(path), headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize(
    "path", ["/rest/v1/sites", "/rest/v1/sites/site-0006"], ids=["large-list", "one-site"]
)
async def test_answers_are_compressed_as_asked(
    aiohttp_server: MakeServer, raw_session: aiohttp.ClientSession, coding: str, path: str
) -> None:
    server = await aiohttp_server(create_simulator_app(), host="127.0.0.1")
    status, headers, body = await raw_get(raw_session, server, path, coding)
    assert status == 200
    assert headers["Content-Encoding"] == coding
    assert headers["Vary"] == "Accept-Encoding"
    assert int(headers["Content-Length"]) == len(body)
    plain = orjson.loads(DECODERS[coding](body))
    expected = demo_fleet() if path == "/rest/v1/sites" else demo_fleet()[5]
    assert plain == expected
    assert len(body) < len(orjson.dumps(expected))
    # The call log keeps what the client accepted.
    assert server.app[SIM_STATE].calls[-1].accept_encoding == coding


async def test_errors_and_events_are_compressed_too(
    aiohttp_server: MakeServer, raw_session: aiohttp.ClientSession
) -> None:
    server = await aiohttp_server(create_simulator_app(), host="127.0.0.1")
    path = "/rest/v1/charging-events/site/site-0002?take=50"
    status, headers, body = await raw_get(raw_session, server, path, "br")
    assert (status, headers["Content-Encoding"]) == (200, "br")
    assert orjson.loads(brotli.decompress(body))["count"] == 50
    status, headers, body = await raw_get(raw_session, server, "/rest/v1/sites/nope", "zstd")
    assert (status, headers["Content-Encoding"]) == (404, "zstd")
    assert orjson.loads(zstd.decompress(body)) == {"error": "not found"}


@pytest.mark.parametrize("accept", [None, "identity", "deflate", "gzip;q=0"])
async def test_identity_when_nothing_acceptable(
    aiohttp_server: MakeServer, raw_session: aiohttp.ClientSession, accept: str | None
) -> None:
    server = await aiohttp_server(create_simulator_app(), host="127.0.0.1")
    status, headers, body = await raw_get(raw_session, server, "/rest/v1/sites", accept)
    assert status == 200
    assert "Content-Encoding" not in headers
    assert headers["Vary"] == "Accept-Encoding"
    assert orjson.loads(body) == demo_fleet()


async def test_compress_knob_off(
    aiohttp_server: MakeServer, raw_session: aiohttp.ClientSession
) -> None:
    app = create_simulator_app(SimulatorConfig(compress=False))
    server = await aiohttp_server(app, host="127.0.0.1")
    status, headers, body = await raw_get(raw_session, server, "/rest/v1/sites", "gzip, br, zstd")
    assert status == 200 and "Content-Encoding" not in headers and "Vary" not in headers
    assert orjson.loads(body) == demo_fleet()
    with pytest.raises(ValueError, match="compress"):
        SimulatorConfig(compress="yes")  # type: ignore[arg-type]


async def test_aiohttp_client_decodes_br_and_zstd(aiohttp_server: MakeServer) -> None:
    """aiohttp 3.14 decodes br with ``brotli`` and zstd with ``backports.zstd`` (not with
    ``zstandard``); with both installed its default Accept-Encoding offers them."""
    assert aiohttp.compression_utils.HAS_BROTLI and aiohttp.compression_utils.HAS_ZSTD
    server = await aiohttp_server(create_simulator_app(), host="127.0.0.1")
    state = server.app[SIM_STATE]
    async with aiohttp.ClientSession() as session:
        for accept, coding in [(None, "zstd"), ("br", "br"), ("zstd", "zstd"), ("gzip", "gzip")]:
            headers = sign("/rest/v1/sites") | ({"Accept-Encoding": accept} if accept else {})
            async with session.get(server.make_url("/rest/v1/sites"), headers=headers) as resp:
                assert resp.headers["Content-Encoding"] == coding
                assert await resp.json() == demo_fleet()
    assert state.calls[0].accept_encoding == "gzip, deflate, br, zstd"


async def test_call_log_records_key_trace_and_encoding(
    aiohttp_server: MakeServer, raw_session: aiohttp.ClientSession
) -> None:
    server = await aiohttp_server(create_simulator_app(), host="127.0.0.1")
    state = server.app[SIM_STATE]
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    url = server.make_url("/rest/v1/sites/site-0001")
    good = sign("/rest/v1/sites/site-0001")
    async with raw_session.get(url, headers=good | {"traceparent": trace}) as response:
        assert response.status == 200
    async with raw_session.get(url, headers=good | {"Accept-Encoding": "br"}) as response:
        assert response.status == 200
    wrong = sign("/rest/v1/sites/site-0001", key="someone-else")
    async with raw_session.get(url, headers=wrong) as response:
        assert response.status == 401
    async with raw_session.get(url) as response:
        assert response.status == 401
    assert [(c.api_key, c.traceparent, c.accept_encoding, c.outcome) for c in state.calls] == [
        ("demo-key", trace, None, 200),
        ("demo-key", None, "br", 200),
        ("someone-else", None, None, 401),
        (None, None, None, 401),
    ]
    assert state.count_by_api_key() == {"demo-key": 2, "someone-else": 1, None: 1}
    async with raw_session.get(server.make_url("/_sim/stats")) as response:
        stats = await response.json()
    assert stats["by_api_key"] == {"demo-key": 2, "someone-else": 1, "": 1}


def test_eu_and_us_fleets_share_exactly_one_site_id() -> None:
    eu, us = eu_fleet(), us_fleet()
    assert (len(eu), len(us)) == (6, 5)
    assert [s["id"] for s in eu][:5] == [f"eu-site-{n:04d}" for n in range(1, 6)]
    assert [s["id"] for s in us][:4] == [f"us-site-{n:04d}" for n in range(1, 5)]
    assert {s["id"] for s in eu} & {s["id"] for s in us} == {"shared-site-0001"}
    shared_eu = next(s for s in eu if s["id"] == "shared-site-0001")
    shared_us = next(s for s in us if s["id"] == "shared-site-0001")
    assert shared_eu != shared_us and shared_eu["name"] != shared_us["name"]

    def ids(fleet: list[dict[str, Any]], field: str) -> set[str]:
        return {c[field] for site in fleet for c in iter_connectors(site)}

    for field in ("id", "charging_station_id"):
        assert ids(eu, field) and not ids(eu, field) & ids(us, field)
        assert not ids(eu, field) & ids(demo_fleet(), field)
    assert all(s["timezone"].startswith("Europe/") for s in eu)
    assert all(s["timezone"].startswith("America/") for s in us)
    assert eu_fleet() == eu and us_fleet() == us


async def _run_cli(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.simulator", "--port", str(port), *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), 10)
    return process, port


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_command_line_fleets_and_changes() -> None:
    eu_process, eu_port = await _run_cli("--fleet", "eu", "--key", "eu-k", "--secret", "eu-s")
    us_process, us_port = await _run_cli(
        "--fleet", "us", "--key", "us-k", "--secret", "us-s",
        "--change-interval", "0.05", "--no-compress",
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{eu_port}/rest/v1/sites"
            headers = sign("/rest/v1/sites", key="eu-k", secret="eu-s")
            async with session.get(url, headers=headers) as response:
                assert response.status == 200
                assert response.headers["Content-Encoding"] == "zstd"
                assert [s["id"] for s in await response.json()] == [s["id"] for s in eu_fleet()]
            wrong = sign("/rest/v1/sites", key="us-k", secret="us-s")
            async with session.get(url, headers=wrong) as response:
                assert response.status == 401

            stats_url = f"http://127.0.0.1:{us_port}/_sim/stats"
            for _ in range(200):
                async with session.get(stats_url) as response:
                    stats = await response.json()
                if stats["mutations"] >= 2:
                    break
                await asyncio.sleep(0.05)
            assert stats["mutations"] >= 2
            assert stats["config"]["change_interval"] == 0.05
            assert stats["config"]["compress"] is False
            assert stats["config"]["seed"] == 1
    finally:
        await _stop(eu_process)
        await _stop(us_process)


def test_help_lists_the_new_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.simulator.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--fleet", "{demo,eu,odd,us}", "--change-interval", "--no-compress", "--sites"):
        assert flag in text
    with pytest.raises(SystemExit):
        parse_args(["--port", "1", "--fleet", "eu", "--sites", "3"])
