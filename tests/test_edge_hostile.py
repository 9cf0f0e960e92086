"""Hostile clients at the edge, over real sockets against a real gateway app: slowloris
connections, malformed requests, too many connections, idle keep-alive connections, and
clients that flood the per-client quota or forge `X-Forwarded-For`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway import logs
from gateway.app import create_app
from gateway.app_keys import METRICS
from gateway.metrics import Metrics
from gateway.quota import ClientAddress, ClientQuota
from gateway.server import (
    PRIVATE_SURFACE,
    EdgeLimits,
    EdgeRunner,
    EdgeServer,
    connection_cap,
    raise_file_limit,
)
from gateway.settings import Secret
from tests.conftest import (
    GatewayFactory,
    Simulator,
    eventually,
    free_port,
    metric_value,
    settings_for,
)
from tests.processes import clean_env, running
from tests.rawhttp import close, closed_within, parse_response, read_response

PROBLEM = "application/problem+json"


@dataclasses.dataclass
class Edge:
    runner: EdgeRunner
    port: int
    metrics: Metrics

    @property
    def server(self) -> EdgeServer:
        server = self.runner.edge_server
        assert server is not None
        return server

    def closed(self, reason: str) -> float:
        text = self.metrics.render().decode()
        return metric_value(text, "gateway_http_connections_closed_total", reason=reason)


StartEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def start_edge(simulator: Simulator) -> AsyncIterator[StartEdge]:
    """A gateway app served by the edge server on 127.0.0.1 (the simulator upstream)."""
    runners: list[EdgeRunner] = []

    async def start(
        *,
        header_timeout: float = 10.0,
        keepalive_timeout: float = 75.0,
        max_connections: int = 10_000,
        **overrides: Any,
    ) -> Edge:
        app = create_app(settings_for(simulator, **overrides))
        limits = EdgeLimits(
            header_timeout=header_timeout,
            keepalive_timeout=keepalive_timeout,
            max_connections=max_connections,
        )
        runner = EdgeRunner(
            app, limits=limits, metrics=app[METRICS], access_log=None, shutdown_timeout=2
        )
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
        return Edge(runner, int(runner.addresses[0][1]), app[METRICS])

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    yield stream
    logs.configure("INFO")


# --- slow clients -------------------------------------------------------------------------


async def test_slowloris_is_closed_and_does_not_starve_a_legitimate_client(
    start_edge: StartEdge,
) -> None:
    raise_file_limit()
    edge = await start_edge(header_timeout=1.0)
    loop = asyncio.get_running_loop()
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    connected_at: list[float] = []

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
        started = loop.time()  # the server cannot have accepted it (and started its clock) earlier
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        return reader, writer, started

    for _ in range(6):  # in batches, so the accept backlog never drops a SYN
        for reader, writer, at in await asyncio.gather(*(connect() for _ in range(50))):
            slow.append((reader, writer))
            connected_at.append(at)
    opened = loop.time()
    for _, writer in slow:
        writer.write(b"GET /sites HTTP/1.1\r\nHost: gateway\r\n")
    closed_after: dict[int, float] = {}
    received: dict[int, bytes] = {}

    async def watch(index: int, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            received[index] = await reader.read()
        closed_after[index] = loop.time() - connected_at[index]

    watchers = [asyncio.create_task(watch(i, reader)) for i, (reader, _) in enumerate(slow)]

    async def trickle() -> None:  # one more header byte per connection every 100 ms
        pattern = b"X-Slow: y\r\n"
        step = 0
        while len(closed_after) < len(slow) and loop.time() - opened < 10:
            for index, (_, writer) in enumerate(slow):
                if index not in closed_after and not writer.is_closing():
                    writer.write(pattern[step % len(pattern) : step % len(pattern) + 1])
            step += 1
            await asyncio.sleep(0.1)

    latencies: list[float] = []
    statuses: list[int] = []

    async def legitimate() -> None:  # a fresh connection per request: accepts must not starve
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while loop.time() - opened < 3.0:
                for path in ("/sites/site-0001", "/healthz", "/sites"):
                    started = loop.time()
                    async with session.get(f"http://127.0.0.1:{edge.port}{path}") as response:
                        await response.read()
                        statuses.append(response.status)
                    latencies.append(loop.time() - started)
                await asyncio.sleep(0.05)

    await asyncio.gather(trickle(), legitimate())
    await asyncio.wait_for(asyncio.gather(*watchers), 10)
    await asyncio.gather(*(close(writer) for _, writer in slow))

    assert len(statuses) >= 10 and set(statuses) == {200}
    assert max(latencies) < 2.0, f"a legitimate request waited {max(latencies):.2f} s"
    assert len(closed_after) == 300
    assert min(closed_after.values()) >= 1.0  # not before the header timeout...
    assert max(closed_after.values()) < 5.0  # ...and soon after it
    assert set(received.values()) <= {b""}  # closed without an answer
    assert edge.closed("header_timeout") == 300
    await eventually(_no_connections(edge))


def _no_connections(edge: Edge) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return edge.server.open_connections == 0

    return check


async def test_header_timeout_between_keep_alive_requests(start_edge: StartEdge) -> None:
    edge = await start_edge(header_timeout=0.5, keepalive_timeout=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    request = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    writer.write(request)
    assert (await read_response(reader))[0] == 200
    await asyncio.sleep(1.0)  # idle past the header timeout: only the keep-alive one applies
    writer.write(request)
    assert (await read_response(reader))[0] == 200
    writer.write(b"GET /healthz HTTP/1.1\r\nHo")  # a new request starts, and stalls
    started = asyncio.get_running_loop().time()
    assert await closed_within(reader, 5) == b""
    assert asyncio.get_running_loop().time() - started >= 0.4
    await close(writer)
    assert edge.closed("header_timeout") == 1


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(header_timeout=0.5, keepalive_timeout=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    assert await closed_within(reader, 5) == b""
    await close(writer)
    assert edge.closed("header_timeout") == 1


async def test_idle_keep_alive_connections_are_closed(start_edge: StartEdge) -> None:
    edge = await start_edge(header_timeout=30, keepalive_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    request = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    writer.write(request)
    assert (await read_response(reader))[0] == 200
    writer.write(request)  # within the timeout the connection is reused
    assert (await read_response(reader))[0] == 200
    started = asyncio.get_running_loop().time()
    assert await closed_within(reader, 5) == b""
    assert asyncio.get_running_loop().time() - started >= 0.4
    await close(writer)
    assert edge.closed("header_timeout") == 0
    await eventually(_no_connections(edge))


# --- too many connections -----------------------------------------------------------------


async def test_connections_past_the_bound_are_closed_at_once(
    start_edge: StartEdge, log_stream: io.StringIO
) -> None:
    edge = await start_edge(max_connections=5, header_timeout=30)
    held = [await asyncio.open_connection("127.0.0.1", edge.port) for _ in range(5)]

    async def five_open() -> bool:
        return edge.server.open_connections == 5

    await eventually(five_open)
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            assert await closed_within(reader, 2) == b""
        await close(writer)
    assert edge.server.open_connections == 5
    assert edge.closed("limit") == 3
    limit_lines = [
        line for line in log_stream.getvalue().splitlines() if "connection limit" in line
    ]
    assert len(limit_lines) == 1  # one line per interval, not one per connection

    await close(held.pop()[1])

    async def four_open() -> bool:
        return edge.server.open_connections == 4

    await eventually(four_open)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    await close(writer)
    await asyncio.gather(*(close(other) for _, other in held))


def test_the_connection_bound_leaves_file_descriptors_for_the_rest() -> None:
    assert connection_cap(10_000, 1024) == 1024 - 256
    assert connection_cap(100, 1_000_000) == 100
    assert connection_cap(100, 10) == 1
    soft, hard = raise_file_limit()
    assert soft == hard or hard < 0


# --- malformed requests -------------------------------------------------------------------

HOST = b"Host: gateway\r\n"
PURGE = b"POST /admin/purge HTTP/1.1\r\n" + HOST
MALFORMED: list[tuple[str, bytes, int]] = [
    ("garbage request line", b"GARBAGE\r\n\r\n", 400),
    ("bad version", b"GET / HTTP/9.9\r\n" + HOST + b"\r\n", 400),
    ("bad method", b"G@T / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("NUL in target", b"GET /\x00 HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("CR in target", b"GET /a\rb HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("0xff in target", b"GET /\xff HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("bad absolute target", b"GET http://[::1 HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("space in header name", b"GET / HTTP/1.1\r\n" + HOST + b"Bad Header: v\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\n" + HOST + b"X : v\r\n\r\n", 400),
    ("empty header name", b"GET / HTTP/1.1\r\n" + HOST + b": v\r\n\r\n", 400),
    ("separator in name", b"GET / HTTP/1.1\r\n" + HOST + b"X(y): z\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\n" + HOST + b"X: a\x00b\r\n\r\n", 400),
    ("control in value", b"GET / HTTP/1.1\r\n" + HOST + b"X: a\x01b\r\n\r\n", 400),
    ("obsolete line folding", b"GET / HTTP/1.1\r\n" + HOST + b"X: a\r\n b\r\n\r\n", 400),
    ("LF-only line ends", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("duplicate Host", b"GET / HTTP/1.1\r\n" + HOST + HOST + b"\r\n", 400),
    ("no Host in HTTP/1.1", b"GET /healthz HTTP/1.1\r\n\r\n", 400),
    ("request line too long", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("header value too large", b"GET / HTTP/1.1\r\n" + HOST + b"X: " + b"a" * 9000 + b"\r\n\r\n",
     431),
    ("header name too large", b"GET / HTTP/1.1\r\n" + HOST + b"a" * 9000 + b": v\r\n\r\n", 431),
    ("too many headers",
     b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n",
     431),
    ("bad chunk size", PURGE + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n\r\n", 400),
    ("chunk overflow", PURGE + b"Transfer-Encoding: chunked\r\n\r\n" + b"F" * 20 + b"\r\n", 400),
    ("chunk without CRLF", PURGE + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
     400),
    ("Content-Length with chunked",
     PURGE + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("Content-Length not a number", PURGE + b"Content-Length: abc\r\n\r\n", 400),
    ("negative Content-Length", PURGE + b"Content-Length: -1\r\n\r\n", 400),
    ("two Content-Lengths", PURGE + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    ("chunked not last", PURGE + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("unknown transfer coding", PURGE + b"Transfer-Encoding: bogus\r\n\r\n", 400),
    ("TLS on the HTTP port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(64)),
     400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
]  # fmt: skip


async def test_malformed_requests_get_a_quiet_problem_answer(
    start_edge: StartEdge, log_stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    edge = await start_edge(header_timeout=5)
    answered: list[tuple[str, int, str]] = []
    kinds = [MALFORMED[i % len(MALFORMED)] for i in range(100)]
    for name, data, expected in kinds:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(data)
        try:
            raw = await closed_within(reader, 5)
        except ConnectionResetError:
            raw = b""  # closed is an acceptable answer too
        await close(writer)
        if not raw:
            continue
        status, headers, body = await parse_response(raw)
        assert status == expected, name
        assert headers["content-type"] == PROBLEM, name
        assert headers["connection"].lower() == "close", name
        problem = orjson.loads(body)
        assert set(problem) == {"type", "title", "status", "detail", "request_id"}, name
        assert problem["status"] == expected, name
        answered.append((name, status, problem["request_id"]))
    assert len(answered) >= 90  # nearly all are answered, not just dropped

    text = log_stream.getvalue()
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert "Traceback" not in text
    assert not [line for line in lines if line["level"] in ("error", "critical")]
    assert not [record for record in caplog.records if record.exc_info]
    assert not [record for record in caplog.records if record.name == "aiohttp.server"]
    malformed = [line for line in lines if line["msg"].startswith("malformed request")]
    assert len(malformed) == len(kinds)  # one line per error, never more
    assert all(line["level"] in ("info", "warning") for line in malformed)
    assert all(len(line.get("detail", "")) <= 100 for line in malformed)
    logged_ids = {line.get("request_id") for line in malformed}
    assert {request_id for _, _, request_id in answered} <= logged_ids
    assert len(text) < 100 * 400  # short lines: a flood of garbage cannot flood the logs
    assert edge.closed("malformed") == len(kinds)


async def test_a_parse_error_after_a_good_request_on_the_same_connection(
    start_edge: StartEdge, log_stream: io.StringIO
) -> None:
    edge = await start_edge()
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
    status, _, _ = await read_response(reader)
    assert status == 200
    writer.write(b"NONSENSE\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 400 and headers["content-type"] == PROBLEM
    assert await closed_within(reader, 5) == b""
    await close(writer)


ADMIN = b"Authorization: Bearer adm-token-1\r\n"


@pytest.mark.parametrize(
    ("admin", "status"), [(True, 400), (False, 404)], ids=["read-by-handler", "drained-after"]
)
async def test_a_body_that_cannot_be_decoded_is_one_quiet_line(
    start_edge: StartEdge,
    log_stream: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    admin: bool,
    status: int,
) -> None:
    edge = await start_edge(admin_token=Secret("adm-token-1") if admin else None)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(PURGE + (ADMIN if admin else b"") + b"Content-Encoding: gzip\r\n"
                 b"Content-Length: 5\r\n\r\nhello")  # fmt: skip
    answer, headers, _ = await read_response(reader)
    assert answer == status and headers["content-type"] == PROBLEM
    assert await closed_within(reader, 5) == b""
    await close(writer)
    _assert_one_quiet_line(log_stream.getvalue(), caplog, "malformed request body")


def _assert_one_quiet_line(text: str, caplog: pytest.LogCaptureFixture, message: str) -> None:
    assert "Traceback" not in text and '"level":"error"' not in text
    assert not [record for record in caplog.records if record.exc_info]
    assert sum(f'"msg":"{message}"' in line for line in text.splitlines()) == 1


async def test_bad_chunking_inside_a_body_being_read_is_answered_at_once(
    start_edge: StartEdge, log_stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    edge = await start_edge(admin_token=Secret("adm-token-1"), header_timeout=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(PURGE + ADMIN + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n")
    await eventually(lambda: edge.server.requests_count == 1)  # its handler reads the body
    writer.write(b"ZZ\r\n\r\n")
    status, headers, body = await asyncio.wait_for(read_response(reader), 5)
    assert status == 400 and headers["content-type"] == PROBLEM
    assert orjson.loads(body)["detail"] == "the request body is malformed or cannot be decoded"
    assert await closed_within(reader, 5) == b""
    await close(writer)
    _assert_one_quiet_line(log_stream.getvalue(), caplog, "malformed request body")


async def test_a_body_must_follow_its_head_in_time(
    start_edge: StartEdge, log_stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    edge = await start_edge(admin_token=Secret("adm-token-1"), header_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(PURGE + ADMIN + b"Content-Length: 2\r\n\r\n{")
    await eventually(lambda: edge.server.requests_count == 1)  # its handler reads the body
    writer.write(b"}")  # in time, in two parts: fine
    assert (await read_response(reader))[0] == 200
    writer.write(PURGE + ADMIN + b"Content-Length: 50\r\n\r\n{")  # and the rest never comes
    assert await closed_within(reader, 5) == b""
    await close(writer)
    assert edge.closed("body_timeout") == 1
    text = log_stream.getvalue()
    assert "Traceback" not in text and '"level":"error"' not in text
    assert not [record for record in caplog.records if record.exc_info]
    access = [orjson.loads(line) for line in text.splitlines() if "gateway.access" in line]
    assert [line["status"] for line in access] == [200, 499]
    assert access[1]["error"] == "client-closed"


async def test_the_aiohttp_internals_the_edge_relies_on_are_there() -> None:
    """Fails loudly when an aiohttp upgrade changes what `gateway/server.py` uses."""

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(handler)
    protocol = RequestHandler(server, loop=asyncio.get_running_loop())
    instances: dict[type, object] = {web.Server: server, RequestHandler: protocol}
    for owner, attribute in PRIVATE_SURFACE:
        target = instances.get(owner, owner)
        assert hasattr(target, attribute), f"aiohttp {owner.__name__}.{attribute} is gone"
    assert isinstance(protocol._request_count, int)
    assert isinstance(protocol._request_in_progress, bool)
    assert len(protocol._messages) == 0
    assert {"request_factory", "handler_cancellation"} <= set(
        inspect.signature(web.Server.__init__).parameters
    )
    assert list(inspect.signature(RequestHandler.handle_error).parameters) == [
        "self",
        "request",
        "status",
        "exc",
        "message",
    ]
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)


# --- who a client is, and its quota -------------------------------------------------------


def test_quota_buckets_refill() -> None:
    now = [0.0]
    quota = ClientQuota(2, clock=lambda: now[0])  # burst of 4
    assert [quota.take("a") for _ in range(4)] == [0.0] * 4
    assert quota.take("a") == pytest.approx(0.5)
    assert quota.take("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert quota.take("a") == 0.0


def test_a_flood_of_distinct_clients_does_not_grow_memory_without_bound() -> None:
    now = [0.0]
    quota = ClientQuota(10, max_clients=1000, clock=lambda: now[0])
    for index in range(200_000):
        quota.take(f"10.{index >> 16}.{(index >> 8) & 255}.{index & 255}")
        assert len(quota) <= 1000
    now[0] += 5  # every bucket has refilled: the same as no bucket
    quota.take("192.0.2.1")
    assert len(quota) == 1


def test_idle_buckets_are_dropped_once_full() -> None:
    now = [0.0]
    quota = ClientQuota(1, clock=lambda: now[0])  # burst 2: refilled after 2 s idle
    quota.take("a")
    now[0] = 0.5
    quota.take("b")
    assert len(quota) == 2
    now[0] = 1.2  # "a" is full again (1 + 1.2 tokens), "b" is not (1 + 0.7)
    quota.take("c")
    assert len(quota) == 2


class _Peer:
    """Just what `ClientAddress` reads of a request."""

    def __init__(self, remote: str, forwarded: list[str]) -> None:
        self.remote = remote
        self.headers = _Headers(forwarded)


class _Headers:
    def __init__(self, forwarded: list[str]) -> None:
        self._forwarded = forwarded

    def getall(self, name: str, default: Any) -> list[str]:
        assert name == "X-Forwarded-For"
        return self._forwarded or default


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "client"),
    [
        ((), "203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # no proxies: header ignored
        (("10.0.0.0/8",), "203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # peer untrusted
        (("10.0.0.0/8",), "10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        (("10.0.0.0/8",), "10.1.2.3", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # forged left
        (("10.0.0.0/8",), "10.1.2.3", ["6.6.6.6", "198.51.100.1, 10.9.9.9"], "198.51.100.1"),
        (("10.0.0.0/8",), "10.1.2.3", ["198.51.100.1:4711"], "198.51.100.1"),
        (("10.0.0.0/8",), "10.1.2.3", ["[2001:db8::1]:443"], "2001:db8::1"),
        (("10.0.0.0/8",), "::ffff:10.1.2.3", ["2001:db8::2"], "2001:db8::2"),
        (("10.0.0.0/8",), "10.1.2.3", ["6.6.6.6, unknown"], "10.1.2.3"),  # garbage: distrust
        (("10.0.0.0/8",), "10.1.2.3", ["10.4.4.4"], "10.1.2.3"),  # only proxies
        (("10.0.0.0/8",), "10.1.2.3", [], "10.1.2.3"),
    ],
)
def test_client_address(
    trusted: tuple[str, ...], peer: str, forwarded: list[str], client: str
) -> None:
    assert ClientAddress(trusted)(_Peer(peer, forwarded)) == client  # type: ignore[arg-type]


async def _statuses(gw: Any, count: int, headers: dict[str, str]) -> list[int]:
    return [(await gw.get("/sites/site-0001", headers=headers)).status for _ in range(count)]


async def test_quota_by_address_ignores_forwarded_for_from_untrusted_peers(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator, client_rps=1))  # burst 2
    assert await _statuses(gw, 2, {"X-Forwarded-For": "198.51.100.1"}) == [200, 200]
    over = await gw.get("/sites/site-0001", headers={"X-Forwarded-For": "198.51.100.2"})
    assert over.status == 429 and "Retry-After" in over.headers


async def test_quota_by_forwarded_address_behind_a_trusted_proxy(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        settings_for(simulator, client_rps=1, trusted_proxies=("127.0.0.1/32",))
    )
    first = {"X-Forwarded-For": "198.51.100.1"}
    assert await _statuses(gw, 2, first) == [200, 200]
    assert await _statuses(gw, 1, first) == [429]
    forged = {"X-Forwarded-For": "192.0.2.99, 198.51.100.1"}
    assert await _statuses(gw, 1, forged) == [429]  # the forged entry does not help
    assert await _statuses(gw, 2, {"X-Forwarded-For": "198.51.100.2"}) == [200, 200]


async def test_quota_by_token_name(simulator: Simulator, make_gateway: GatewayFactory) -> None:
    tokens = {"alpha": Secret("tok-alpha"), "beta": Secret("tok-beta")}
    gw = await make_gateway(settings_for(simulator, client_rps=1, client_tokens=tokens))
    alpha = {"Authorization": "Bearer tok-alpha", "X-Forwarded-For": "198.51.100.1"}
    assert await _statuses(gw, 3, alpha) == [200, 200, 429]
    beta = {"Authorization": "Bearer tok-beta", "X-Forwarded-For": "198.51.100.1"}
    assert await _statuses(gw, 2, beta) == [200, 200]


async def test_access_line_names_the_client(
    simulator: Simulator, make_gateway: GatewayFactory, log_stream: io.StringIO
) -> None:
    gw = await make_gateway(settings_for(simulator))
    await gw.get("/healthz")
    await gw.get("/sites/site-0001")
    lines = [orjson.loads(line) for line in log_stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert [line["client"] for line in access] == ["-", "127.0.0.1"]


# --- the same in the real process (uvloop, the runner `python -m gateway` builds) -------


async def test_the_edge_of_the_real_process(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(CHARGEPILOT_BASE_URL="http://127.0.0.1:9/rest/v1",
                    CHARGEPILOT_API_KEY="k", CHARGEPILOT_API_SECRET="s",
                    GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port),
                    GATEWAY_HEADER_TIMEOUT="2", GATEWAY_MAX_CONNECTIONS="3")  # fmt: skip
    log_path = tmp_path / "gateway.log"
    loop = asyncio.get_running_loop()
    with running(["gateway"], env, log_path, ports=(port,)):
        # The header clock starts when a connection opens: measured from before the first.
        opened = loop.time()
        stalled = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for _, writer in stalled:
            writer.write(b"GET /healthz HTTP/1.1\r\nHo")
        started = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with contextlib.suppress(ConnectionResetError):
            assert await closed_within(reader, 5) == b""
        assert loop.time() - started < 1.5  # at once: not by the header timeout
        await close(writer)
        for stalled_reader, _ in stalled:
            assert await closed_within(stalled_reader, 10) == b""
        assert loop.time() - opened >= 2
        await asyncio.gather(*(close(writer) for _, writer in stalled))

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n" + HOST + b"X: " + b"a" * 9000 + b"\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert status == 431 and headers["content-type"] == PROBLEM
        await close(writer)
    lines = [orjson.loads(line) for line in log_path.read_text().splitlines()]
    limit = next(line for line in lines if line["msg"] == "file limit")
    assert limit["max_connections"] == 3 and limit["soft_limit"] == limit["hard_limit"]
    assert [line["status"] for line in lines if line["msg"] == "malformed request"] == [431]
    assert not [line for line in lines if "exception" in line or line["level"] == "error"]
