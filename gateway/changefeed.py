"""The change feed of one account, assembled: its parts and their lifetimes.

    ChangeLog (Redis stream, or the in-process ring)  ← ChangeRecorder ← the account's fills
              ↓                                                         ↑
    FeedHub (one follower per process) → Feed (GET /changes)     Refresher (one replica, lease)

`open_change_feed` builds the log, the recorder (which the `Filler` needs) and the endpoint;
`start` starts the hub and, with `GATEWAY_REFRESH_SHARE` > 0, the refresher, once the site
service exists; `end_streams` ends open streams when the process begins shutting down (so
the server does not wait on them); `close` stops the tasks and releases the lease.  Every
part is keyed by the account's `Keys`: with several accounts, each has its own feed.
Without the refresher, sites the fleet list drops are confirmed by a background fetch each
(at most `CONFIRM_WITHOUT_REFRESHER` per list).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .accounts import Account
from .cache import Cache
from .changelog import ChangeLog, MemoryChangeLog
from .changelog_redis import RedisChangeLog
from .errors import CacheUnavailable
from .feed import FOLLOW_BLOCK, HEARTBEAT, Feed, FeedHub
from .keys import Keys
from .lease import DEFAULT_TTL, Lease
from .lifecycle import stop_tasks
from .metrics import Metrics
from .recorder import ChangeRecorder
from .refresher import Refresher, refresh_fill
from .service import SiteService
from .settings import Settings
from .shield import Shield
from .store import RedisStore, redis_client

log = logging.getLogger("gateway.changes")
CONFIRM_WITHOUT_REFRESHER = 10


@dataclass(frozen=True, slots=True)
class FeedTuning:
    """Timings that are not settings (tests shorten them)."""

    heartbeat: float = HEARTBEAT
    lease_ttl: float = DEFAULT_TTL
    follow_block: float = FOLLOW_BLOCK


class ChangeFeed:
    def __init__(
        self,
        changes: ChangeLog,
        recorder: ChangeRecorder,
        feed: Feed,
        metrics: Metrics,
        *,
        account: Account,
        keys: Keys,
        redis: RedisStore | None,
        share: float,
        tuning: FeedTuning,
    ) -> None:
        self.changes = changes
        self.recorder = recorder
        self._cache = recorder.cache
        self.feed = feed
        self._metrics = metrics
        self._account = account
        self._keys = keys
        self._redis = redis
        self._share = share
        self._tuning = tuning
        self.refresher: Refresher | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await self.feed.handle(request)

    def start(self, service: SiteService, shield: Shield) -> None:
        self._spawn(self.feed.hub.run(), "change-feed-hub")
        if self._share <= 0:
            engine = service.engine

            def confirm(site_ids: list[str]) -> None:
                for site_id in site_ids[:CONFIRM_WITHOUT_REFRESHER]:
                    engine.refresh(refresh_fill(service, site_id))

            self.recorder.on_vanished = confirm
            return
        lease = Lease(self._redis, self._keys.refresher_lease, ttl=self._tuning.lease_ttl)
        refresher = Refresher(
            service,
            shield,
            self.changes,
            lease,
            self._metrics,
            rate=self._account.rps,
            share=self._share,
        )
        self.recorder.on_vanished = refresher.confirm
        self.refresher = refresher
        self._spawn(refresher.run(), "fleet-refresher")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_log_end)
        self._tasks.append(task)

    async def readings(self) -> tuple[float, float | None] | None:
        """(the refresh lag, the expected period) from the log, or None when unreadable."""
        try:
            oldest = await self.changes.oldest(1)
            tracked = await self.changes.tracked()
        except CacheUnavailable:
            return None  # the gauges keep their last values; the Redis error is counted
        now = self._cache.now()
        lag = round(max(0.0, now - oldest[0][1]), 3) if oldest else 0.0
        period = None
        if self._share > 0:
            period = (tracked + 1) / (self._share * self._account.rps)
        return lag, period

    async def report(self) -> None:
        """Refresh the lag and period gauges from the log (before a scrape)."""
        await report_feeds([self], self._metrics)

    def end_streams(self) -> None:
        self.feed.hub.close()

    async def close(self) -> None:
        self.end_streams()
        await stop_tasks(self._tasks, "change feed")
        if self.refresher is not None:
            await self.refresher.stop()
        await self.changes.close()


async def report_feeds(feeds: Iterable[ChangeFeed], metrics: Metrics) -> None:
    """The lag and period gauges over every account's feed: the worst of them."""
    readings = [reading for feed in feeds if (reading := await feed.readings()) is not None]
    if not readings:
        return
    metrics.refresh_lag.set(max(lag for lag, _ in readings))
    periods = [period for _, period in readings if period is not None]
    if periods:
        metrics.refresh_period.set(max(periods))


def open_change_feed(
    settings: Settings,
    account: Account,
    cache: Cache,
    redis: RedisStore | None,
    metrics: Metrics,
    *,
    tuning: FeedTuning | None = None,
) -> ChangeFeed:
    tuning = tuning or FeedTuning()
    keys = cache.keys
    changes: ChangeLog
    if redis is not None and settings.redis_url is not None:
        # The blocking reads get their own connection, whose timeout outlasts a block.
        follower = RedisStore(
            redis_client(settings.redis_url, timeout=settings.redis_timeout + tuning.follow_block)
        )
        changes = RedisChangeLog(
            redis, keys, retention=settings.changes_retention, follower=follower
        )
    else:
        changes = MemoryChangeLog(retention=settings.changes_retention)
    recorder = ChangeRecorder(
        changes, cache, metrics, account=account.name if settings.multi_account else None
    )
    hub = FeedHub(changes, block=tuning.follow_block)
    feed = Feed(changes, hub, metrics, max_streams=settings.max_streams, heartbeat=tuning.heartbeat)
    return ChangeFeed(
        changes,
        recorder,
        feed,
        metrics,
        account=account,
        keys=keys,
        redis=redis,
        share=settings.refresh_share,
        tuning=tuning,
    )


def _log_end(task: asyncio.Task[None]) -> None:
    """The hub and the refresher run until cancelled; any other end is a bug to see."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("%s stopped", task.get_name(), exc_info=error)


# The account name -> its change feed.
CHANGE_FEEDS: web.AppKey[dict[str, ChangeFeed]] = web.AppKey("change_feeds")

__all__ = ["CHANGE_FEEDS", "ChangeFeed", "FeedTuning", "open_change_feed", "report_feeds"]
