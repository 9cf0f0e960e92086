"""The HTTP edge: request ids, auth, client quotas, problem+json errors, access log, metrics.

One middleware wraps every request.  It assigns the request id (echoed or generated) and
puts it in the logging context, checks bearer tokens, takes from the client's quota (a
client is its token name, or its address: `quota.py`), turns every failure — the gateway's
own `GatewayError`s, aiohttp's router 404/405, and anything unexpected — into an RFC 9457
`application/problem+json` answer (never a traceback), and records one access log line and
the HTTP metrics under the route *template*.  While the process drains (after SIGTERM)
every response closes its connection, so clients reconnect to a replica that stays.
`Auth` holds the tokens; SIGHUP swaps them in place (`Auth.replace`).
Requests aiohttp cannot parse never get here: `connection.py` answers them.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from .access import Accounting, RequestIds
from .errors import (
    BadRequest,
    ClientClosedRequest,
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from .lifecycle import Drain
from .logs import request_id_var, upstream_outcomes_var
from .quota import ClientAddress, ClientQuota
from .responses import COLLAPSED_KEY, RESULT_KEY, cache_status, note
from .settings import Secret

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from .tracing import Tracing

log = logging.getLogger("gateway.http")

PROBLEM_TYPE = "application/problem+json"
UNREADABLE_BODY = "the request body is malformed or cannot be decoded"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
_PATTERN = re.compile(r"\{(\w+):[^}]*\}")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
ERROR_KEY = web.RequestKey("error", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(error: GatewayError, request_id: str) -> web.Response:
    body = {
        "type": f"/problems/{error.slug}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "request_id": request_id,
    }
    headers = error.headers()
    if error.outcome is not None:
        headers["Cache-Status"] = cache_status(error.outcome)
    return web.Response(
        status=error.status, body=orjson.dumps(body), content_type=PROBLEM_TYPE, headers=headers
    )


class Auth:
    def __init__(self, client_tokens: Mapping[str, Secret], admin_token: Secret | None) -> None:
        self.replace(client_tokens, admin_token)

    def replace(self, client_tokens: Mapping[str, Secret], admin_token: Secret | None) -> None:
        """Swap in new tokens (SIGHUP); requests already past the check are not affected."""
        self._clients = [(name, token.reveal().encode()) for name, token in client_tokens.items()]
        self._admin = admin_token.reveal().encode() if admin_token else None

    @property
    def client_tokens_on(self) -> bool:
        return bool(self._clients)

    def client_for(self, request: web.Request) -> str | None:
        """The token name for a data route (None when tokens are off); raises 401 when
        tokens are on and the request has no known one."""
        if not self._clients:
            return None
        presented = _bearer(request)
        if presented is None:
            raise Unauthorized("send Authorization: Bearer <token>")
        name = self._match(presented)
        if name is None:
            raise Unauthorized("unknown token")
        return name

    def check_admin(self, request: web.Request) -> None:
        if self._admin is None:
            raise NotFound("admin endpoints are disabled (GATEWAY_ADMIN_TOKEN is not set)")
        presented = _bearer(request)
        if presented is None:
            raise Unauthorized("send Authorization: Bearer <admin token>")
        if hmac.compare_digest(presented, self._admin):
            return
        if self._match(presented) is not None:
            raise Forbidden("this token may not use admin endpoints")
        raise Unauthorized("unknown token")

    def _match(self, presented: bytes) -> str | None:
        found = None
        for name, token in self._clients:  # compare with every token: constant-time overall
            if hmac.compare_digest(presented, token):
                found = name
        return found


AUTH = web.AppKey("auth", Auth)


def _bearer(request: web.Request) -> bytes | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip().encode()


def route_template(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    if resource is None or isinstance(request.match_info.http_exception, web.HTTPException):
        return "unmatched"
    template = _TEMPLATES.get(resource.canonical)
    if template is None:
        template = _TEMPLATES[resource.canonical] = _PATTERN.sub(r"{\1}", resource.canonical)
    return template


_TEMPLATES: dict[str, str] = {}  # a cache: canonical route -> template; routes are fixed


class Edge:
    """What the edge does to every request, shared by the middleware and the tier-hit fast
    path (`hitpath.py`): accounting, tokens, quotas, the drain, tracing, request ids."""

    def __init__(
        self,
        accounting: Accounting,
        auth: Auth,
        quota: ClientQuota,
        *,
        client_address: ClientAddress | None = None,
        drain: Drain | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.accounting = accounting
        self.auth = auth
        self.quota = quota
        self.address_of = client_address or ClientAddress()
        self.drain = drain or Drain()
        self.tracing = tracing
        self._ids = RequestIds()

    def client_of(self, request: web.Request) -> str:
        """Who a data request is, for its quota and access line: its token's name (401 when
        tokens are on and it has no known one), else its address."""
        return self.auth.client_for(request) or self.address_of(request)

    def request_id(self, request: web.Request) -> str:
        """The client's `X-Request-ID` when it is well-formed, else a new one."""
        sent = request.headers.get("X-Request-ID")
        return sent if sent and _REQUEST_ID.match(sent) else self._ids.next()


