"""What one upstream fetch writes into the cache: the only place that turns upstream answers
into cache entries.

A site fill (`GET /sites/{id}` upstream) writes the site and its flattened connectors and
nodes; a 404 writes negative entries for those keys instead.  An events fill
(`GET /charging-events/site/{id}`) writes one answer under its query's key, with its own
lifetime.  Fills also set the fleet gauges (`gauges.py`); with several accounts every site
and connector carries its `account`.  A fleet fill (`GET /sites`)
writes the same for every site, plus the site list, the known site ids (the gate that keeps
unknown ids from reaching upstream) and the fleet's connectors in their compact form
(`fleet.encode_fleet`).  Every JSON body is serialized once: lists are the `b","`-joins of
their elements' bytes.

Both kinds of fill report what they store to the change recorder (`recorder.py`): before
the cache write it reads what was recorded and diffs what changed, after it appends the
events; a site fill's 404 is a deletion when the fleet list no longer holds the site.

Normalizing a large fleet is CPU work: it runs in a worker thread (the event loop keeps
answering hits), with the garbage collector paused — the fill allocates millions of
short-lived containers that reference counting frees anyway, and full collections over
them cost seconds — and the survivors frozen afterwards.  Sites are processed one by one
and the raw list is released as it goes, so the peak holds one raw fleet, not three.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .cache import Cache
from .encodings import variants
from .engine import Filled
from .entry import make_etag
from .errors import BadUpstreamPayload
from .events import EventsQuery, events_body
from .flatten import duplicate_connector_ids, flatten_connectors, flatten_nodes
from .fleet import encode_fleet
from .gauges import FleetGauges, SiteFacts, site_facts
from .jsonutil import dumps
from .keys import Keys
from .metrics import Metrics
from .normalize import SiteShapeError, normalize_site
from .recorder import ChangeRecorder
from .upstream import Upstream

log = logging.getLogger("gateway.fills")

# Fleets above this many sites are built in a worker thread.
THREAD_THRESHOLD = 20
_gc_pauses = 0
_gc_lock = threading.Lock()


@dataclass(slots=True)
class SiteAges:
    """When each known site's data was stored (the newest copy this process saw)."""

    stored_at: dict[str, float] = field(default_factory=dict)

    def saw(self, site_id: str, stored_at: float) -> None:
        if stored_at > self.stored_at.get(site_id, 0.0):
            self.stored_at[site_id] = stored_at

    def replace(self, site_ids: list[str], stored_at: float) -> None:
        """A fleet fill: exactly these sites exist now."""
        self.stored_at = dict.fromkeys(site_ids, stored_at)


@dataclass(slots=True)
class FleetBuilt:
    bodies: dict[str, bytes]
    site_ids: list[str]
    connector_count: int
    sites: dict[str, bytes]  # site id -> normalized site JSON (for change detection)
    duplicates: int  # connector ids seen more than once
    variants: dict[str, dict[str, bytes]]  # content codings built at fill time
    facts: dict[str, SiteFacts] = field(default_factory=dict)  # for the fleet gauges
    etags: dict[str, str] = field(default_factory=dict)  # site id -> its body's ETag


def build_site(
    site: dict[str, Any], keys: Keys, bodies: dict[str, bytes], account: str | None = None
) -> tuple[bytes, list[tuple[dict[str, Any], bytes]]]:
    """The site's own entries into `bodies`; returns its JSON and its connectors' JSON."""
    site_id = str(site["id"])
    connectors = flatten_connectors(site)
    if account is not None:
        connectors = [{**connector, "account": account} for connector in connectors]
    pairs = [(connector, dumps(connector)) for connector in connectors]
    body = dumps(site)
    bodies[keys.site(site_id)] = body
    bodies[keys.site_connectors(site_id)] = _list_body(body for _, body in pairs)
    bodies[keys.site_nodes(site_id)] = dumps({"data": flatten_nodes(site)})
    return body, pairs


