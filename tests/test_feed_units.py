"""Logic of the change feed's parts without an upstream: the hub's buffer, the Accept
header, the recorder when the log fails, the lease when Redis goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence

import pytest

from gateway.cache import Cache
from gateway.changelog import ORIGIN, Event, EventId, MemoryChangeLog, Page, Record, Recorded
from gateway.errors import CacheUnavailable
from gateway.feed import FeedHub, _wants_stream
from gateway.keys import Keys
from gateway.lease import Lease
from gateway.metrics import Metrics
from gateway.recorder import ChangeRecorder
from gateway.store import RedisStore, redis_client
from gateway.tier import Tier
from tests.conftest import RedisProcess, eventually


def event(ms: int) -> Event:
    return Event.stored(EventId(ms, 0), "site.updated", b'{"site_id":"a"}')


@pytest.mark.parametrize(
    ("accept", "stream"),
    [
        ("text/event-stream", True),
        ("application/json, Text/Event-Stream;q=0.5", True),
        ("text/event-stream; q=0", False),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_only_an_explicit_accept_asks_for_a_stream(accept: str, stream: bool) -> None:
    assert _wants_stream(accept) is stream


async def test_the_hub_holds_the_newest_events_for_its_streams() -> None:
    log = MemoryChangeLog(retention=100)
    hub = FeedHub(log, block=0.05, keep=3)
    assert hub.since(ORIGIN) is None and hub.last is None  # not started: ask the log
    runner = asyncio.create_task(hub.run())
    await eventually(lambda: hub.last == ORIGIN)
    assert hub.since(ORIGIN) == []
    hub._take([event(n) for n in range(1, 6)])
    assert [e.id.ms for e in hub.since(EventId(3, 0)) or []] == [4, 5]
    assert hub.since(EventId(1, 0)) is None  # older than what it kept
    assert hub.since(EventId(9, 0)) == []
    waiter = asyncio.create_task(hub.wait(5))
    await asyncio.sleep(0)
    hub.close()
    await asyncio.wait_for(waiter, 1)  # closing wakes every stream
    await asyncio.wait_for(runner, 1)


class FailingLog:
    """A change log whose store is down."""

    async def recorded(self, site_ids: Collection[str] | None = None) -> Recorded:
        raise CacheUnavailable("changes_recorded", "down")

    async def record(
        self, records: Sequence[Record], *, baseline: bool
    ) -> list[tuple[EventId, str]]:
        raise CacheUnavailable("changes_record", "down")

    async def read(self, after: EventId, limit: int) -> Page:
        raise CacheUnavailable("changes_read", "down")


async def test_a_failing_log_never_fails_a_fill(caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache(Keys("u"), Tier(max_entries=10, max_bytes=1 << 20), fresh_ttl=60,
                  stale_ttl=60, negative_ttl=5)  # fmt: skip
    recorder = ChangeRecorder(FailingLog(), cache, Metrics())  # type: ignore[arg-type]
    stored = {"a": ("etag", b'{"id":"a"}', None)}
    assert await recorder.prepare(stored, 1.0, fleet=True) is None
    await recorder.commit(None)
    working = ChangeRecorder(MemoryChangeLog(retention=5), cache, Metrics())
    pending = await working.prepare(stored, 1.0, fleet=True)
    recorder.log = FailingLog()  # type: ignore[assignment]
    await recorder.commit(pending)
    lines = [r for r in caplog.records if r.getMessage() == "changes not recorded"]
    assert [getattr(r, "operation", None) for r in lines] == ["changes_recorded", "changes_record"]


async def test_a_holder_keeps_the_lease_until_its_lifetime_ends_when_redis_fails(
    own_redis: RedisProcess,
) -> None:
    store = RedisStore(redis_client(own_redis.url, timeout=0.3))
    try:
        now = [100.0]
        lease = Lease(store, "cpgw:test:lease", ttl=6.0, clock=lambda: now[0])
        assert await lease.hold()
        own_redis.kill()
        now[0] += 2.5  # past a third of the lifetime: time to renew
        assert await lease.hold()  # the renewal failed; its lifetime has not ended
        now[0] += 4.0  # 6.5 s since it was last renewed
        assert not await lease.hold() and not lease.held
        await lease.release()  # nothing to release: no call
    finally:
        await store.close()
