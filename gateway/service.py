"""The site service: the one place that decides hit, miss, stale, collapse and fetch.

A request for cache key K (whose data comes from fill F: the fleet fill or one site's fill):

    lookup K ── fresh ──────────────► serve (hit); if little freshness is left, refresh F
       │    └── negative ───────────► 404 (negative_hit)
       ├─ stale ────────────────────► serve stale at once; refresh F in the background
       └─ miss ─► fetch F (collapsed) ► serve what F wrote for K (fwd=miss; stored)

Collapsing has two levels.  In one process, concurrent fetches of F share one task
(`_inflight`), and joiners are marked `collapsed`.  Across replicas, the task first takes a
short lock in Redis (`Coordinator`); a replica that finds the lock taken waits for it to be
released and then reads what the holder stored, instead of calling upstream.  A holder that
dies blocks others no longer than the lock's expiry; then a waiter fetches itself.

A refresh failure never touches the good entry: fills only write after a good answer, and
only an upstream 404 writes negative entries.  Background refreshes are tracked, logged on
failure, and cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from .cache import Cache, Entry, Lookup
from .errors import GatewayError, NotFound, UpstreamUnavailable
from .fills import Filled, Filler
from .fleet import FleetIndex
from .locks import Coordinator, LocalCoordinator
from .metrics import Metrics

log = logging.getLogger("gateway.service")
CACHE_NAME = "chargepilot-gateway"
MAX_WAIT_ROUNDS = 3
DECODE_IN_THREAD = 1 << 20


@dataclass(frozen=True, slots=True)
class Fill:
    """One upstream fetch, for the key `probe` that a request needs (the fetch writes it):
    a lock winner that finds `probe` fresh knows another replica has just done the work."""

    name: str
    probe: str
    run: Callable[[], Awaitable[Filled]]


@dataclass(frozen=True, slots=True)
class Served:
    entry: Entry
    cache_status: str
    age: float
    result: str  # hit, miss, stale


class SiteService:
    def __init__(
        self,
        cache: Cache,
        filler: Filler,
        metrics: Metrics,
        *,
        coordinator: Coordinator | None = None,
        upstream_available: Callable[[], bool],
        refresh_ahead: float = 0.1,
    ) -> None:
        self.cache = cache
        self.keys = cache.keys
        self._filler = filler
        self._metrics = metrics
        self._coordinator = coordinator or LocalCoordinator()
        self._upstream_available = upstream_available
        self._refresh_ahead = refresh_ahead
        self._inflight: dict[str, asyncio.Task[Filled]] = {}
        self.site_stored_at: dict[str, float] = {}
        self._fleet: FleetIndex | None = None

    # -- what the routes ask for -------------------------------------------------------

    def _fleet_fill(self, probe: str) -> Fill:
        return Fill("fleet", probe, self._filler.fill_sites)

    def _site_fill(self, site_id: str, probe: str) -> Fill:
        return Fill(f"site:{site_id}", probe, lambda: self._filler.fill_site(site_id))

    async def sites(self, route: str) -> Served:
        key = self.keys.sites()
        return await self._serve(route, key, self._fleet_fill(key))

    async def fleet_index(self, route: str) -> tuple[FleetIndex, Served]:
        """The decoded fleet connector list; re-decoded only when its ETag changes."""
        key = self.keys.fleet_connectors()
        peeked = await self.cache.peek(key)
        current = self._fleet
        if peeked is not None and current is not None and peeked.entry.etag == current.etag:
            served = self._from_lookup(route, peeked, self._fleet_fill(key), None)
            return current, served
        served = await self._serve(route, key, self._fleet_fill(key))
        if current is None or current.etag != served.entry.etag:
            entry = served.entry
            if len(entry.body) > DECODE_IN_THREAD:  # keep serving hits while a big fleet decodes
                current = await asyncio.to_thread(FleetIndex.from_body, entry.etag, entry.body)
            else:
                current = FleetIndex.from_body(entry.etag, entry.body)
            self._fleet = current
        return current, served

    async def site(self, route: str, site_id: str, key: str | None = None) -> Served:
        key = key or self.keys.site(site_id)
        served = await self._serve(
            route, key, self._site_fill(site_id, key), missing=f"site {site_id!r} not found"
        )
        # Another replica may have refreshed it: the age gauge follows the newest copy seen.
        if served.entry.stored_at > self.site_stored_at.get(site_id, 0.0):
            self.site_stored_at[site_id] = served.entry.stored_at
        return served

    async def connector(self, route: str, connector_id: str) -> Served:
        """Index read; on a miss, the fleet fill (collapsed) tells which connectors exist."""
        key = self.keys.connector(connector_id)
        missing = f"connector {connector_id!r} not found"
        lookup = await self.cache.get(key)
        if lookup is not None:
            return self._from_lookup(route, lookup, self._fleet_fill(key), missing)
        self._metrics.cache_lookups.labels(route, "miss").inc()
        fleet = await self.cache.peek(self.keys.sites())
        if fleet is not None and fleet.fresh:
            # The fleet is current and has no such connector.
            raise NotFound(missing, cache_status=f"{CACHE_NAME}; hit; detail=negative")
        filled, collapsed = await _marked_miss(self._fetch(self._fleet_fill(key), route))
        entry = filled.entries.get(key)
        if entry is None:
            lookup = await self.cache.get(key)
            if lookup is None or lookup.entry.negative:
                raise NotFound(missing, cache_status=_stored_status(collapsed))
            entry = lookup.entry
        return Served(entry, _stored_status(collapsed), self._age(entry), "miss")

    # -- the decision --------------------------------------------------------------------

    async def _serve(
        self, route: str, key: str, fill: Fill, *, missing: str | None = None
    ) -> Served:
        lookup = await self.cache.get(key)
        if lookup is not None:
            return self._from_lookup(route, lookup, fill, missing)
        self._metrics.cache_lookups.labels(route, "miss").inc()
        for _ in range(MAX_WAIT_ROUNDS):
            filled, collapsed = await _marked_miss(self._fetch(fill, route))
            status = _stored_status(collapsed)
            entry = filled.entries.get(key)
            if entry is not None:
                return Served(entry, status, 0.0, "miss")
            if key not in filled.negative:
                # Another replica filled it; read its result from the shared cache.
                lookup = await self.cache.get(key)
                if lookup is not None and not lookup.entry.negative:
                    return Served(lookup.entry, status, self._age(lookup.entry), "miss")
                if lookup is None and filled.remote:
                    continue
            raise NotFound(missing or "not found", cache_status=status)
        raise UpstreamUnavailable(
            "another replica's fetch did not complete",
            retry_after=1,
            cache_status=f"{CACHE_NAME}; fwd=miss",
        )

    def _from_lookup(self, route: str, lookup: Lookup, fill: Fill, missing: str | None) -> Served:
        if lookup.entry.negative:
            self._metrics.cache_lookups.labels(route, "negative_hit").inc()
            raise NotFound(
                missing or "not found",
                cache_status=f"{CACHE_NAME}; hit; ttl={max(0, int(lookup.ttl))}; detail=negative",
            )
        age = self._age(lookup.entry)
        if lookup.fresh:
            self._metrics.cache_lookups.labels(route, "hit").inc()
            if lookup.ttl < self._refresh_ahead * self.cache.fresh_ttl:
                self._refresh(fill)
            return Served(lookup.entry, f"{CACHE_NAME}; hit; ttl={int(lookup.ttl)}", age, "hit")
        self._metrics.cache_lookups.labels(route, "stale").inc()
        detail = "stale-while-revalidate"
        if not self._upstream_available():
            detail = "stale-if-error"
        self._refresh(fill)
        ttl = min(-1, int(lookup.ttl))
        return Served(lookup.entry, f"{CACHE_NAME}; hit; ttl={ttl}; detail={detail}", age, "stale")

    def _age(self, entry: Entry) -> float:
        return max(0.0, self.cache.now() - entry.stored_at)

    # -- fetching ------------------------------------------------------------------------

    def _start(self, fill: Fill) -> asyncio.Task[Filled]:
        task = self._inflight.get(fill.name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lead(fill))
            self._inflight[fill.name] = task
            task.add_done_callback(lambda _: self._inflight.pop(fill.name, None))
        return task

    async def _fetch(self, fill: Fill, route: str) -> tuple[Filled, bool]:
        collapsed = fill.name in self._inflight
        if collapsed:
            self._metrics.coalesced.labels(route).inc()
        # shield: a client going away must not cancel a fetch others are waiting for.
        filled = await asyncio.shield(self._start(fill))
        if filled.remote and not collapsed:
            self._metrics.coalesced.labels(route).inc()
        return filled, collapsed or filled.remote

    async def _lead(self, fill: Fill) -> Filled:
        token = await self._coordinator.try_lock(fill.name)
        if token is None:
            await self._coordinator.wait_unlocked(fill.name)
            return Filled(remote=True)
        try:
            if await self._recently_filled(fill):
                return Filled(remote=True)
            filled = await fill.run()
        finally:
            await self._coordinator.unlock(fill.name, token)
        self.site_stored_at.update(filled.site_ages)
        return filled

    async def _recently_filled(self, fill: Fill) -> bool:
        """Double-check under the lock: our miss may have been a Redis hiccup, or another
        replica finished between our lookup and our lock.  Fresh and outside the
        refresh-ahead window means there is nothing to do."""
        lookup = await self.cache.get(fill.probe)
        return lookup is not None and (
            lookup.entry.negative or lookup.ttl > self._refresh_ahead * self.cache.fresh_ttl
        )

    def _refresh(self, fill: Fill) -> None:
        if fill.name in self._inflight or not self._upstream_available():
            return
        self._start(fill).add_done_callback(_log_refresh_outcome)

    async def purge_all(self) -> int:
        self._fleet = None
        self.site_stored_at.clear()
        return await self.cache.purge_all()

    async def purge_site(self, site_id: str) -> int:
        """Drop a site, its views, its connector index entries, and the lists holding it."""
        keys = self.keys
        doomed = [*keys.site_family(site_id), keys.sites(), keys.fleet_connectors()]
        connectors = await self.cache.get(keys.site_connectors(site_id))
        if connectors is not None and not connectors.entry.negative:
            for connector in orjson.loads(connectors.entry.body)["data"]:
                if connector.get("id") is not None:
                    doomed.append(keys.connector(str(connector["id"])))
        await self.cache.delete(doomed)
        self.site_stored_at.pop(site_id, None)
        return len(doomed)

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _marked_miss(fetch: Awaitable[tuple[Filled, bool]]) -> tuple[Filled, bool]:
    """A fetch whose failure reaches the client as a problem that says it was a miss."""
    try:
        return await fetch
    except GatewayError as error:
        if error.cache_status is None:
            error.cache_status = f"{CACHE_NAME}; fwd=miss"
        raise


def _stored_status(collapsed: bool) -> str:
    return f"{CACHE_NAME}; fwd=miss; stored" + ("; collapsed" if collapsed else "")


def _log_refresh_outcome(task: asyncio.Task[Filled]) -> None:
    """Background refreshes have no waiting client: their failures end in the log."""
    if task.cancelled():
        return
    error = task.exception()
    if isinstance(error, GatewayError):
        log.warning("background refresh failed", extra={"error": error.slug})
    elif error is not None:
        log.error("background refresh crashed", exc_info=error)
