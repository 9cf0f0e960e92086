"""What one upstream fetch writes into the cache: a site with its flattened views, or the
whole fleet.  The only place that turns upstream answers into cache entries.

A site fill (`GET /sites/{id}` upstream) writes, in one pipelined batch, the site and its
flattened connectors and nodes; a 404 writes negative entries for those keys instead.  A
fleet fill (`GET /sites`) writes the same for every site, the site list, the fleet-wide
connector list sorted by (site id, connector id), and the connector index: one entry per
connector id holding the connector's own body, so `/connectors/{id}` on any replica is a
single read.  Only the fleet fill writes the index, so an id that appears in two sites
always resolves to the same one (the site with the smaller id), whatever was filled last.
Normalizing and flattening a large fleet is CPU work, so it runs in a worker thread to keep
the event loop answering cache hits meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from .cache import Cache, Entry
from .errors import BadUpstreamPayload
from .flatten import duplicate_connector_ids, flatten_connectors, flatten_nodes
from .jsonutil import dumps
from .metrics import Metrics
from .normalize import SiteShapeError, normalize_site, normalize_sites
from .upstream import Upstream

log = logging.getLogger("gateway.fills")

# Fleets above this many sites are normalized in a worker thread.
THREAD_THRESHOLD = 20


@dataclass(slots=True)
class Filled:
    """The outcome of one fill: entries written, keys now known missing, sites seen."""

    entries: dict[str, Entry] = field(default_factory=dict)
    negative: set[str] = field(default_factory=set)
    site_ages: dict[str, float] = field(default_factory=dict)
    remote: bool = False  # another replica did the fill; read the cache for the result


@dataclass(slots=True)
class _Built:
    bodies: dict[str, bytes]
    site_ids: list[str]
    connector_count: int


class Filler:
    def __init__(self, cache: Cache, upstream: Upstream, metrics: Metrics) -> None:
        self._cache = cache
        self._keys = cache.keys
        self._upstream = upstream
        self._metrics = metrics

    def _issue(self, field_name: str) -> None:
        self._metrics.normalization_issues.labels(field_name).inc()

    async def fill_site(self, site_id: str) -> Filled:
        raw = await self._upstream.fetch_site(site_id)
        stored_at = self._cache.now()
        if raw is None:
            family = self._keys.site_family(site_id)
            await self._cache.put_negative(family, stored_at=stored_at)
            return Filled(negative=set(family))
        try:
            site = normalize_site(raw, self._issue)
        except SiteShapeError as exc:
            raise BadUpstreamPayload(f"upstream site is unusable: {exc}") from None
        bodies: dict[str, bytes] = {}
        connectors = self._site_bodies(site_id, site, bodies)
        self._report_duplicates("site", connectors)
        entries = await self._cache.put_many(bodies, stored_at=stored_at)
        return Filled(entries=entries, site_ages={site_id: stored_at})

    async def fill_sites(self) -> Filled:
        raw_sites = await self._upstream.fetch_sites()
        stored_at = self._cache.now()
        if len(raw_sites) > THREAD_THRESHOLD:
            built = await asyncio.to_thread(self._build_fleet, raw_sites)
        else:
            built = self._build_fleet(raw_sites)
        entries = await self._cache.put_many(built.bodies, stored_at=stored_at)
        self._metrics.sites_cached.set(len(built.site_ids))
        self._metrics.connectors_cached.set(built.connector_count)
        return Filled(entries=entries, site_ages=dict.fromkeys(built.site_ids, stored_at))

    def _build_fleet(self, raw_sites: list[Any]) -> _Built:
        sites = normalize_sites(raw_sites, self._issue)
        bodies: dict[str, bytes] = {self._keys.sites(): dumps({"data": sites})}
        fleet: list[dict[str, Any]] = []
        site_ids = [str(site["id"]) for site in sites]
        for site_id, site in zip(site_ids, sites, strict=True):
            connectors = self._site_bodies(site_id, site, bodies)
            for connector in connectors:
                connector_id = connector.get("id")
                if connector_id is not None:
                    # setdefault: the first site (by id) keeps a duplicated id's entry.
                    bodies.setdefault(self._keys.connector(connector_id), dumps(connector))
            fleet.extend(connectors)
        self._report_duplicates("fleet", fleet)
        bodies[self._keys.fleet_connectors()] = dumps({"data": fleet})
        return _Built(bodies, site_ids, len(fleet))

    def _site_bodies(
        self, site_id: str, site: dict[str, Any], bodies: dict[str, bytes]
    ) -> list[dict[str, Any]]:
        keys = self._keys
        connectors = flatten_connectors(site)
        bodies[keys.site(site_id)] = dumps(site)
        bodies[keys.site_connectors(site_id)] = dumps({"data": connectors})
        bodies[keys.site_nodes(site_id)] = dumps({"data": flatten_nodes(site)})
        return connectors

    def _report_duplicates(self, scope: str, connectors: list[dict[str, Any]]) -> None:
        duplicates = duplicate_connector_ids(connectors)
        if duplicates:
            self._metrics.duplicate_connectors.labels(scope).inc(len(duplicates))
            log.warning(
                "duplicate connector ids",
                extra={"scope": scope, "count": len(duplicates), "sample": duplicates[:5]},
            )
