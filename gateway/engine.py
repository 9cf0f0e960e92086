"""The fill engine: the one implementation of "serve this key from cache, or fill it".

    lookup K ── fresh ─────────────► hit  (little freshness left: refresh F in the background)
       │    ├── negative ──────────► NotFound (negative hit)
       │    └── stale ─────────────► stale (refresh F in the background; `stale-if-error` while
       │                                   upstream is held back)
       └─ miss ─► [admit] ─► join F ► miss (K written by F) or NotFound (F found K missing)

A key K is written by a fill F (the fleet fill, one site's fill, …).  Joining F has two
levels of single flight: in the process, concurrent requests share one task; across
replicas, the task takes a short Redis lock (`Coordinator`).  The lock's winner first reads
F's probe key again (a Redis hiccup or another replica finishing between our lookup and
our lock must not cost an upstream call); a loser waits for the lock to go and then reads
what the holder stored.  A request that waited on a fetch someone else started is
`collapsed`: that is the exact count of joiners.

The engine returns a typed `Served` (or raises a `GatewayError` carrying an `Outcome`); it
never builds HTTP headers.  Time comes from the cache's injected clock, so every path is
tested without sleeping.  A background refresh's failure never touches the good entry (fills
only write after a good answer) and ends in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from .cache import Cache
from .entry import Entry, Lookup
from .errors import GatewayError, NotFound, UpstreamUnavailable
from .lifecycle import stop_tasks
from .locks import Coordinator, LocalCoordinator

log = logging.getLogger("gateway.engine")
MAX_WAIT_ROUNDS = 3

Result = Literal["hit", "stale", "miss", "negative_hit"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the cache did for one request; the HTTP edge renders it (Cache-Status, metrics)."""

    result: Result
    ttl: float = 0.0  # freshness left (negative: stale for that long)
    collapsed: bool = False
    stored: bool = False  # a miss whose fetch stored the answer
    detail: str | None = None  # stale-while-revalidate, stale-if-error, negative


@dataclass(frozen=True, slots=True)
class Served:
    entry: Entry
    outcome: Outcome
    age: float


@dataclass(slots=True)
class Filled:
    """What one fill did: entries written, keys found missing, or done by another replica."""

    entries: dict[str, Entry] = field(default_factory=dict)
    negative: set[str] = field(default_factory=set)
    remote: bool = False


@dataclass(frozen=True, slots=True)
class Fill:
    """One upstream fetch.  `probe` is a key the fetch writes: under the lock, a probe
    that `satisfied` accepts means another replica just did the work.  `fresh_ttl`: the
    freshness of what it writes, when not the cache's (charging events)."""

    name: str
    probe: str
    run: Callable[[], Awaitable[Filled]]
    satisfied: Callable[[Lookup], bool] | None = None
    fresh_ttl: float | None = None


