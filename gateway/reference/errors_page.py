"""The errors page (`docs/errors.md`): every problem type the gateway answers with, from
the `GatewayError` hierarchy in `gateway/errors.py` (status, title, type), with the prose
of when each happens kept here, keyed by problem type; a test keeps the two in step."""

from __future__ import annotations

from ..errors import GatewayError
from ..ids import MAX_ID_LENGTH
from ..middleware import PROBLEM_TYPE
from ..server import MAX_FIELD_SIZE, MAX_HEADERS, MAX_REQUEST_LINE
from .markdown import code, page, table

INTRO = f"""
Every error is `{PROBLEM_TYPE}` (RFC 9457), the router's own 404 and 405 included, never a
traceback:

```json
{{"type": "/problems/not-found", "title": "Not Found", "status": 404,
 "detail": "no such endpoint", "request_id": "d15844964799d87d0000000000000001"}}
```

`type` is one of the problem types below (stable; match on it, not on `detail`, which is
for people). `request_id` is the answer's `X-Request-ID`, also in every log line of the
request. When the cache took part, problem answers carry `Cache-Status` too (a remembered
404: `…; hit; ttl=N; detail=negative`; a failed fetch: `…; fwd=miss`).
"""

# When each problem type is answered, and the headers that come with it.
WHEN: dict[str, str] = {
    "bad-request": "The request is malformed: an id that is empty, longer than "
    f"{MAX_ID_LENGTH} characters "
    "or holds a control character; an unknown, repeated or out-of-range query parameter "
    "(every data route rejects parameters it does not know); a tampered cursor or one from a "
    "query with other filters; a bad `after`/`Last-Event-ID`; `/changes` without `?account=` "
    "while there are several accounts; a purge body other than `{}` or "
    '`{"site_id": "…"}`; a request the HTTP parser rejects (request line, header syntax, '
    f"request line over {MAX_REQUEST_LINE // 1024} KiB, Content-Length or chunked framing: "
    "with `Connection: close`).",
    "unauthorized": "No bearer token, or one the gateway does not know, on a route that needs "
    'one. With `WWW-Authenticate: Bearer realm="chargepilot-gateway"`.',
    "forbidden": "A known client token on `/admin/*`.",
    "not-found": "An unknown site or connector (an upstream 404, remembered for "
    "`GATEWAY_NEGATIVE_TTL`; or an id not in a fleet list fetched less than that ago, "
    "answered without an upstream call); an unknown path; `/admin/*` while no admin token "
    "is set.",
    "method-not-allowed": "A method the route does not have. With `Allow`.",
    "not-acceptable": "On a data route, `Accept-Encoding` refuses every coding the gateway "
    "can send: `identity;q=0` or `*;q=0` without an acceptable `gzip`, `br` or `zstd`.",
    "conflict": "With several accounts: the id is listed by more than one account and "
    "`?account=` does not name one.",
    "client-quota": "The client is over `GATEWAY_CLIENT_RPS` (a client is its token name, or "
    "its address). With `Retry-After`.",
    "header-fields-too-large": f"A request head with a header field over {MAX_FIELD_SIZE} "
    f"bytes, or more than {MAX_HEADERS} header fields. With `Connection: close`.",
    "client-closed": "Never sent: the client left before its answer. Logged and counted as "
    "status 499.",
    "cache-unavailable": "Redis did not answer where the answer needs it: an admin purge, or "
    "the change feed on Redis. With `Retry-After`. Data routes never answer this: they fail "
    "open to upstream and the in-process tier.",
    "too-many-streams": "`GATEWAY_MAX_STREAMS` `/changes` event streams are open on this "
    "process already. With `Retry-After`.",
    "upstream-error": "The upstream answered unusably: a 5xx, or an unexpected 4xx such as "
    "401 from a bad key or signature, and nothing stale was held.",
    "upstream-bad-payload": "The upstream answer is not JSON, or not the shape the "
    "documentation gives, and nothing stale was held.",
    "upstream-unavailable": "The gateway holds back and has nothing stale to serve: a "
    "Retry-After pause from the upstream, an open circuit, or the shared rate budget spent "
    "until the request's deadline. With `Retry-After`.",
    "upstream-timeout": "The upstream did not answer within `GATEWAY_UPSTREAM_TIMEOUT` "
    "(retries included) and nothing stale was held.",
    "internal": "A bug in the gateway. Logged with its traceback; the answer holds none.",
    "http-error": "Any other status aiohttp's router raises (none is known to happen).",
}

UPSTREAM = """
## How upstream failures are handled

- An upstream 429, or a 503 with `Retry-After`: a pause stored in Redis, so no replica
  calls upstream until it ends; no retry.
- Connection errors, and 502/503/504 without `Retry-After`: retried with backoff
  (`GATEWAY_UPSTREAM_RETRIES`) within `GATEWAY_UPSTREAM_TIMEOUT`.
- A failure never replaces a good cached entry: stale data is served (`Cache-Status: …;
  detail=stale-if-error`) until `GATEWAY_CACHE_STALE` runs out. Only a real upstream 404
  removes an entry.
- Only upstream failures count against the circuit (5xx, 401/403, timeouts, connection
  errors, unusable answers); a 404 or another client-caused 4xx never does, so no client
  input can open it. A half-open probe that times out or is cancelled counts as a failure
  and frees the probe's slot.
"""


def problem_classes() -> list[type[GatewayError]]:
    """`GatewayError` and every subclass, depth first, in declaration order."""
    found: list[type[GatewayError]] = []
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        kind = pending.pop(0)
        found.append(kind)
        pending[0:0] = kind.__subclasses__()
    return found


def render() -> str:
    rows = []
    for kind in sorted(problem_classes(), key=lambda k: (k.status, k is GatewayError)):
        rows.append([str(kind.status), code(f"/problems/{kind.slug}"), kind.title, WHEN[kind.slug]])
    rows.append(["other", code("/problems/http-error"), "the status's reason", WHEN["http-error"]])
    listing = table(["status", "type", "title", "when"], rows)
    return page("Errors", INTRO, listing, UPSTREAM)
