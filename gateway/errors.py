"""The gateway's error hierarchy, turned into problem+json by one middleware (`middleware.py`).

    GatewayError                  status, title, problem type; never carries a traceback
    ├── BadRequest                400  malformed id, unknown/out-of-range parameter, bad cursor
    ├── Unauthorized              401  no token, or an unknown one
    ├── Forbidden                 403  a known token without the right
    ├── NotFound                  404  unknown site or connector, disabled admin
    ├── MethodNotAllowed          405  with Allow
    ├── NotAcceptable             406  Accept-Encoding refuses every coding the gateway has
    ├── Conflict                  409  an id listed by several accounts
    ├── TooManyRequests           429  a client over its quota, with Retry-After
    ├── StoreUnavailable          503  an admin action (or the change feed) needs Redis and
    │                                  Redis does not answer
    ├── TooManyStreams            503  GATEWAY_MAX_STREAMS change streams are open already
    ├── HeaderFieldsTooLarge      431  a request head with a header field too long, or too many
    ├── ClientClosedRequest       499  the client left before the answer (logged, never sent)
    └── UpstreamError             502  upstream answered unusably
        ├── BadUpstreamPayload    502  non-JSON or the wrong shape
        ├── UpstreamUnavailable   503  holding back: pause, open circuit, budget spent
        └── UpstreamTimeout       504  no answer within GATEWAY_UPSTREAM_TIMEOUT
    CacheUnavailable                   Redis failed; internal only, the service fails open

aiohttp/asyncio exceptions are mapped to these only in `upstream.py`; Redis exceptions only
in `store.py`.  An error raised while serving from cache carries the cache `outcome` (what
the cache did: a negative hit, a failed miss), which the HTTP edge renders as Cache-Status.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Outcome


class GatewayError(Exception):
    status = 500
    title = "Internal Server Error"
    slug = "internal"

    def __init__(
        self, detail: str, *, retry_after: float | None = None, outcome: Outcome | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        # What the cache did for this request, when it got that far.
        self.outcome = outcome

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class BadRequest(GatewayError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(GatewayError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="chargepilot-gateway"'}


class Forbidden(GatewayError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(GatewayError):
    status, title, slug = 404, "Not Found", "not-found"


class MethodNotAllowed(GatewayError):
    status, title, slug = 405, "Method Not Allowed", "method-not-allowed"

    def __init__(self, detail: str, *, allowed: set[str]) -> None:
        super().__init__(detail)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(sorted(self.allowed))}


class NotAcceptable(GatewayError):
    status, title, slug = 406, "Not Acceptable", "not-acceptable"


class Conflict(GatewayError):
    status, title, slug = 409, "Conflict", "conflict"


class StoreUnavailable(GatewayError):
    status, title, slug = 503, "Service Unavailable", "cache-unavailable"


class TooManyStreams(GatewayError):
    status, title, slug = 503, "Service Unavailable", "too-many-streams"


class TooManyRequests(GatewayError):
    status, title, slug = 429, "Too Many Requests", "client-quota"


class HeaderFieldsTooLarge(GatewayError):
    status, title, slug = 431, "Request Header Fields Too Large", "header-fields-too-large"


class ClientClosedRequest(GatewayError):
    status, title, slug = 499, "Client Closed Request", "client-closed"


class UpstreamError(GatewayError):
    status, title, slug = 502, "Bad Gateway", "upstream-error"


class BadUpstreamPayload(UpstreamError):
    slug = "upstream-bad-payload"


class UpstreamUnavailable(UpstreamError):
    status, title, slug = 503, "Service Unavailable", "upstream-unavailable"


class UpstreamTimeout(UpstreamError):
    status, title, slug = 504, "Gateway Timeout", "upstream-timeout"


class CacheUnavailable(Exception):
    """The shared cache (Redis) failed or timed out; callers fall back, clients never see it."""

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(f"{operation}: {detail}")
        self.operation = operation
