"""HTTP rendering of what the cache did: Cache-Status (RFC 9211), Age, ETag and 304.

The only place that turns an engine `Outcome` into header text.  Per entry, the headers
that never change (ETag, Content-Type, Cache-Control, Vary) are built once and kept in the
entry's `memo`; a hit copies them and adds the per-request ones.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from .engine import Outcome, Served
from .entry import Entry

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


def _static_headers(entry: Entry) -> CIMultiDict[str]:
    headers: CIMultiDict[str] | None = entry.memo.get("headers")
    if headers is None:
        headers = CIMultiDict(
            {
                "ETag": f'"{entry.etag}"',
                "Content-Type": JSON,
                "Cache-Control": "no-cache",
            }
        )
        entry.memo["headers"] = headers
    return headers


def matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    return any(
        candidate.strip().removeprefix("W/") == etag for candidate in if_none_match.split(",")
    )


def respond(request: web.Request, served: Served) -> web.Response:
    """200 with the entry, or 304 when the client holds it already."""
    entry = served.entry
    note(request, served.outcome)
    headers = _static_headers(entry).copy()
    headers["Age"] = str(int(served.age))
    headers["Cache-Status"] = cache_status(served.outcome)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and matches(if_none_match, headers["ETag"]):
        del headers["Content-Type"]
        return web.Response(status=304, headers=headers)
    return web.Response(body=entry.body, headers=headers)
