"""The fleet-wide facade: what the routes call, over every account's `SiteService`.

With one account every call goes straight to its service (answers carry no `account`).
With several (`CHARGEPILOT_ACCOUNTS_FILE`), each account keeps its own namespace, budget,
pause and circuit, and this facade makes one fleet of them:

    /sites                 every account's list, merged by id (`merge.py`); `?account=`:
                           that account's list alone
    /sites/{id}, views,    served by the account whose list has the id (the known-id gate
    charging events        of each account decides: `SiteService.gate`); listed by several:
                           409 unless `?account=` names one; by none: 404
    /connectors            pages merged across the accounts' decoded fleets, cursors naming
                           the account of their last connector
    /connectors/{id}       the account that has it; several: 409 unless `?account=`

Lists keep answering when an account's upstream fails and nothing stale is held for it:
200 with the others' data and `"unavailable_accounts": [...]` (an upstream error of every
account is the error).  Merged bodies are built once per combination of the parts' ETags
(and unavailable accounts) and kept, so a hit builds nothing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping, Sequence
from typing import Any, TypeVar

from .cursors import Cursors
from .engine import Outcome, Served
from .entry import Entry, make_etag
from .errors import BadRequest, Conflict, GatewayError, NotFound, UpstreamError
from .events import EventsQuery
from .fleet import FleetIndex, PageCache, Query
from .merge import merge_site_lists, merged_page, worst
from .service import SiteService

T = TypeVar("T")
MERGE_IN_THREAD = 1 << 20
KEPT_LISTS = 8


class Fleetwide:
    def __init__(self, services: Mapping[str, SiteService]) -> None:
        if not services:
            raise ValueError("Fleetwide needs at least one account's SiteService")
        self.services = dict(services)
        self.names = sorted(self.services)
        self.multi = len(self.services) > 1
        self._lists: OrderedDict[Hashable, Entry] = OrderedDict()
        self._building: dict[Hashable, asyncio.Task[Entry]] = {}
        self._pages: tuple[Hashable, PageCache] | None = None

    @property
    def first(self) -> SiteService:
        return next(iter(self.services.values()))

    def account(self, name: str | None) -> str | None:
        """A client's `?account=`: None, or a configured account's name (else a 400)."""
        if name is not None and name not in self.services:
            raise BadRequest(f"unknown account {name!r}; accounts: {', '.join(self.names)}")
        return name

    # -- lists ----------------------------------------------------------------------------

    async def sites(self, account: str | None = None) -> Served:
        if not self.multi or account is not None:
            return await self.services[account or self.names[0]].sites()
        parts, unavailable = await self._each(lambda service: service.sites())
        key = ("sites", tuple((name, part.entry.etag) for name, part in parts), unavailable)

        async def build() -> Entry:
            bodies = [(name, part.entry.body) for name, part in parts]
            if sum(len(body) for _, body in bodies) > MERGE_IN_THREAD:
                body = await asyncio.to_thread(merge_site_lists, bodies, unavailable)
            else:
                body = merge_site_lists(bodies, unavailable)
            stored_at = min(part.entry.stored_at for _, part in parts)
            return Entry(body, stored_at, make_etag(body))

        entry = await self._once(key, build)
        return _combined(entry, [part for _, part in parts])

    async def connectors(self, query: Query, cursors: Cursors) -> Served:
        if not self.multi or query.account is not None:
            return await self.services[query.account or self.names[0]].connectors(query, cursors)
        if query.after is not None and query.after_account not in self.services:
            raise BadRequest("cursor is not valid")
        parts, unavailable = await self._each(lambda service: service.fleet_index())
        generation = (tuple((name, index.etag) for name, (index, _) in parts), unavailable)
        if self._pages is None or self._pages[0] != generation:
            self._pages = (generation, PageCache())
        pages = self._pages[1]
        page = pages.get(query)
        if page is None:
            indexes: list[FleetIndex] = [index for _, (index, _) in parts]
            body = merged_page(indexes, query, cursors, unavailable)
            stored_at = min(index.stored_at for index in indexes)
            page = pages.put(query, Entry(body, stored_at, make_etag(body)))
        return _combined(page, [served for _, (_, served) in parts])

    # -- one site or connector ------------------------------------------------------------

    async def site(self, site_id: str, view: str = "site", account: str | None = None) -> Served:
        service = await self._owner(site_id, account)
        return await service.site(site_id, view)

    async def events(self, site_id: str, query: EventsQuery, account: str | None = None) -> Served:
        service = await self._owner(site_id, account)
        return await service.events(site_id, query)

    async def connector(self, connector_id: str, account: str | None = None) -> Served:
        if not self.multi or account is not None:
            return await self.services[account or self.names[0]].connector(connector_id)
        # The fleets as held first: a connector of one account never costs the others a
        # list refresh.  Nobody holds it: every account looks again by its own rules.
        found: dict[str, Served] = {}
        for name, result in await self._gather(lambda service: service.fleet_index()):
            if not isinstance(result, BaseException):
                index, served = result
                entry = index.connector(connector_id)
                if entry is not None:
                    found[name] = Served(entry, served.outcome, served.age)
        if not found:
            results = await self._gather(lambda service: service.connector(connector_id))
            found = {name: result for name, result in results if isinstance(result, Served)}
            if not found:
                raise _nobody(f"connector {connector_id!r} not found", [r for _, r in results])
        if len(found) > 1:
            raise _conflict("connector", connector_id, sorted(found))
        return next(iter(found.values()))

    async def _owner(self, site_id: str, account: str | None) -> SiteService:
        """The service of the account that lists `site_id` (or the one named).  The lists
        as held decide when one lists it (an account holding none yet fetches its own, so
        a conflict is seen); when none does, each account's known-id gate decides, which
        refreshes a list only when it is older than `GATEWAY_NEGATIVE_TTL`."""
        if not self.multi or account is not None:
            return self.services[account or self.names[0]]
        owners: list[str] = []
        unheld: list[str] = []
        for name, known in await self._gather(lambda service: service.held_known()):
            if isinstance(known, BaseException) or known is None:
                unheld.append(name)
            elif site_id in known.ids:
                owners.append(name)
        if owners and unheld:
            results = await self._gather(lambda service: service.gate(site_id), unheld)
            owners += [name for name, result in results if not isinstance(result, BaseException)]
        if not owners:
            results = await self._gather(lambda service: service.gate(site_id))
            owners = [name for name, result in results if not isinstance(result, BaseException)]
            if not owners:
                raise _nobody(f"site {site_id!r} not found", [result for _, result in results])
        if len(owners) > 1:
            raise _conflict("site", site_id, sorted(owners))
        return self.services[owners[0]]

    # -- helpers --------------------------------------------------------------------------

    async def _gather(
        self, call: Callable[[SiteService], Awaitable[T]], names: Sequence[str] | None = None
    ) -> list[tuple[str, T | BaseException]]:
        """`call` on every account's service (or those named) at once, failures as results."""
        chosen = self.names if names is None else names
        results = await asyncio.gather(
            *(call(self.services[name]) for name in chosen), return_exceptions=True
        )
        return list(zip(chosen, results, strict=True))

    async def _each(
        self, call: Callable[[SiteService], Awaitable[T]]
    ) -> tuple[list[tuple[str, T]], tuple[str, ...]]:
        """Every account's part; an account whose upstream failed (and held nothing stale)
        is left out and named.  When no account has a part, the first failure is raised."""
        parts: list[tuple[str, T]] = []
        unavailable: list[str] = []
        failures: list[BaseException] = []
        for name, result in await self._gather(call):
            if isinstance(result, UpstreamError):
                unavailable.append(name)
                failures.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                parts.append((name, result))
        if not parts:
            raise failures[0]
        return parts, tuple(unavailable)

    async def _once(self, key: Hashable, build: Callable[[], Coroutine[Any, Any, Entry]]) -> Entry:
        """The merged entry for `key`, built by one task however many requests ask."""
        entry = self._lists.get(key)
        if entry is not None:
            self._lists.move_to_end(key)
            return entry
        task = self._building.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(build())
            self._building[key] = task
            task.add_done_callback(lambda _: self._building.pop(key, None))
        entry = await asyncio.shield(task)
        self._lists[key] = entry
        while len(self._lists) > KEPT_LISTS:
            self._lists.popitem(last=False)
        return entry

    # -- admin and metrics ----------------------------------------------------------------

    async def purge_all(self) -> int:
        return sum([await service.purge_all() for service in self.services.values()])

    async def purge_site(self, site_id: str) -> int:
        return sum([await service.purge_site(site_id) for service in self.services.values()])

    async def listed_ages(self) -> dict[str, float]:
        """When each site of the current fleet lists was stored (a site the list dropped is
        no longer reported); a site of several accounts: the oldest."""
        merged: dict[str, float] = {}
        for service in self.services.values():
            for site_id, stored_at in (await service.listed_ages()).items():
                merged[site_id] = min(stored_at, merged.get(site_id, stored_at))
        return merged

    def site_ages(self) -> Mapping[str, float]:
        """When each known site's data was stored; a site of several accounts: the oldest."""
        if not self.multi:
            return self.first.ages.stored_at
        merged: dict[str, float] = {}
        for service in self.services.values():
            for site_id, stored_at in service.ages.stored_at.items():
                merged[site_id] = min(stored_at, merged.get(site_id, stored_at))
        return merged

    async def close(self) -> None:
        for service in self.services.values():
            await service.close()


def _combined(entry: Entry, parts: Sequence[Served]) -> Served:
    return Served(entry, worst([part.outcome for part in parts]), max(part.age for part in parts))


def _conflict(what: str, item_id: str, accounts: Sequence[str]) -> Conflict:
    return Conflict(
        f"{what} {item_id!r} is listed by several accounts ({', '.join(accounts)}); "
        "name one with ?account="
    )


def _nobody(detail: str, results: Sequence[object]) -> GatewayError:
    """No account has it: a 404, unless an account could not say (its error)."""
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, NotFound):
            if isinstance(result, GatewayError):
                return result
            raise result
    outcomes = [r.outcome for r in results if isinstance(r, NotFound) and r.outcome is not None]
    return NotFound(detail, outcome=worst(outcomes) if outcomes else Outcome("miss"))
