"""The site service of one account: which fill writes which key, the known-id gate, and the
decoded fleet each replica keeps for paging.  Decisions about hit, stale and fetch are the
engine's (`engine.py`); HTTP is the routes'.

Keys and the fills that write them:

    sites, known, fleet                       ← the fleet fill   (upstream GET /sites)
    site:{id}, site:{id}:connectors, :nodes   ← that site's fill (upstream GET /sites/{id}),
                                                and the fleet fill
    events:{id}:<query hash>                  ← that query's events fill, fresh for
                                                GATEWAY_EVENTS_TTL (upstream
                                                GET /charging-events/site/{id})
    /connectors pages, /connectors/{id}       ← read from the decoded fleet (`FleetIndex`)

The known-id gate (contract "Ids"): before an id's miss may go upstream, it must be in the
fleet list.  A list stored less than `GATEWAY_NEGATIVE_TTL` ago is trusted to be complete,
so an id not in it is a 404 without an upstream call; an older (or absent) list is refreshed
first — one shared fetch; after a failed attempt the next waits (see `_refresh_list`), so
unknown ids can never spend the upstream budget one by one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from .cache import Cache
from .cursors import Cursors
from .engine import Fill, FillEngine, Outcome, Served
from .entry import Entry, Lookup, make_etag
from .errors import GatewayError, NotFound, UpstreamUnavailable
from .events import EventsQuery
from .fills import Filler
from .fleet import FleetIndex, Query

VIEWS = ("site", "connectors", "nodes")
LIST_RETRY = 1.0
MAX_SITE_FILLS = 100_000
DECODE_IN_THREAD = 1 << 20


@dataclass(frozen=True, slots=True)
class Known:
    ids: frozenset[str]
    etag: str
    stored_at: float


class SiteService:
    def __init__(
        self,
        engine: FillEngine,
        filler: Filler,
        *,
        negative_ttl: float,
        events_ttl: float = 30.0,
        account: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.cache: Cache = engine.cache
        self.keys = self.cache.keys
        self.filler = filler
        self.ages = filler.ages
        self.account = account
        self._negative_ttl = negative_ttl
        self._events_ttl = events_ttl
        self._monotonic = monotonic
        self._known: Known | None = None
        self._list_retry_at = -1e18
        self._index: FleetIndex | None = None
        self._loading: dict[str, asyncio.Task[FleetIndex]] = {}
        self._site_fills: dict[str, Fill] = {}  # built once per id: hits need them too

    # -- fills ----------------------------------------------------------------------------

    def fleet_fill(self) -> Fill:
        return Fill("fleet", self.keys.known(), self.filler.fill_fleet)

    def _gate_fill(self) -> Fill:
        """The fleet fill as the gate asks for it: satisfied by a list younger than the
        negative TTL (another replica refreshed it a moment ago)."""
        return Fill(
            "fleet",
            self.keys.known(),
            self.filler.fill_fleet,
            satisfied=lambda lookup: self._list_age(lookup.entry) < self._negative_ttl,
        )

    def site_fill(self, site_id: str) -> Fill:
        fill = self._site_fills.get(site_id)
        if fill is None:
            if len(self._site_fills) >= MAX_SITE_FILLS:
                self._site_fills.clear()
            fill = self._site_fills[site_id] = Fill(
                f"site:{site_id}", self.keys.site(site_id), lambda: self.filler.fill_site(site_id)
            )
        return fill

    def events_fill(self, site_id: str, query: EventsQuery) -> Fill:
        key = self.keys.events(site_id, query.digest)
        return Fill(
            f"events:{site_id}:{query.digest}",
            key,
            lambda: self.filler.fill_events(site_id, query, key),
            fresh_ttl=self._events_ttl,
        )

    # -- what the routes ask for ----------------------------------------------------------

    async def sites(self) -> Served:
        return await self.engine.serve(self.keys.sites(), self.fleet_fill())

    async def site(self, site_id: str, view: str = "site") -> Served:
        key = {
            "site": self.keys.site,
            "connectors": self.keys.site_connectors,
            "nodes": self.keys.site_nodes,
        }[view](site_id)
        served = await self.engine.serve(
            key,
            self.site_fill(site_id),
            missing=f"site {site_id!r} not found",
            admit=lambda: self._admit(site_id),
        )
        self.ages.saw(site_id, served.entry.stored_at)
        return served

    def site_hit(self, site_id: str) -> Served | None:
        """`site(site_id)` when it is a fresh tier hit needing no other work, else None."""
        served = self.engine.hit_now(self.keys.site(site_id))
        if served is not None:
            self.ages.saw(site_id, served.entry.stored_at)
        return served

    async def events(self, site_id: str, query: EventsQuery) -> Served:
        """A site's charging events for one canonical query, behind the known-id gate."""
        fill = self.events_fill(site_id, query)
        return await self.engine.serve(
            fill.probe,
            fill,
            missing=f"site {site_id!r} not found",
            admit=lambda: self._admit(site_id),
        )

    async def connector(self, connector_id: str) -> Served:
        missing = f"connector {connector_id!r} not found"
        index, served = await self.fleet_index()
        entry = index.connector(connector_id)
        if entry is None and self._list_age_s(index.stored_at) >= self._negative_ttl:
            # The fleet we hold may predate this connector: refresh it once, then look again.
            await self._refresh_list()
            index, served = await self.fleet_index()
            entry = index.connector(connector_id)
        if entry is None:
            raise NotFound(missing, outcome=_unknown(served.outcome))
        return Served(entry, served.outcome, served.age)

    async def connectors(self, query: Query, cursors: Cursors) -> Served:
        index, served = await self.fleet_index()
        page = index.pages.get(query)
        if page is None:
            positions, after = index.page(query)
            cursor = cursors.encode(query, after) if after is not None else None
            body = b"".join(
                (
                    b'{"data":[',
                    b",".join(index.bodies[position] for position in positions),
                    b'],"next_cursor":',
                    orjson.dumps(cursor),
                    b"}",
                )
            )
            page = index.pages.put(query, Entry(body, index.stored_at, make_etag(body)))
        return Served(page, served.outcome, served.age)

    async def fleet_index(self) -> tuple[FleetIndex, Served]:
        """The decoded fleet; re-decoded only when the stored fleet's ETag changes."""
        served = await self.engine.serve(self.keys.fleet(), self.fleet_fill(), meta_only=True)
        index = self._index
        if index is not None and index.etag == served.entry.etag:
            return index, served
        task = self._loading.get(served.entry.etag)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._decode(served.entry))
            self._loading[served.entry.etag] = task
            task.add_done_callback(lambda _: self._loading.pop(served.entry.etag, None))
        return await asyncio.shield(task), served

    async def _decode(self, entry: Entry) -> FleetIndex:
        body = entry.body
        if not body:
            lookup = await self.cache.get(self.keys.fleet(), keep=False)
            if lookup is None or lookup.entry.etag != entry.etag:
                raise UpstreamUnavailable("the fleet changed while it was read", retry_after=1)
            body = lookup.entry.body
        if len(body) > DECODE_IN_THREAD:  # keep serving hits while a big fleet decodes
            index = await asyncio.to_thread(
                FleetIndex.from_blob, entry.etag, entry.stored_at, body, self.account
            )
        else:
            index = FleetIndex.from_blob(entry.etag, entry.stored_at, body, self.account)
        if self._index is None or self._index.stored_at <= index.stored_at:
            self._index = index
        return index

    # -- the known-id gate ----------------------------------------------------------------

    async def known_ids(self, *, from_shared: bool = False) -> Known | None:
        trusted_for = max(self.cache.fresh_ttl, self._negative_ttl)
        lookup = await self.cache.get(
            self.keys.known(), from_shared=from_shared, fresh_ttl=trusted_for
        )
        if lookup is None or lookup.entry.negative:
            return None
        known = self._known
        if known is None or known.etag != lookup.entry.etag:
            ids = frozenset(str(site_id) for site_id in orjson.loads(lookup.entry.body))
            known = Known(ids, lookup.entry.etag, lookup.entry.stored_at)
            self._known = known
        return known

    async def held_known(self) -> Known | None:
        """The known ids as held, without waiting on upstream; a list past its freshness is
        refreshed in the background (the fleet-wide facade asks on every request)."""
        known = await self.known_ids()
        if known is not None and self._list_age_s(known.stored_at) > self.cache.fresh_ttl:
            self.engine.refresh(self.fleet_fill())
        return known

    async def gate(self, site_id: str) -> Outcome | None:
        """Whether this account lists `site_id`, by the known-id gate's rules: returns when
        it does (the outcome of a list refresh it needed, if any), raises `NotFound` when
        it does not, and an upstream error when the list could not be had."""
        return await self._admit(site_id)

    async def _admit(self, site_id: str) -> Outcome | None:
        """Let a known id's miss go upstream; refuse an unknown one (after at most one
        list refresh, whose outcome is returned: it may have stored the site)."""
        known = await self.known_ids()
        if known is not None and site_id in known.ids:
            return None
        if known is not None and self._list_age_s(known.stored_at) < self._negative_ttl:
            raise NotFound(f"site {site_id!r} not found", outcome=self._gate_outcome(known))
        fetched = await self._refresh_list()
        known = await self.known_ids()
        if known is None or site_id not in known.ids:
            outcome = fetched or (self._gate_outcome(known) if known else Outcome("miss"))
            raise NotFound(f"site {site_id!r} not found", outcome=outcome)
        return fetched

    async def _refresh_list(self) -> Outcome | None:
        """Refresh the fleet list for an unknown id: join a refresh under way, or start
        one.  After an attempt that reached upstream and failed, none is started for a
        while — the negative TTL while
        a list is held (its ids are the answer meanwhile: None), `LIST_RETRY` without one
        (every miss needs it, so unknown ids gain nothing over known ones)."""
        wait = self._list_retry_at - self._monotonic()
        if wait > 0 and not self.engine.running("fleet"):
            if await self.known_ids() is None:
                raise UpstreamUnavailable("the site list could not be fetched", retry_after=wait)
            return None
        try:
            fetched = await self.engine.join(self._gate_fill())
        except UpstreamUnavailable:
            raise  # held back before any call (pause, circuit, budget): the shield waits
        except GatewayError:
            held = await self.known_ids() is not None
            pause = self._negative_ttl if held else min(self._negative_ttl, LIST_RETRY)
            self._list_retry_at = self._monotonic() + pause
            raise
        await self.known_ids(from_shared=True)  # another replica's list may be newer than ours
        return fetched

    def _gate_outcome(self, known: Known) -> Outcome:
        ttl = self._negative_ttl - self._list_age_s(known.stored_at)
        return Outcome("negative_hit", ttl, detail="negative")

    def _list_age(self, entry: Entry) -> float:
        return self._list_age_s(entry.stored_at)

    def _list_age_s(self, stored_at: float) -> float:
        return self.cache.now() - stored_at

    async def listed_ages(self) -> dict[str, float]:
        """When each site's data was stored, for the sites the current fleet list holds (a
        site the list dropped stops being reported at once, on every replica)."""
        known = await self.known_ids()
        if known is None:
            return self.ages.stored_at
        return {site: at for site, at in self.ages.stored_at.items() if site in known.ids}

    # -- purge ----------------------------------------------------------------------------

    async def purge_all(self) -> int:
        self._forget()
        self.ages.stored_at.clear()
        return await self.cache.purge_all()

    async def purge_site(self, site_id: str) -> int:
        """Drop a site, its views, and the fleet entries that hold its data.  The known ids
        stay: the site still exists, and its next request is one site fetch, not a list."""
        keys = self.keys
        self._index = None
        self.ages.stored_at.pop(site_id, None)
        dropped = await self.cache.delete([*keys.site_family(site_id), keys.sites(), keys.fleet()])
        return dropped + await self.cache.delete_prefix(keys.site_events(site_id))

    def _forget(self) -> None:
        self._index = None
        self._known = None

    async def close(self) -> None:
        await self.engine.close()


def _unknown(fleet: Outcome) -> Outcome:
    """The outcome of asking for a connector the fleet does not have."""
    if fleet.result == "miss":
        return fleet
    return Outcome("negative_hit", fleet.ttl, detail="negative")


__all__ = ["VIEWS", "Known", "Lookup", "SiteService"]
