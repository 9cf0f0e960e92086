"""The HTTP edge server: aiohttp's connection handling, hardened against hostile clients.

aiohttp closes idle keep-alive connections (`GATEWAY_KEEPALIVE_TIMEOUT`), but it has no
header timeout, no bound on open connections, and it answers a request it cannot parse
with a text/plain 400 and an ERROR log line carrying a traceback.  This module adds, per
process:

- a header timeout: a connection that has not sent a complete request head within
  `GATEWAY_HEADER_TIMEOUT` of opening, or of the first byte of its next request, is closed
  (slowloris clients that trickle header bytes cannot hold connections open);
- a connection bound (`GATEWAY_MAX_CONNECTIONS`, capped below the file limit): past it a
  new connection is closed at once, before any byte is read;
- quiet parser errors: a bad request line, an invalid header, bad body framing answer an
  `application/problem+json` 400 (431 for header fields too large or too many), with
  `Connection: close` and one INFO line of at most `CLIENT_BYTES_LOGGED` client bytes.

It is wired in by `EdgeRunner`, an `AppRunner` whose server makes `EdgeRequestHandler`s.
The private parts of aiohttp it relies on are listed in `PRIVATE_SURFACE`; a test checks
each against the installed aiohttp, so an upgrade that changes them fails loudly.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from .errors import BadRequest, GatewayError, HeaderFieldsTooLarge
from .logs import request_id_var
from .metrics import Metrics
from .middleware import problem

log = logging.getLogger("gateway.http")

# aiohttp 3.14 internals this module uses (owner, attribute); tests/test_edge_hostile.py
# fails if one disappears.  `_request_count` grows by one per parsed request head (or
# parse error) in `data_received`; `_messages` is the queue of parsed (head, payload) pairs
# not yet handled; `_request_in_progress` is true while a handler runs; `Server._kwargs`
# are the keyword arguments for each `RequestHandler`; `AppRunner._make_server` builds the
# `Server` after the app's start-up.
PRIVATE_SURFACE: tuple[tuple[type, str], ...] = (
    (RequestHandler, "_request_count"),
    (RequestHandler, "_messages"),
    (RequestHandler, "_request_in_progress"),
    (web.Server, "_kwargs"),
    (web.AppRunner, "_make_server"),
)

# The request line may be longer than one header field, and the two limits must differ:
# aiohttp raises the same `LineTooLong` for both, told apart here by the limit it names.
MAX_REQUEST_LINE = 16384
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 100
CLIENT_BYTES_LOGGED = 100
# File descriptors kept back from the connection bound: the upstream pool (100), Redis,
# listening sockets, logs, metrics files.
FD_RESERVE = 256
LIMIT_LOG_INTERVAL = 10.0
CLOSE_REASONS = ("limit", "header_timeout", "malformed")


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    header_timeout: float
    keepalive_timeout: float
    max_connections: int

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("header_timeout and keepalive_timeout must be > 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


def raise_file_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. an unlimited hard limit above the kernel's
            pass
    return soft, hard


def connection_cap(max_connections: int, soft_file_limit: int) -> int:
    """`max_connections`, but never so many that the process runs out of descriptors."""
    if soft_file_limit == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft_file_limit - FD_RESERVE))


class EdgeServer(web.Server):
    """aiohttp's `Server`, making `EdgeRequestHandler`s and counting open connections."""

    def __init__(
        self,
        handler: Any,
        *,
        limits: EdgeLimits,
        metrics: Metrics | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.open_connections = 0
        self._metrics = metrics
        self._handler_kwargs = {k: v for k, v in kwargs.items() if k not in _SERVER_ONLY}
        self._handler_kwargs["keepalive_timeout"] = limits.keepalive_timeout
        self._rejected_unlogged = 0
        self._last_limit_log = -LIMIT_LOG_INTERVAL
        if metrics is not None:
            for reason in CLOSE_REASONS:
                metrics.http_connections_closed.labels(reason)

    def __call__(self) -> RequestHandler:
        return EdgeRequestHandler(self, loop=asyncio.get_running_loop(), **self._handler_kwargs)

    def admit(self) -> bool:
        """Count a new connection in, or refuse it when the bound is reached."""
        if self.open_connections >= self.limits.max_connections:
            self.closed("limit")
            self._rejected_unlogged += 1
            now = asyncio.get_running_loop().time()
            if now - self._last_limit_log >= LIMIT_LOG_INTERVAL:  # one line per interval
                log.warning(
                    "connection limit reached; closing new connections",
                    extra={"max_connections": self.limits.max_connections,
                           "count": self._rejected_unlogged},
                )  # fmt: skip
                self._last_limit_log, self._rejected_unlogged = now, 0
            return False
        self.open_connections += 1
        if self._metrics is not None:
            self._metrics.http_connections.inc()
        return True

    def release(self) -> None:
        self.open_connections -= 1
        if self._metrics is not None:
            self._metrics.http_connections.dec()

    def closed(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.http_connections_closed.labels(reason).inc()


# `Server.__init__` arguments that are not `RequestHandler` arguments.
_SERVER_ONLY = frozenset({"request_factory", "handler_cancellation", "loop"})


class EdgeRequestHandler(RequestHandler):
    """One client connection: aiohttp's handler plus the header timeout, the connection
    bound and quiet problem+json answers to requests that cannot be parsed."""

    __slots__ = ("_admitted", "_body", "_edge", "_edge_loop", "_head_timer")

    def __init__(
        self, manager: EdgeServer, *, loop: asyncio.AbstractEventLoop, **kwargs: Any
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._edge = manager
        self._edge_loop = loop
        self._admitted = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body of the last head, while it arrives

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._edge.admit():
            self._manager = None  # so connection_lost has nothing to undo
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a head is closed too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        if self._admitted:
            self._admitted = False
            self._edge.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._head_timer is None and self._awaiting_head():
            self._arm_head_timer()  # the first bytes of a new request
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a head (or a parse error) is complete
            self._disarm_head_timer()
            payload = self._messages[-1][1] if self._messages else None
            self._body = payload if payload is not None and not payload.is_eof() else None

    def _awaiting_head(self) -> bool:
        body = self._body
        return body is None or body.is_eof() or body.exception() is not None

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self._edge_loop.call_later(
                self._edge.limits.header_timeout, self._head_timed_out
            )

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None:
            return
        self._edge.closed("header_timeout")
        if self._request_in_progress or self._messages:
            self.close()  # answer what was asked, then close
        else:
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a request aiohttp could not parse (or whose handler failed outside the
        middleware) with problem+json and `Connection: close`; log one short line."""
        request_id = uuid.uuid4().hex
        token = request_id_var.set(request_id)
        try:
            error = _classify(exc, status, self.max_line_size, self.max_field_size)
            peer = request.remote or "-"
            if error.status >= 500:
                log.error("request failed outside the middleware", exc_info=exc)
            else:
                self._edge.closed("malformed")
                log.info(
                    "malformed request",
                    extra={"status": error.status, "client": peer, "detail": _excerpt(exc)},
                )
            if request.writer.output_size > 0:  # a response is under way: just close
                raise ConnectionError("response already started")
            response = problem(error, request_id)
            response.headers["Connection"] = "close"
            response.force_close()
            return response
        finally:
            request_id_var.reset(token)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs a body it cannot parse (bad chunking, bad compression) from deep in
        its loop with a traceback; a client's mistake is one short line instead."""
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            self._edge.closed("malformed")
            log.info("malformed request body", extra={"detail": _excerpt(exc)})
            return
        super().log_exception(*args, **kw)


def _classify(
    exc: BaseException | None, status: int, max_line_size: int, max_field_size: int
) -> GatewayError:
    if status >= 500 or exc is None:
        return GatewayError("the gateway failed; see its logs")
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == max_field_size != max_line_size:
            return HeaderFieldsTooLarge(f"a header field is longer than {max_field_size} bytes")
        return BadRequest("the request line is too long")
    if isinstance(exc, HttpProcessingError) and "Too many headers" in exc.message:
        return HeaderFieldsTooLarge("too many header fields")
    if isinstance(exc, BadStatusLine | InvalidURLError):
        return BadRequest("the request line is malformed")
    if isinstance(exc, InvalidHeader):
        return BadRequest("a header field is malformed")
    if isinstance(exc, PayloadEncodingError):
        return BadRequest("the body framing (Content-Length or chunked encoding) is malformed")
    return BadRequest("the request is malformed")


def _excerpt(exc: BaseException | None) -> str:
    """The parser's message (which quotes client bytes), on one line, at most 100 chars."""
    if exc is None:
        return ""
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    return " ".join(str(text).split())[:CLIENT_BYTES_LOGGED]


class EdgeRunner(web.AppRunner):
    """An `AppRunner` whose server is an `EdgeServer` with these limits."""

    def __init__(
        self,
        app: web.Application,
        *,
        limits: EdgeLimits,
        metrics: Metrics | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_line_size", MAX_REQUEST_LINE)
        kwargs.setdefault("max_field_size", MAX_FIELD_SIZE)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        super().__init__(app, **kwargs)
        self._limits = limits
        self._metrics = metrics

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up, applies handler_args
        return EdgeServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            limits=self._limits,
            metrics=self._metrics,
            **plain._kwargs,
        )

    @property
    def edge_server(self) -> EdgeServer | None:
        server = self.server
        return server if isinstance(server, EdgeServer) else None
