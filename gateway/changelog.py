"""The change log of one account: which content each site has, and the events of its changes.

Two implementations with one interface (`ChangeLog`): `RedisChangeLog`
(`changelog_redis.py`: a Redis Stream, shared by every replica) and `MemoryChangeLog` (an
in-process ring, for the embedded mode).  Both keep, per site, the ETag of the content last
recorded and when that content was fetched, and append events:

    record(site, expected, etag, stored_at)            in one atomic step
      a newer copy was recorded already (its fetch time is later) → nothing
      etag is None (upstream confirmed a 404) and the site is recorded → forget it, `site.deleted`
      the recorded ETag equals etag → only the fetch time moves on (no event)
      no ETag recorded → `site.created`;  another one → `site.updated`, with the changes
      computed against `expected` when that is still the recorded ETag, else
      `"changes": [], "truncated": true` (they are unknown: fetch the site)

So however many replicas race to store the same content, exactly one event is appended.

The baseline: the first fleet list stored into an empty log is recorded without events (a
gateway starting up has not seen anything *change*); it sets the log's `floor`, the id
before which the log knows nothing.  Until then nothing appends events.

Event ids are Redis stream ids (`<milliseconds>-<sequence>`), increasing, and the same on
every replica.  The log holds every event after its floor; events trimmed away at
`GATEWAY_CHANGES_RETENTION` move the floor up to the newest of them.  A reader's position
older than the floor gets `reset`: events after it may have been dropped.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

KINDS = ("site.created", "site.updated", "site.deleted")
_ID = re.compile(r"^([0-9]{1,20})(?:-([0-9]{1,20}))?$")
UNKNOWN_CHANGES = b'[],"truncated":true'


class EventId(NamedTuple):
    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> EventId:
        """`<ms>-<seq>` (or `<ms>`, meaning `<ms>-0`); ValueError otherwise."""
        match = _ID.match(text.strip())
        if match is None:
            raise ValueError(f"not an event id: {text[:40]!r}")
        ms, seq = int(match[1]), int(match[2] or 0)
        if ms >= 1 << 64 or seq >= 1 << 64:
            raise ValueError(f"event id out of range: {text[:40]!r}")
        return cls(ms, seq)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ORIGIN = EventId(0, 0)


@dataclass(frozen=True, slots=True)
class Event:
    id: EventId
    kind: str
    data: bytes  # the event's JSON, its id included

    @classmethod
    def stored(cls, event_id: EventId, kind: str, body: bytes) -> Event:
        """From what the log keeps: the JSON without its id (which the log assigns)."""
        return cls(event_id, kind, b'{"id":"' + str(event_id).encode() + b'",' + body[1:])


@dataclass(frozen=True, slots=True)
class Record:
    """One site's content as a fill stored it (see the module docstring)."""

    site_id: str
    expected: str | None  # the recorded ETag `changes` were computed against (None: none)
    etag: str | None  # the stored content's ETag; None: upstream confirmed the site is gone
    stored_at: float
    prefix: bytes  # the event's JSON up to its kind: b'{"site_id":"…"' (+ ',"account":"…"')
    at: bytes  # JSON string: when the content was fetched (ISO 8601, UTC)
    changes: bytes | None  # JSON: b'[…]' (maybe + b',"truncated":true'); None: not computed


@dataclass(frozen=True, slots=True)
class Recorded:
    etags: dict[str, str]  # site id -> the ETag of its recorded content
    baseline: bool  # a baseline exists: changes are appended as events


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Event]
    reset: bool  # events after the requested position may have been dropped
    oldest: EventId | None  # the oldest event held
    vouched: EventId = ORIGIN  # the log holds every event after this one


class ChangeLog(Protocol):
    async def recorded(self, site_ids: Collection[str] | None = None) -> Recorded: ...
    async def record(
        self, records: Sequence[Record], *, baseline: bool
    ) -> list[tuple[EventId, str]]: ...
    async def read(self, after: EventId, limit: int) -> Page: ...
    async def follow(self, after: EventId, wait: float) -> list[Event]: ...
    async def last_id(self) -> EventId: ...
    async def oldest(self, count: int) -> list[tuple[str, float]]: ...
    async def tracked(self) -> int: ...
    async def close(self) -> None: ...


