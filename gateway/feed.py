"""`GET /changes`: the change feed over HTTP, as Server-Sent Events or as pages of JSON.

    Accept: text/event-stream  → a stream: `id:`, `event:` (the kind), `data:` (the event's
                                 JSON) per event; a `: keep-alive` comment after `heartbeat`
                                 seconds without a write; one `event: reset` first when the
                                 position asked for is older than what the log still holds
    otherwise                  → {"data": [event, …], "next_cursor": id or null}, plus
                                 "reset": true in that case; `next_cursor` is the id to pass
                                 as `after` while more events are held, null once caught up

Position: the `Last-Event-ID` header (what an EventSource sends when it reconnects), else
`?after=<id>`; `0` means from the oldest event held.  Without either a stream starts with the
next event, a page with the oldest.

Fan-out (`FeedHub`): one task per process follows the log (XREAD BLOCK on Redis, an event
in process) and keeps the newest events in memory; every open stream of this process reads
from there, so an event costs Redis one read however many clients listen, and reaches them
as soon as it is appended.  A stream whose position is older than what the hub holds
catches up from the log first, page by page.  `GATEWAY_MAX_STREAMS` bounds the open streams
of a process (503 past it); a stream ends when its client goes (noticed within a second),
when the process shuts down (clients reconnect elsewhere with their `Last-Event-ID`), or when
Redis fails under it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

import orjson
from aiohttp import web

from .changelog import ORIGIN, ChangeLog, Event, EventId
from .encodings import IDENTITY, MIN_SIZE, NOT_ACCEPTABLE, compress, negotiate
from .errors import (
    BadRequest,
    CacheUnavailable,
    NotAcceptable,
    StoreUnavailable,
    TooManyStreams,
)
from .logs import request_id_var
from .metrics import Metrics

log = logging.getLogger("gateway.feed")
HEARTBEAT = 15.0
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PAGE = 500  # events per read while a stream catches up
FOLLOW_BLOCK = 1.0  # seconds one blocking read of the log waits
RECENT_EVENTS = 1024  # events the hub keeps for its streams
CLIENT_CHECK = 1.0  # seconds between looks at whether a quiet stream's client is still there
RETRY_MAX = 2.0
STREAM = "text/event-stream"
STREAM_HEADERS = {
    "Content-Type": STREAM,
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies must pass events on at once
}


class FeedHub:
    """Follows the change log for every stream of this process."""

    def __init__(
        self, changes: ChangeLog, *, block: float = FOLLOW_BLOCK, keep: int = RECENT_EVENTS
    ) -> None:
        self._changes = changes
        self._block = block
        self._recent: collections.deque[Event] = collections.deque(maxlen=keep)
        self._floor: EventId | None = None  # what the hub holds covers every id above it
        self._last = ORIGIN
        self._changed = asyncio.Event()
        self.closing = False

    async def run(self) -> None:
        delay = 0.05
        failing = False
        while not self.closing:
            try:
                if self._floor is None:
                    self._last = await self._changes.last_id()
                    self._floor = self._last
                events = await self._changes.follow(self._last, self._block)
            except CacheUnavailable as error:
                if not failing:
                    log.warning("change feed: Redis failed", extra={"operation": error.operation})
                failing = True
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            failing, delay = False, 0.05
            if events:
                self._take(events)

    def _take(self, events: list[Event]) -> None:
        for event in events:
            if event.id <= self._last:
                continue
            if len(self._recent) == self._recent.maxlen:
                self._floor = self._recent[0].id
            self._recent.append(event)
            self._last = event.id
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def since(self, after: EventId) -> list[Event] | None:
        """The events after `after`, or None when the hub cannot tell (ask the log)."""
        if self._floor is None or after < self._floor:
            return None
        found: list[Event] = []
        for event in reversed(self._recent):
            if event.id <= after:
                break
            found.append(event)
        found.reverse()
        return found

    @property
    def last(self) -> EventId | None:
        return None if self._floor is None else self._last

    async def wait(self, seconds: float) -> None:
        """Until new events arrive, the hub closes, or `seconds` pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    def close(self) -> None:
        """End every stream (the process shuts down)."""
        self.closing = True
        self._wake()


