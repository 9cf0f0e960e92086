"""One client connection at the edge: aiohttp's `RequestHandler`, hardened.

`EdgeRequestHandler` adds to aiohttp's per-connection protocol:

- a read deadline of `GATEWAY_HEADER_TIMEOUT`: armed when the connection opens and at the
  first byte of each further request, disarmed when the request head is complete.  A
  connection that trickles header bytes (slowloris) or sends nothing is closed; an idle
  keep-alive connection is left to aiohttp's keep-alive timeout.  A request body (only
  `/admin/purge` takes one, a few bytes) must follow its head within the same time, or the
  connection is closed and the handler waiting for it sees the client gone;
- the connection bound: `connection_made` asks the server (`EdgeServer.admit`) and closes a
  connection past the bound before reading a byte;
- quiet answers to what aiohttp cannot parse: a bad request line, an invalid header, bad
  body framing get an `application/problem+json` 400 (431 for header fields too large or
  too many) with `Connection: close` and one INFO line quoting at most
  `CLIENT_BYTES_LOGGED` characters of the parser's message, never a traceback.  When the
  parser fails inside a body a handler is reading, that read fails (the middleware answers
  400) instead of the handler waiting for bytes that will never be parsed.

The aiohttp internals used here are listed in `server.PRIVATE_SURFACE`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from .errors import BadRequest, GatewayError, HeaderFieldsTooLarge
from .logs import request_id_var
from .middleware import problem

if TYPE_CHECKING:
    from .server import EdgeServer

log = logging.getLogger("gateway.http")
CLIENT_BYTES_LOGGED = 100


class EdgeRequestHandler(RequestHandler):
    """One client connection: aiohttp's handler plus the header timeout, the connection
    bound and quiet problem+json answers to requests that cannot be parsed."""

    __slots__ = ("_admitted", "_body", "_deadline", "_edge", "_edge_loop")

    def __init__(
        self, manager: EdgeServer, *, loop: asyncio.AbstractEventLoop, **kwargs: Any
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._edge = manager
        self._edge_loop = loop
        self._admitted = False
        # Armed while a request head or body is arriving; it closes the connection.
        self._deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body of the last head, while it arrives

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._edge.admit():
            self._manager = None  # so connection_lost has nothing to undo
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm()  # a connection that never sends a head is closed too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._admitted:
            self._admitted = False
            self._edge.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        body = self._body if _arriving(self._body) else None
        if data and body is None and self._deadline is None:
            self._arm()  # the first bytes of a new request
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a head (or a parse error) is complete
            newest, payload = self._messages[-1]
            if body is not None and not isinstance(newest, RawRequestMessage):
                # The parser failed inside the body a handler may be reading: fail that
                # read (the middleware answers 400) rather than queue a second answer.
                self._messages.pop()
                cause = getattr(newest, "exc", None)  # aiohttp's parse-error record
                body.set_exception(RequestPayloadError(_excerpt(cause) or "bad body framing"))
            self._disarm()
            self._body = payload if _arriving(payload) else None
            if self._body is not None:
                self._arm()  # its body must follow within the same time
        elif body is not None and not _arriving(body):
            self._body = None
            self._disarm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self._edge_loop.call_later(
                self._edge.limits.header_timeout, self._deadline_passed
            )

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        if _arriving(self._body):  # a handler may be waiting for it: it sees the close
            self._edge.closed("body_timeout")
            self.force_close()
            return
        self._edge.closed("header_timeout")
        if self._request_in_progress or self._messages:
            self.close()  # answer what was asked, then close
        else:
            self.force_close()

    def _peer(self) -> str:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) else "-"

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
            log.info(
                "malformed request body", extra={"client": self._peer(), "detail": _excerpt(exc)}
            )
            return
        super().log_exception(*args, **kw)


def _arriving(body: StreamReader | None) -> bool:
    """A request body that has begun and neither ended nor failed."""
    return body is not None and not body.is_eof() and body.exception() is None


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