def build_fleet(
    raw_sites: list[Any],
    keys: Keys,
    on_issue: Callable[[str], None],
    account: str | None = None,
) -> FleetBuilt:
    """Every entry a fleet fill writes.  Consumes `raw_sites` (emptied as it goes)."""
    normalized: list[dict[str, Any]] = []
    raw_sites.reverse()
    while raw_sites:
        raw = raw_sites.pop()
        try:
            normalized.append(with_account(normalize_site(raw, on_issue), account))
        except SiteShapeError:
            on_issue("site")
    normalized.sort(key=lambda site: site["id"])
    bodies: dict[str, bytes] = {}
    site_bodies: dict[str, bytes] = {}
    ordered_bodies: list[bytes] = []
    records: list[tuple[dict[str, Any], bytes]] = []
    facts: dict[str, SiteFacts] = {}
    for site in normalized:
        body, pairs = build_site(site, keys, bodies, account)
        site_bodies[str(site["id"])] = body
        facts[str(site["id"])] = site_facts(site)
        ordered_bodies.append(body)
        records.extend(pairs)
    site_ids = [str(site["id"]) for site in normalized]
    duplicates = duplicate_connector_ids(connector for connector, _ in records)
    bodies[keys.sites()] = _list_body(ordered_bodies)
    bodies[keys.known()] = orjson.dumps(site_ids)
    bodies[keys.fleet()] = encode_fleet(records)
    # The fleet list is served whole and often: compressed once here, for every replica.
    # The fleet's per-site entries are compressed where first served (hundreds of sites
    # would add seconds to the fill; most are never asked for in every coding).
    codings = {keys.sites(): variants(bodies[keys.sites()])}
    if duplicates:
        log.warning(
            "duplicate connector ids",
            extra={"scope": "fleet", "count": len(duplicates), "sample": duplicates[:5]},
        )
    etags = {site_id: make_etag(body) for site_id, body in site_bodies.items()}
    return FleetBuilt(
        bodies, site_ids, len(records), site_bodies, len(duplicates), codings, facts, etags
    )


def with_account(site: dict[str, Any], account: str | None) -> dict[str, Any]:
    """The site with its account's name right after its id (several accounts only); it
    replaces an upstream field of that name."""
    if account is None:
        return site
    placed = {"id": site["id"], "account": account}
    placed.update(site)
    placed["account"] = account
    return placed


def _list_body(elements: Any) -> bytes:
    return b'{"data":[' + b",".join(elements) + b"]}"