class Feed:
    """The `/changes` endpoint of one change log."""

    def __init__(
        self,
        changes: ChangeLog,
        hub: FeedHub,
        metrics: Metrics,
        *,
        max_streams: int,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.changes = changes
        self.hub = hub
        self._metrics = metrics
        self._max_streams = max_streams
        self._heartbeat = heartbeat
        self.open_streams = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        after, limit = _parameters(request)
        # Pages are negotiated like every other answer (compressed per request: a page is
        # built per request anyway); a stream is sent as it is, but not to a client that
        # refuses that.
        coding = negotiate(request.headers.get("Accept-Encoding"))
        if coding is None:
            raise NotAcceptable(NOT_ACCEPTABLE)
        if _wants_stream(request.headers.get("Accept", "")):
            if request.method == "HEAD":  # the headers a stream starts with; none is opened
                return web.Response(headers=STREAM_HEADERS)
            return await self._stream(request, after)
        # A HEAD of a page is the page's own headers (aiohttp sends no body for HEAD).
        return await self._page(after or ORIGIN, limit, coding)

    async def _page(self, after: EventId, limit: int, coding: str) -> web.Response:
        try:
            page = await self.changes.read(after, limit + 1)
        except CacheUnavailable:
            raise StoreUnavailable("the change feed is unreachable", retry_after=1) from None
        events = page.events[:limit]
        more = len(page.events) > limit
        cursor = orjson.dumps(str(events[-1].id)) if more else b"null"
        body = b"".join(
            (b'{"data":[', b",".join(event.data for event in events), b'],"next_cursor":',
             cursor, b',"reset":true}' if page.reset else b"}")
        )  # fmt: skip
        headers = {"Cache-Control": "no-store", "Vary": "Accept-Encoding"}
        if coding != IDENTITY and len(body) >= MIN_SIZE:
            body = compress(body, coding)
            headers["Content-Encoding"] = coding
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _stream(self, request: web.Request, after: EventId | None) -> web.StreamResponse:
        if self.open_streams >= self._max_streams:
            raise TooManyStreams(
                f"{self._max_streams} change streams are open on this replica", retry_after=5
            )
        self.open_streams += 1
        self._metrics.change_streams.inc()
        try:
            return await self._serve(request, after)
        finally:
            self.open_streams -= 1
            self._metrics.change_streams.dec()

    async def _serve(self, request: web.Request, after: EventId | None) -> web.StreamResponse:
        opening = b": stream open\n\n"
        first: list[Event] = []
        try:
            if after is None:
                cursor = self.hub.last or await self.changes.last_id()
            else:
                page = await self.changes.read(after, PAGE)
                first, cursor = page.events, after
                if page.reset:
                    opening += _reset(after, first)
                    cursor = max(after, page.vouched)
        except CacheUnavailable:
            raise StoreUnavailable("the change feed is unreachable", retry_after=1) from None
        response = web.StreamResponse(
            headers={**STREAM_HEADERS, "X-Request-ID": request_id_var.get() or ""}
        )
        await response.prepare(request)
        try:
            await response.write(opening)
            await self._follow(request, response, cursor, first)
        except (ConnectionError, CacheUnavailable):
            pass  # the client left, or Redis failed: the client resumes by its last id
        return response

    async def _follow(
        self,
        request: web.Request,
        response: web.StreamResponse,
        cursor: EventId,
        pending: list[Event],
    ) -> None:
        quiet_since = time.monotonic()
        while True:
            if pending:
                await response.write(b"".join(_frame(event) for event in pending))
                cursor, quiet_since = pending[-1].id, time.monotonic()
                pending = []
            if self.hub.closing or _gone(request):
                return
            held = self.hub.since(cursor)
            if held is None:  # behind what the hub holds (or no hub): read the log
                page = await self.changes.read(cursor, PAGE)
                if page.reset:
                    await response.write(_reset(cursor, page.events))
                    cursor = max(cursor, page.vouched)
                held = page.events
            if held:
                pending = held
                continue
            left = self._heartbeat - (time.monotonic() - quiet_since)
            if left <= 0:
                await response.write(b": keep-alive\n\n")
                quiet_since = time.monotonic()
                continue
            await self.hub.wait(min(left, CLIENT_CHECK))


def _reset(after: EventId, events: list[Event]) -> bytes:
    """The reset event: events after `after` were dropped; the stream goes on from the
    oldest one still held."""
    oldest = str(events[0].id) if events else None
    data = orjson.dumps({"after": str(after), "oldest": oldest})
    return b"event: reset\ndata: " + data + b"\n\n"


def _frame(event: Event) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        str(event.id).encode(),
        event.kind.encode(),
        event.data,
    )


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _wants_stream(accept: str) -> bool:
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if media.lower() == STREAM:
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000")
                           for p in params)  # fmt: skip
    return False


def _parameters(request: web.Request) -> tuple[EventId | None, int]:
    unknown = sorted(set(request.query) - {"after", "limit", "account"})
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; known: after, limit, account")
    for name in ("after", "limit", "account"):
        if len(request.query.getall(name, [])) > 1:
            raise BadRequest(f"{name} is given more than once")
    # Both are checked when both are given; the header (a reconnecting EventSource) wins.
    after = _event_id(request.query.get("after"))
    header = _event_id(request.headers.get("Last-Event-ID"))
    if header is not None:
        after = header
    limit = DEFAULT_LIMIT
    raw = request.query.get("limit")
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
        limit = int(raw)
    return after, limit


def _event_id(text: str | None) -> EventId | None:
    if text is None:
        return None
    try:
        return EventId.parse(text)
    except ValueError:
        raise BadRequest(
            "after (or Last-Event-ID) must be an event id such as 1714650000000-0, or 0"
        ) from None


FEED = web.AppKey("feed", Feed)


async def changes(request: web.Request) -> web.StreamResponse:
    return await request.app[FEED].handle(request)
