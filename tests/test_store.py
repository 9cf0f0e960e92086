"""Stores: the in-process tier's bounds and expiry, Redis URL forms, failure mapping, the
stall breaker, chunked writes, and the entry format."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.entry import Entry
from gateway.errors import CacheUnavailable
from gateway.fleet import PageCache, Query
from gateway.store import CHUNK_KEYS, STALL_AFTER, RedisStore, chunks, redis_client
from gateway.tier import Tier
from tests.conftest import RedisProcess


def _entry(body: bytes, stored_at: float = 0.0) -> Entry:
    return Entry.for_body(body, stored_at)


def test_tier_bounds_by_entries_and_bytes_least_recent_first() -> None:
    now = [0.0]
    tier = Tier(max_entries=3, max_bytes=3 * 210, clock=lambda: now[0])
    for key in "abc":
        tier.put(key, _entry(b"x"), expires=100, generation=1)
    assert tier.get("a") is not None  # touching "a" makes "b" the oldest
    tier.put("d", _entry(b"x"), expires=100, generation=1)
    assert tier.get("b") is None and tier.get("a") is not None and len(tier) == 3
    tier.put("big", _entry(b"x" * 300), expires=100, generation=1)  # evicts to fit
    assert tier.get("big") is not None and tier.bytes <= 3 * 210
    tier.put("huge", _entry(b"x" * 5000), expires=100, generation=1)  # never fits: not kept
    assert tier.get("huge") is None
    assert tier.drop_prefix("bi") == 1 and tier.get("big") is None


def test_tier_sweeps_expired_entries_so_a_junk_flood_stays_bounded() -> None:
    now = [0.0]
    tier = Tier(max_entries=1_000_000, max_bytes=1 << 40, clock=lambda: now[0])
    for number in range(20_000):
        now[0] = number * 0.01
        tier.put(f"junk:{number}", Entry.missing(now[0]), expires=now[0] + 1.0, generation=0)
    # Each negative entry lives 1 s; writes sweep what expired, however many were written.
    assert len(tier) <= 101
    assert tier.get("junk:0") is None and tier.get("junk:19999") is not None


def test_chunks_bound_keys_and_bytes() -> None:
    items = [(f"k{n}", b"x" * 10) for n in range(CHUNK_KEYS * 2 + 3)]
    sizes = [len(chunk) for chunk in chunks(items, lambda item: len(item[1]))]
    assert sizes == [CHUNK_KEYS, CHUNK_KEYS, 3]
    big = [("a", b"x" * (5 << 20)), ("b", b"y"), ("c", b"z" * (4 << 20))]
    assert [len(chunk) for chunk in chunks(big, lambda item: len(item[1]))] == [1, 1, 1]
    assert list(chunks([], len)) == []


def test_redis_url_forms() -> None:
    sentinel = redis_client("redis+sentinel://s1:26379,s2/mymaster/2", timeout=0.1)
    pool = sentinel.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 2
    hosts = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in pool.sentinel_manager.sentinels
    ]
    assert hosts == [("s1", 26379), ("s2", 26379)]
    cluster = redis_client("redis+cluster://node-1:7000", timeout=0.1)
    assert isinstance(cluster, RedisCluster)
    plain = redis_client("redis://localhost:6379/3", timeout=0.1)
    assert plain.connection_pool.connection_kwargs["db"] == 3
    assert plain.connection_pool.max_connections == 64


async def test_failures_become_cache_unavailable_and_the_breaker_stops_asking(
    own_redis: RedisProcess,
) -> None:
    outcomes: list[tuple[str, bool]] = []
    now = [0.0]
    store = RedisStore(
        redis_client(own_redis.url, timeout=0.2),
        on_result=lambda op, ok: outcomes.append((op, ok)),
        clock=lambda: now[0],
    )
    await store.set_many([("k", b"v")], ttl=5)
    assert await store.get("k") == b"v"
    own_redis.kill()
    for call in (
        store.get("k"),
        store.set_many([("k", b"v")], ttl=1),
        store.delete(["k"]),
    ):
        with pytest.raises(CacheUnavailable):
            await call
    assert ("get", True) in outcomes and ("get", False) in outcomes
    tried = len(outcomes)
    assert store.stalled and tried >= STALL_AFTER
    for call in (store.keys_with_prefix("k"), store.ping(), store.get_range("k", 3)):
        with pytest.raises(CacheUnavailable, match="not asked"):
            await call
    assert len(outcomes) == tried  # nothing was sent while the breaker is open
    own_redis.start()
    now[0] += 10  # past the cool-down: one probe goes, succeeds, and closes the breaker
    await store.ping()
    assert not store.stalled and outcomes[-1] == ("ping", True)
    await store.close()


class SwallowingClient:
    """What redis-py 8.2 does to about 2% of cancellations (65 of 3,000 in a loop of
    cancelled EXISTS calls): the command catches the task's CancelledError and answers, or
    fails, as if nothing had happened, so a loop around it would never stop."""

    def __init__(self, then: bytes | Exception) -> None:
        self.then = then
        self.entered = asyncio.Event()

    async def get(self, key: str) -> bytes:
        self.entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if isinstance(self.then, Exception):
                raise self.then from None
            return self.then
        raise AssertionError("not cancelled")


@pytest.mark.parametrize("then", [b"v", RedisConnectionError("closed")], ids=["answer", "error"])
async def test_a_cancellation_the_client_swallowed_still_cancels(then: bytes | Exception) -> None:
    outcomes: list[tuple[str, bool]] = []
    client = SwallowingClient(then)
    store = RedisStore(client, on_result=lambda op, ok: outcomes.append((op, ok)))
    call = asyncio.create_task(store.get("k"))
    await client.entered.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert outcomes == []  # not a Redis failure: nothing counted, the breaker untouched
    assert not store.stalled


def test_entry_round_trip() -> None:
    entry = Entry.for_body(b'{"a":"\xc3\xa9"}', 1700000000.25)
    assert Entry.decode(entry.encode()) == entry
    assert Entry.decode(b"CPG0" + entry.encode()[4:]) is None
    assert Entry.decode(b"short") is None
    missing = Entry.missing(5.0)
    assert Entry.decode(missing.encode()) == missing and missing.negative


def test_page_cache_is_bounded_by_count_and_bytes() -> None:
    pages = PageCache(size=3, max_bytes=10)
    queries = [Query(limit=n) for n in range(1, 6)]
    for query in queries[:3]:
        pages.put(query, _entry(b"abc"))
    assert pages.get(queries[0]) is not None  # now the most recent
    pages.put(queries[3], _entry(b"abc"))  # 4 pages > 3: the oldest (queries[1]) goes
    assert pages.get(queries[1]) is None and pages.get(queries[0]) is not None
    pages.put(queries[4], _entry(b"x" * 8))  # bytes over 10: evict until it fits
    assert pages.get(queries[4]) is not None
    assert [pages.get(q) for q in queries[:4]] == [None] * 4
