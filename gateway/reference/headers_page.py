"""The headers page (`docs/headers.md`): what the gateway reads from requests and sends in
answers.  Prose, with every literal the code decides (the Cache-Status forms, codings, the
request-id rule, the heartbeat) taken from the code that decides it."""

from __future__ import annotations

from ..encodings import CODINGS, IDENTITY, MIN_SIZE
from ..engine import Outcome
from ..feed import HEARTBEAT
from ..middleware import _REQUEST_ID
from ..responses import CACHE_NAME, cache_status
from .markdown import code, page, table


def cache_status_forms() -> list[list[str]]:
    forms = [
        ("fresh hit, N seconds of freshness left", Outcome("hit", 299)),
        ("stale, served while one background refresh runs", Outcome(
            "stale", -42, detail="stale-while-revalidate")),
        ("stale, served because upstream fails or the gateway holds back", Outcome(
            "stale", -42, detail="stale-if-error")),
        ("a remembered upstream 404 (on the problem answer)", Outcome(
            "negative_hit", 12, detail="negative")),
        ("fetched from upstream and stored", Outcome("miss", stored=True)),
        ("joined another request's fetch", Outcome("miss", stored=True, collapsed=True)),
        ("a fetch that failed (on the problem answer)", Outcome("miss")),
    ]  # fmt: skip
    return [[code(cache_status(outcome)), when] for when, outcome in forms]


REQUEST_HEADERS = (
    ("`Authorization: Bearer <token>`", "a client token (data routes and `/changes`, when "
     "client tokens are set) or the admin token (`/admin/*`); ignored on `/healthz`, "
     "`/readyz`, `/metrics`, `/openapi.json`"),
    ("`Accept-Encoding`", "the content coding of data answers (above)"),
    ("`If-None-Match`", "conditional request (above)"),
    ("`X-Request-ID`", "the request id to use (below)"),
    ("`Accept: text/event-stream`", "`/changes` as a Server-Sent Events stream instead of "
     "JSON pages"),
    ("`Last-Event-ID`", "`/changes`: resume after this event id (what `EventSource` sends "
     "when it reconnects); wins over `?after=`"),
    ("`traceparent`, `tracestate`", "W3C trace context, continued when tracing is on (below)"),
    ("`X-Forwarded-For`", "the client's address for the quota and the access log, read only "
     "when the peer is one of `GATEWAY_TRUSTED_PROXIES`: the right-most address that is not "
     "a trusted proxy (entries left of it could be forged)"),
)  # fmt: skip


def render() -> str:
    requests = table(["header", "meaning"], REQUEST_HEADERS)
    response = table(["Cache-Status", "when"], cache_status_forms())
    preference = ", ".join(code(coding) for coding in CODINGS)
    text = f"""
## Response headers on data answers

Data answers are those of `/sites…` and `/connectors…` (the routes whose answers are
cached). `Cache-Status` (RFC 9211), cache name `{CACHE_NAME}`:

{response}

With N the seconds of freshness left and -N how long the entry has been stale (-42 above
as an example).

- `Age`: seconds since the answer was fetched from upstream.
- `ETag`: a strong validator of the representation sent; each content coding has its own
  (the identity tag with `-gzip`, `-br` or `-zstd` appended inside the quotes).
- `Cache-Control: no-cache`: clients may keep the answer but revalidate it with
  `If-None-Match`.
- `Vary: Accept-Encoding` on every data answer.
- `Content-Encoding`: the coding chosen from the request's `Accept-Encoding` (below), absent
  for identity.
- `Content-Type: application/json`.

## Conditional requests

`If-None-Match` with the ETag of the representation that would be sent (a list of tags,
`W/` prefixes ignored, or `*`) answers `304 Not Modified` with the same headers and no
body. The tag names one coding: a tag saved from a gzip answer matches only while the
client asks for gzip again.

## Compression

`Accept-Encoding` chooses the coding: {preference} or `{IDENTITY}`, by the client's
q-values (RFC 9110); on equal q-values the gateway prefers them in that order, identity
last. No `Accept-Encoding` means identity. Bodies under {MIN_SIZE} bytes, and bodies that
would not shrink by at least a tenth, go uncompressed. Each stored answer is compressed
when it is stored (or, for a coding not built then, once on first use), never per request.
A header that refuses every coding the gateway has (`identity;q=0` or `*;q=0` with nothing
else acceptable) is a `406`. `curl --compressed` sends what curl can decode.

## `HEAD`

Every `GET` route answers `HEAD` with the same status and headers and no body; `HEAD
/changes` opens no stream.

## Headers on every answer

- `X-Request-ID`: the request's own when it sent one matching `{_REQUEST_ID.pattern}`,
  else one the gateway generates. It is in every log line of the request and in problem
  answers (`request_id`).
- `Retry-After` (seconds) on `429`, and on `503` answers when the gateway holds back
  (upstream pause, open circuit, budget spent, Redis unreachable for an admin purge, too
  many streams).
- `WWW-Authenticate: Bearer` on `401`; `Allow` on `405`.
- `Connection: close` while the process drains after SIGTERM, and on answers to requests
  that could not be parsed.

## Request headers the gateway reads

{requests}

## Event streams (`/changes`)

With `Accept: text/event-stream` the answer is `text/event-stream`, one event per change:
`id:` (the event id, increasing, the same on every replica), `event:` (`site.created`,
`site.updated`, `site.deleted`) and `data:` (the event as JSON). A position older than
what is kept first gets one `event: reset`. A comment line is sent after {HEARTBEAT:g} s
without events, so proxies keep the stream open.

## Tracing

With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans go
out over OTLP/HTTP: one server span per request (`http.request.method`, `http.route` as the
route template, `http.response.status_code`, `chargepilot.cache.result`) with child spans
for Redis calls (`db.system`, `db.operation.name`) and upstream calls
(`http.request.method`, `server.address`, `url.template`, `http.response.status_code`).
A request's `traceparent` is continued, every upstream call carries the current
`traceparent`, and the request's access log line carries `trace_id`. Without an endpoint
nothing of tracing is loaded.

## Never sent

The API key, the API secret and request signatures never appear in any answer, log line
or metric.
"""
    return page("Headers", text)
