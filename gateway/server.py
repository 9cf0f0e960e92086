"""The HTTP edge server: aiohttp's server, hardened against hostile clients, per process.

aiohttp closes idle keep-alive connections (`GATEWAY_KEEPALIVE_TIMEOUT`), but it has no
header timeout, no bound on open connections, and it answers a request it cannot parse
with a text/plain 400 and an ERROR log line carrying a traceback.  `EdgeRunner` is an
`AppRunner` whose server (`EdgeServer`) makes `connection.EdgeRequestHandler`s, which add
the header timeout and the quiet problem+json answers, and whose handler answers tier hits
before the router (`hitpath.py`); the server keeps the count of open
connections against `GATEWAY_MAX_CONNECTIONS`, capped below the open-file limit
(`connection_cap`; `raise_file_limit` raises the soft limit to the hard one at start).

The private parts of aiohttp these modules rely on are listed in `PRIVATE_SURFACE`; a test
checks each against the installed aiohttp, so an upgrade that changes them fails loudly.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .connection import EdgeRequestHandler
from .hitpath import HitPath
from .metrics import Metrics
from .middleware import EDGE

log = logging.getLogger("gateway.http")

# aiohttp 3.14 internals this module and connection.py use (owner, attribute); a test in
# tests/test_edge_hostile.py fails if one disappears.  `_request_count` grows by one per
# parsed request head (or parse error) in `data_received`; `_messages` is the queue of
# parsed (head or error, payload) pairs not yet handled, newest last (a parse error is any
# head that is not a `RawRequestMessage`); `_request_in_progress` is true while a handler
# runs; `Server._kwargs` are the keyword arguments for each `RequestHandler`;
# `AppRunner._make_server` builds the `Server` after the app's start-up.
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
# File descriptors kept back from the connection bound: the upstream pool (100), Redis,
# listening sockets, logs, metrics files.
FD_RESERVE = 256
LIMIT_LOG_INTERVAL = 10.0
CLOSE_REASONS = ("limit", "header_timeout", "body_timeout", "malformed")


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
        handler: Any = plain.request_handler
        if EDGE in self.app:  # the gateway's app (not the metrics port's): tier hits first
            handler = HitPath(self.app, handler)
        return EdgeServer(
            handler,
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
