"""The fleet refresher: keeps every listed site fresh without any client asking, so changes
upstream reach the change feed.  One per account; one replica at a time runs it (`Lease`).

    every slot (1 / (GATEWAY_REFRESH_SHARE * the account's rps) seconds at the fastest):
      not the lease holder            → try again later (the lease says when)
      upstream held back              → wait: a Retry-After pause or an open circuit
                                        (`Shield.available()`), resume after
      no background token             → wait: the shared bucket keeps a reserve for clients
                                        (`Shield.take_background`), so clients come first
      then refresh, in this order:      sites the last fleet list no longer holds (a 404 on
                                        their own fetch confirms the deletion), the fleet
                                        list once per cycle of (sites + 1) slots, else the
                                        site whose data is oldest (the change log's fetch
                                        times, shared by every replica)

A refresh is the fill a client miss would run (`engine.join`, so it collapses with clients'
fetches in this process and, through the fetch lock, in others), except that it fetches
even while the entries are fresh.  Up to `concurrency` refreshes are in flight, so a slow
upstream does not slow the schedule; the slot spacing alone bounds the rate.  A site whose
refresh failed waits one cycle before it is tried again.  Every failure is logged (and
counted in `gateway_fleet_refreshes_total`); none stops the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from .changelog import ChangeLog
from .engine import Fill
from .entry import Lookup
from .errors import CacheUnavailable, GatewayError
from .lease import Lease
from .lifecycle import stop_tasks
from .metrics import Metrics
from .service import SiteService
from .shield import Shield, client_reserve

log = logging.getLogger("gateway.refresher")
CANDIDATES = 16  # oldest sites read per pick (some may be in flight or backing off)
BUSY_POLL = 0.5  # seconds between looks while upstream is held back


class Refresher:
    def __init__(
        self,
        service: SiteService,
        shield: Shield,
        changes: ChangeLog,
        lease: Lease,
        metrics: Metrics,
        *,
        rate: float,
        share: float,
        concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 1 or rate <= 0:
            raise ValueError(f"the refresher needs 0 < share <= 1 and rate > 0 ({share}, {rate})")
        self._service = service
        self._shield = shield
        self._changes = changes
        self._lease = lease
        self._metrics = metrics
        self.interval = 1.0 / (share * rate)
        self._reserve = client_reserve(rate, share)
        self._slots = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._next_slot = clock()
        self._cycle = 1  # slots of one cycle: every listed site and the list
        self._since_list = 0  # slots spent on sites since the list's; due at cycle - 1
        self._vanished: list[str] = []
        self._in_flight: set[str | None] = set()  # site ids; None is the fleet list
        self._backoff: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def leader(self) -> bool:
        return self._lease.held

    def confirm(self, site_ids: list[str]) -> None:
        """Sites the fleet list no longer holds: fetch each soon (a 404 deletes it)."""
        self._vanished.extend(s for s in site_ids if s not in self._vanished)

    async def run(self) -> None:
        """Refresh until cancelled; a failure is logged and the loop goes on."""
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except CacheUnavailable as error:
                log.warning("fleet refresher: Redis failed", extra={"operation": error.operation})
                await asyncio.sleep(self.interval)
            except Exception:
                log.exception("fleet refresher failed; it goes on")
                await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        await stop_tasks(list(self._tasks), "fleet refreshes")
        await self._lease.release()
        self._metrics.refresher_leader.set(0)

    async def _step(self) -> None:
        held = await self._lease.hold()
        self._metrics.refresher_leader.set(1 if held else 0)
        if not held:
            await asyncio.sleep(self._lease.ttl / 3)
            return
        if not self._shield.available():
            await asyncio.sleep(BUSY_POLL)
            return
        wait = self._next_slot - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
            return
        await self._slots.acquire()
        started = False
        try:
            kind, site_id = await self._pick()
            if kind == "idle":
                await asyncio.sleep(self.interval)
                return
            wait = await self._shield.take_background(self._reserve)
            if wait > 0:
                await asyncio.sleep(min(wait, BUSY_POLL))
                return
            self._next_slot = self._clock() + self.interval
            await self._commit(kind, site_id)
            task = asyncio.create_task(self._refresh(site_id))
            started = True
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        finally:
            if not started:
                self._slots.release()

    async def _pick(self) -> tuple[str, str | None]:
        """What the next slot refreshes: (vanished|list|site, the site id), or idle."""
        for site_id in self._vanished:
            if site_id not in self._in_flight:
                return "vanished", site_id
        list_free = None not in self._in_flight
        if self._since_list >= self._cycle - 1 and list_free:
            return "list", None
        now = self._clock()
        for site_id, _ in await self._changes.oldest(CANDIDATES + len(self._in_flight)):
            if site_id not in self._in_flight and self._backoff.get(site_id, 0.0) <= now:
                return "site", site_id
        return ("list", None) if list_free else ("idle", None)

    async def _commit(self, kind: str, site_id: str | None) -> None:
        """The slot is spent on this target."""
        self._in_flight.add(site_id)
        if kind == "vanished" and site_id is not None:
            self._vanished.remove(site_id)
        elif kind == "list":
            self._cycle = await self._changes.tracked() + 1
            self._since_list = 0
            now = self._clock()
            self._backoff = {s: until for s, until in self._backoff.items() if until > now}
        else:
            self._since_list += 1

    async def _listed(self) -> None:
        """The list just refreshed says how many sites a cycle holds: the cycle sized at its
        slot counted the sites tracked before it (none at start, when it would otherwise
        fetch the whole list again at once)."""
        try:
            tracked = await self._changes.tracked()
        except CacheUnavailable:
            return  # the cycle as sized at its slot: at worst one list fetch early
        self._cycle = tracked + 1

    async def _refresh(self, site_id: str | None) -> None:
        target = "list" if site_id is None else "site"
        try:
            with self._shield.prepaid():
                await self._service.engine.join(refresh_fill(self._service, site_id))
        except GatewayError as error:
            self._metrics.fleet_refreshes.labels(target, "failed").inc()
            if site_id is not None:  # try it again a cycle later
                self._backoff[site_id] = self._clock() + self.interval * self._cycle
            log.warning(
                "fleet refresh failed",
                extra={"fill": target, "site_id": site_id, "error": error.slug},
            )
        except Exception:
            self._metrics.fleet_refreshes.labels(target, "failed").inc()
            log.exception("fleet refresh crashed", extra={"fill": target, "site_id": site_id})
        else:
            self._metrics.fleet_refreshes.labels(target, "ok").inc()
            if site_id is not None:
                self._backoff.pop(site_id, None)
            else:
                await self._listed()
        finally:
            self._in_flight.discard(site_id)
            self._slots.release()


def refresh_fill(service: SiteService, site_id: str | None) -> Fill:
    """The fill that refreshes a site (None: the fleet list) however fresh its entries are
    (a remembered 404 too: a refresh asks again).  Another replica's fetch under way is
    still joined through the fetch lock."""
    fill = service.fleet_fill() if site_id is None else service.site_fill(site_id)
    return dataclasses.replace(fill, satisfied=_never)


def _never(lookup: Lookup) -> bool:
    return False