def release_memory() -> None:
    """Hand the memory a big fill freed back to the system (glibc keeps freed arenas
    otherwise, and the process's RSS stays at the fill's peak).  A no-op elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return


def _paused_gc(work: Callable[[], FleetBuilt]) -> FleetBuilt:
    global _gc_pauses
    with _gc_lock:
        _gc_pauses += 1
        gc.disable()
    try:
        return work()
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0:
                gc.enable()


class Filler:
    def __init__(
        self,
        cache: Cache,
        upstream: Upstream,
        metrics: Metrics,
        ages: SiteAges,
        *,
        account: str | None = None,
        gauges: FleetGauges | None = None,
        events_ttl: float | None = None,
        changes: ChangeRecorder | None = None,
    ) -> None:
        self._cache = cache
        self._keys = cache.keys
        self._upstream = upstream
        self._metrics = metrics
        self.ages = ages
        self._account = account
        self._gauges = gauges or FleetGauges(metrics)
        self._events_ttl = events_ttl
        self.changes = changes

    def _issue(self, field_name: str) -> None:
        self._metrics.normalization_issues.labels(field_name).inc()

    async def fill_site(self, site_id: str) -> Filled:
        raw = await self._upstream.fetch_site(site_id)
        stored_at = self._cache.now()
        if raw is None:
            family = self._keys.site_family(site_id)
            await self._cache.put_negative(family, stored_at=stored_at)
            self.ages.stored_at.pop(site_id, None)
            self._gauges.site_gone(self._account, site_id)
            if self.changes is not None:
                await self.changes.deleted(site_id, stored_at)
            return Filled(negative=set(family))
        try:
            site = with_account(normalize_site(raw, self._issue), self._account)
        except SiteShapeError as exc:
            raise BadUpstreamPayload(f"upstream site is unusable: {exc}") from None
        bodies: dict[str, bytes] = {}
        _, pairs = build_site(site, self._keys, bodies, self._account)
        duplicates = duplicate_connector_ids(connector for connector, _ in pairs)
        if duplicates:
            self._metrics.duplicate_connectors.labels("site").inc(len(duplicates))
        pending = None
        if self.changes is not None:
            stored_id = str(site["id"])  # the key build_site wrote, whatever was asked
            body = bodies[self._keys.site(stored_id)]
            stored = {stored_id: (make_etag(body), body, site)}
            pending = await self.changes.prepare(stored, stored_at, fleet=False)
        # Compressed once here, for every replica: a site's three bodies take about a ms.
        codings = {key: variants(body) for key, body in bodies.items()}
        entries = await self._cache.put_many(bodies, stored_at=stored_at, variants=codings)
        self.ages.saw(site_id, stored_at)
        self._gauges.site_stored(self._account, site_id, site_facts(site))
        if self.changes is not None:
            await self.changes.commit(pending)
        return Filled(entries=entries)

    async def fill_fleet(self) -> Filled:
        raw_sites = await self._upstream.fetch_sites()
        stored_at = self._cache.now()

        def work() -> FleetBuilt:
            return build_fleet(raw_sites, self._keys, self._issue, self._account)

        if len(raw_sites) > THREAD_THRESHOLD:
            built = await asyncio.to_thread(_paused_gc, work)
            gc.freeze()  # what survived (caches, indexes) is long-lived: keep GC off it
        else:
            built = work()
        if built.duplicates:
            self._metrics.duplicate_connectors.labels("fleet").inc(built.duplicates)
        pending = None
        if self.changes is not None:
            stored = {
                site_id: (built.etags[site_id], body, None) for site_id, body in built.sites.items()
            }
            pending = await self.changes.prepare(stored, stored_at, fleet=True)
        # The compact fleet is kept decoded by the service; the sites' own entries go to Redis
        # and are loaded into this process's tier when asked for (a fleet of 500 sites would
        # otherwise park 100+ MiB here that another replica may be the one to serve).
        partial = {self._keys.fleet()}
        partial.update(key for site_id in built.site_ids for key in self._keys.site_family(site_id))
        known = {self._keys.known(): built.bodies.pop(self._keys.known())}
        entries = await self._cache.put_many(
            built.bodies, stored_at=stored_at, partial=partial, variants=built.variants
        )
        # The known ids back the known-id gate for the negative TTL, however short the
        # cache's own lifetimes are set.
        cache = self._cache
        lifetime = max(cache.fresh_ttl + cache.stale_ttl, cache.negative_ttl)
        entries.update(await cache.put_many(known, stored_at=stored_at, lifetime=lifetime))
        self.ages.replace(built.site_ids, stored_at)
        self._gauges.fleet_stored(self._account, built.facts, built.connector_count)
        if self.changes is not None:
            await self.changes.commit(pending)
        if self._cache.shared is not None:
            # Hand back the lists and the fleet (decoded next, by whoever waits); the sites'
            # own entries are in Redis, and need not live on in this process.
            partial.discard(self._keys.fleet())
            entries = {key: entry for key, entry in entries.items() if key not in partial}
        big = len(built.site_ids) > THREAD_THRESHOLD
        del built
        if big:
            release_memory()
        return Filled(entries=entries)

    async def fill_events(self, site_id: str, query: EventsQuery, key: str) -> Filled:
        """One charging-events answer, fresh for `GATEWAY_EVENTS_TTL`; a 404 is negative."""
        raw = await self._upstream.fetch_events(site_id, query.pairs)
        stored_at = self._cache.now()
        if raw is None:
            await self._cache.put_negative([key], stored_at=stored_at)
            return Filled(negative={key})
        bodies = {key: events_body(raw)}
        entries = await self._cache.put_many(
            bodies, stored_at=stored_at, fresh_ttl=self._events_ttl
        )
        return Filled(entries=entries)