EDGE = web.AppKey("edge", Edge)


def make_middleware(parts: Edge) -> Any:
    accounting, auth, quota = parts.accounting, parts.auth, parts.quota
    drain, tracing = parts.drain, parts.tracing

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        if tracing is None:
            return await handle(request, handler, None)
        with tracing.server_span(request.method, route_template(request), request.headers) as span:
            return await handle(request, handler, span)

    async def handle(
        request: web.Request, handler: Handler, span: Span | None
    ) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = parts.request_id(request)
        token = request_id_var.set(request_id)
        outcomes: list[str] = []
        outcomes_token = upstream_outcomes_var.set(outcomes)
        route = route_template(request)
        client = "-"
        try:
            try:
                if route.startswith("/admin/"):
                    auth.check_admin(request)
                elif request.path not in OPEN_PATHS and route != "unmatched":
                    client = parts.client_of(request)
                    wait = quota.take(client)
                    if wait > 0:
                        raise TooManyRequests("client quota exceeded", retry_after=wait)
                response = await handler(request)
            except GatewayError as error:
                request[ERROR_KEY] = error.slug
                if error.outcome is not None:
                    note(request, error.outcome)
                response = problem(error, request_id)
            except web.HTTPException as exc:
                response = problem(_from_http(exc), request_id)
            except (RequestPayloadError, HttpProcessingError):
                # The body could not be read (framing, encoding): the client's mistake; the
                # connection handler logs it once.
                request[ERROR_KEY] = "bad-request"
                response = problem(BadRequest(UNREADABLE_BODY), request_id)
            except Exception as exc:
                if isinstance(exc, ConnectionError) and _client_gone(request):
                    request[ERROR_KEY] = "client-closed"  # nobody is left to answer
                    response = problem(ClientClosedRequest("the client went away"), request_id)
                else:
                    log.exception("unhandled error", extra={"route": route})
                    failure = GatewayError("the gateway failed; see its logs")
                    request[ERROR_KEY] = failure.slug  # the access line names it too
                    response = problem(failure, request_id)
            response.headers["X-Request-ID"] = request_id
            if drain.active:
                response.force_close()  # go to a replica that is not shutting down
            trace_id = None
            if span is not None and tracing is not None:
                result = request.get(RESULT_KEY)
                tracing.finish(span, response.status, {"chargepilot.cache.result": result})
                trace_id = tracing.trace_id(span)
            accounting.record(
                request_id,
                route,
                request.method,
                response.status,
                time.perf_counter() - started,
                result=request.get(RESULT_KEY),
                collapsed=request.get(COLLAPSED_KEY, False),
                client=client,
                error=request.get(ERROR_KEY),
                upstream=",".join(outcomes) or None,
                trace_id=trace_id,
            )
            return response
        finally:
            request_id_var.reset(token)
            upstream_outcomes_var.reset(outcomes_token)

    return edge


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _from_http(exc: web.HTTPException) -> GatewayError:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(
            f"{exc.method} is not allowed here", allowed=set(exc.allowed_methods)
        )
    if exc.status == 404:
        return NotFound("no such endpoint")
    error = GatewayError(exc.reason)
    error.status, error.title, error.slug = exc.status, exc.reason, "http-error"
    return error