class FillEngine:
    def __init__(
        self,
        cache: Cache,
        *,
        coordinator: Coordinator | None = None,
        upstream_available: Callable[[], bool] = lambda: True,
        refresh_ahead: float = 0.1,
    ) -> None:
        self.cache = cache
        self._coordinator = coordinator or LocalCoordinator()
        self._upstream_available = upstream_available
        self._refresh_ahead = refresh_ahead
        self._inflight: dict[str, asyncio.Task[Filled]] = {}

    def age(self, entry: Entry) -> float:
        return max(0.0, self.cache.now() - entry.stored_at)

    async def serve(
        self,
        key: str,
        fill: Fill,
        *,
        missing: str = "not found",
        admit: Callable[[], Awaitable[Outcome | None]] | None = None,
        fresh_ttl: float | None = None,
        meta_only: bool = False,
    ) -> Served:
        """Serve `key`; on a miss, `admit` may refuse (raise) before anything is fetched, or
        fetch something itself that may have written `key` (it returns that fetch's
        outcome).  With `meta_only` a served entry may lack its body (the caller keeps a
        decoded form)."""
        fresh_ttl = fill.fresh_ttl if fresh_ttl is None else fresh_ttl
        lookup = await self.cache.get(key, fresh_ttl=fresh_ttl, meta_only=meta_only)
        if lookup is not None:
            return self.from_lookup(lookup, fill, missing, fresh_ttl)
        if admit is not None:
            fetched = await admit()
            if fetched is not None:
                lookup = await self.cache.get(key, fresh_ttl=fresh_ttl, meta_only=meta_only)
                if lookup is not None and not lookup.entry.negative:
                    return Served(lookup.entry, fetched, self.age(lookup.entry))
        return await self.fetch(
            key, fill, missing=missing, fresh_ttl=fresh_ttl, meta_only=meta_only
        )

    def hit_now(self, key: str) -> Served | None:
        """A fresh hit from the tier that needs nothing else (no Redis read, no refresh to
        start), else None: the caller then takes the way of `serve`."""
        lookup = self.cache.peek(key)
        if lookup is None or lookup.entry.negative or not lookup.fresh:
            return None
        if self._refresh_due(lookup, None):
            return None
        return Served(lookup.entry, Outcome("hit", lookup.ttl), self.age(lookup.entry))

    def _refresh_due(self, lookup: Lookup, fresh_ttl: float | None) -> bool:
        """A fresh entry inside the refresh-ahead window: served, and refreshed behind it."""
        ttl = self.cache.fresh_ttl if fresh_ttl is None else fresh_ttl
        return lookup.ttl < self._refresh_ahead * ttl

    def from_lookup(
        self, lookup: Lookup, fill: Fill, missing: str, fresh_ttl: float | None = None
    ) -> Served:
        entry = lookup.entry
        if entry.negative:
            raise NotFound(missing, outcome=Outcome("negative_hit", lookup.ttl, detail="negative"))
        if lookup.fresh:
            if self._refresh_due(lookup, fresh_ttl):
                self.refresh(fill)
            return Served(entry, Outcome("hit", lookup.ttl), self.age(entry))
        available = self._upstream_available()
        self.refresh(fill)
        detail = "stale-while-revalidate" if available else "stale-if-error"
        return Served(entry, Outcome("stale", lookup.ttl, detail=detail), self.age(entry))

    async def fetch(
        self,
        key: str,
        fill: Fill,
        *,
        missing: str = "not found",
        fresh_ttl: float | None = None,
        meta_only: bool = False,
    ) -> Served:
        """Join (or start) `fill` and serve what it wrote for `key`."""
        fresh_ttl = fill.fresh_ttl if fresh_ttl is None else fresh_ttl
        collapsed = False
        for _ in range(MAX_WAIT_ROUNDS):
            filled, joined = await self._join(fill, key)
            collapsed = collapsed or joined or filled.remote
            outcome = Outcome("miss", collapsed=collapsed, stored=True)
            entry = filled.entries.get(key)
            if entry is not None:
                return Served(entry, outcome, 0.0)
            if key in filled.negative:
                raise NotFound(missing, outcome=outcome)
            lookup = await self.cache.get(
                key, fresh_ttl=fresh_ttl, meta_only=meta_only, from_shared=filled.remote
            )
            if lookup is not None and lookup.entry.negative:
                raise NotFound(missing, outcome=outcome)
            if lookup is not None:
                return Served(lookup.entry, outcome, self.age(lookup.entry))
            if not filled.remote:
                # The fill ran here and did not write `key`: the upstream has no such thing.
                raise NotFound(missing, outcome=outcome)
        raise UpstreamUnavailable(
            "another replica's fetch did not complete",
            retry_after=1,
            outcome=Outcome("miss", collapsed=collapsed),
        )

    async def _join(self, fill: Fill, key: str | None = None) -> tuple[Filled, bool]:
        """(what the fill did, whether this request joined a fetch already under way).
        `key`: what the caller needs; a new run checks it (else the fill's probe) first."""
        task = self._inflight.get(fill.name)
        joined = task is not None
        if task is None:
            task = self._start(fill, key)
        try:
            # shield: a client going away must not cancel a fetch others are waiting for.
            return await asyncio.shield(task), joined
        except GatewayError as error:
            if error.outcome is None:
                error.outcome = Outcome("miss", collapsed=joined)
            raise

    def _start(self, fill: Fill, key: str | None = None) -> asyncio.Task[Filled]:
        task = asyncio.get_running_loop().create_task(self._lead(fill, key))
        self._inflight[fill.name] = task
        task.add_done_callback(lambda _: self._inflight.pop(fill.name, None))
        return task

    async def _lead(self, fill: Fill, key: str | None = None) -> Filled:
        token = await self._coordinator.try_lock(fill.name)
        if token is None:
            await self._coordinator.wait_unlocked(fill.name)
            return Filled(remote=True)
        try:
            if await self._recently_filled(fill, key):
                return Filled(remote=True)
            return await fill.run()
        finally:
            await self._coordinator.unlock(fill.name, token)

    async def _recently_filled(self, fill: Fill, key: str | None) -> bool:
        """Double-check under the lock: our miss may have been a Redis hiccup, or another
        replica finished between our lookup and our lock.  The key this run is for (else
        the fill's probe) being fresh, outside the refresh-ahead window, means there is
        nothing to do; a probe alone is not enough when the key itself is gone (a purge
        drops a list and keeps the ids)."""
        if key is not None and key != fill.probe:
            needed = await self.cache.get(
                key, meta_only=True, from_shared=True, fresh_ttl=fill.fresh_ttl
            )
            if needed is None:
                return False
        lookup = await self.cache.get(
            fill.probe, meta_only=True, from_shared=True, fresh_ttl=fill.fresh_ttl
        )
        if lookup is None:
            return False
        if fill.satisfied is not None:
            return fill.satisfied(lookup)
        ttl = self.cache.fresh_ttl if fill.fresh_ttl is None else fill.fresh_ttl
        return lookup.entry.negative or lookup.ttl > self._refresh_ahead * ttl

    def refresh(self, fill: Fill) -> None:
        """Start `fill` in the background unless it runs already or upstream is held back."""
        if fill.name in self._inflight or not self._upstream_available():
            return
        self._start(fill).add_done_callback(_log_refresh_outcome)

    def running(self, name: str) -> bool:
        return name in self._inflight

    @property
    def busy(self) -> bool:
        """Whether any fill runs: a request's or a background refresh."""
        return bool(self._inflight)

    async def join(self, fill: Fill) -> Outcome:
        """Run `fill` now (or join the run under way) until its probe key is written; for
        callers that need it done.  Another replica's run counts if it wrote the probe."""
        collapsed = False
        for _ in range(MAX_WAIT_ROUNDS):
            filled, joined = await self._join(fill)
            collapsed = collapsed or joined or filled.remote
            if not filled.remote:
                return Outcome("miss", collapsed=collapsed, stored=True)
            if await self.cache.get(fill.probe, meta_only=True, from_shared=True) is not None:
                return Outcome("miss", collapsed=True, stored=True)
        raise UpstreamUnavailable(
            "another replica's fetch did not complete",
            retry_after=1,
            outcome=Outcome("miss", collapsed=collapsed),
        )

    async def close(self) -> None:
        await stop_tasks(list(self._inflight.values()), "fills")


def _log_refresh_outcome(task: asyncio.Task[Filled]) -> None:
    """Background refreshes have no waiting client: their failures end in the log."""
    if task.cancelled():
        return
    error = task.exception()
    if isinstance(error, GatewayError):
        log.warning("background refresh failed", extra={"error": error.slug})
    elif error is not None:
        log.error("background refresh crashed", exc_info=error)
