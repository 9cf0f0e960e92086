"""HTTP rendering of a served entry: content coding, Cache-Status (RFC 9211), Age, ETag, 304.

The only place that turns an engine `Outcome` into header text.  Per entry and content
coding, the body to send and the headers that never change (ETag, Content-Type,
Content-Encoding, Cache-Control, Vary) are built once and kept in the entry's `memo`; a hit
copies them and adds the per-request ones.  Each coding has its own strong ETag (the
identity tag with `-gzip`, `-br` or `-zstd`), and `If-None-Match` answers 304 when it names
the tag of the representation that would be sent.  A coding the entry was not stored with
is built once, on first use, and kept with the entry (`encodings.py`): never per request.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from .encodings import IDENTITY, MIN_SIZE, NOT_ACCEPTABLE, compress, negotiate
from .engine import Outcome, Served
from .entry import Entry
from .errors import NotAcceptable

CACHE_NAME = "chargepilot-gateway"
JSON = "application/json"
RESULT_KEY = web.RequestKey("cache_result", str)
COLLAPSED_KEY = web.RequestKey("collapsed", bool)


def cache_status(outcome: Outcome) -> str:
    if outcome.result == "hit":
        return f"{CACHE_NAME}; hit; ttl={int(outcome.ttl)}"
    if outcome.result == "stale":
        return f"{CACHE_NAME}; hit; ttl={min(-1, int(outcome.ttl))}; detail={outcome.detail}"
    if outcome.result == "negative_hit":
        return f"{CACHE_NAME}; hit; ttl={max(0, int(outcome.ttl))}; detail=negative"
    status = f"{CACHE_NAME}; fwd=miss"
    if outcome.stored:
        status += "; stored"
    if outcome.collapsed:
        status += "; collapsed"
    return status


def note(request: web.Request, outcome: Outcome) -> None:
    """What the access line and the metrics report for this request."""
    request[RESULT_KEY] = outcome.result
    if outcome.collapsed:
        request[COLLAPSED_KEY] = True


def representation(entry: Entry, coding: str) -> tuple[bytes, CIMultiDict[str]]:
    """The body to send in `coding` and its constant headers (built once per entry)."""
    found: tuple[bytes, CIMultiDict[str]] | None = entry.memo.get(coding)
    if found is not None:
        return found
    body, etag = entry.body, entry.etag
    if coding != IDENTITY and len(entry.body) >= MIN_SIZE:
        variant = entry.variants.get(coding)
        if variant is None:
            variant = entry.variants[coding] = compress(entry.body, coding)
        body, etag = variant, f"{entry.etag}-{coding}"
    headers = CIMultiDict(
        {
            "ETag": f'"{etag}"',
            "Content-Type": JSON,
            "Cache-Control": "no-cache",
            "Vary": "Accept-Encoding",
        }
    )
    if body is not entry.body:
        headers["Content-Encoding"] = coding
    entry.memo[coding] = found = (body, headers)
    return found


def matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    return any(
        candidate.strip().removeprefix("W/") == etag for candidate in if_none_match.split(",")
    )


def respond(request: web.Request, served: Served) -> web.Response:
    """200 with the entry in the client's preferred coding, or 304 when the client holds
    that representation already (HEAD: the same headers, no body)."""
    entry = served.entry
    note(request, served.outcome)
    coding = negotiate(request.headers.get("Accept-Encoding"))
    if coding is None:
        raise NotAcceptable(NOT_ACCEPTABLE)
    body, static = representation(entry, coding)
    headers = static.copy()
    headers["Age"] = str(int(served.age))
    headers["Cache-Status"] = cache_status(served.outcome)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and matches(if_none_match, headers["ETag"]):
        del headers["Content-Type"]
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers)