def event_body(record: Record, kind: str, changes: bytes) -> bytes:
    """The event's JSON without its id (the Redis script builds the same bytes)."""
    etag = b"null" if record.etag is None else b'"' + record.etag.encode() + b'"'
    return b"".join(
        (record.prefix, b',"kind":"', kind.encode(), b'","at":', record.at, b',"etag":', etag,
         b',"changes":', changes, b"}")
    )  # fmt: skip


class MemoryChangeLog:
    """The embedded mode's change log: one process, a ring of `retention` events."""

    def __init__(self, *, retention: int, clock: Callable[[], float] = time.time) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=retention)
        self._etags: dict[str, str] = {}
        self._stored_at: dict[str, float] = {}
        self._clock = clock
        self._last = ORIGIN
        self._floor: EventId | None = None  # every event after it is held
        self._appended = asyncio.Event()

    def _next_id(self) -> EventId:
        ms = int(self._clock() * 1000)
        self._last = (
            EventId(ms, 0) if ms > self._last.ms else self._last._replace(seq=self._last.seq + 1)
        )
        return self._last

    async def recorded(self, site_ids: Collection[str] | None = None) -> Recorded:
        if site_ids is None:
            etags = dict(self._etags)
        else:
            etags = {s: self._etags[s] for s in site_ids if s in self._etags}
        return Recorded(etags, self._floor is not None)

    async def record(
        self, records: Sequence[Record], *, baseline: bool
    ) -> list[tuple[EventId, str]]:
        quiet = self._floor is None
        if quiet and baseline:
            self._floor = self._next_id()
        appended: list[tuple[EventId, str]] = []
        for record in records:
            kind, changes = self._apply(record)
            if kind is None or quiet:
                continue
            event_id = self._next_id()
            if len(self._events) == self._events.maxlen:
                self._floor = self._events[0].id  # about to be dropped
            self._events.append(Event.stored(event_id, kind, event_body(record, kind, changes)))
            appended.append((event_id, kind))
        if appended:
            self._appended.set()
            self._appended = asyncio.Event()
        return appended

    def _apply(self, record: Record) -> tuple[str | None, bytes]:
        site = record.site_id
        current = self._etags.get(site)
        if self._stored_at.get(site, float("-inf")) > record.stored_at:
            return None, b""
        if record.etag is None:
            if current is None:
                return None, b""
            del self._etags[site]
            self._stored_at.pop(site, None)
            return "site.deleted", b"[]"
        self._stored_at[site] = record.stored_at
        if current == record.etag:
            return None, b""
        self._etags[site] = record.etag
        if current is None:
            return "site.created", b"[]"
        if current == record.expected and record.changes is not None:
            return "site.updated", record.changes
        return "site.updated", UNKNOWN_CHANGES

    async def read(self, after: EventId, limit: int) -> Page:
        vouched = self._floor or ORIGIN
        reset = after != ORIGIN and (self._floor is None or after < vouched)
        events = [event for event in self._events if event.id > after][:limit]
        oldest = self._events[0].id if self._events else None
        return Page(events, reset, oldest, vouched)

    async def follow(self, after: EventId, wait: float) -> list[Event]:
        if not self._events or self._events[-1].id <= after:
            try:
                await asyncio.wait_for(self._appended.wait(), wait)
            except TimeoutError:
                return []
        return [event for event in self._events if event.id > after]

    async def last_id(self) -> EventId:
        return self._events[-1].id if self._events else ORIGIN

    async def oldest(self, count: int) -> list[tuple[str, float]]:
        return sorted(self._stored_at.items(), key=lambda item: (item[1], item[0]))[:count]

    async def tracked(self) -> int:
        return len(self._stored_at)

    async def close(self) -> None:
        return None
