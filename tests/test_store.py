"""Stores: the memory store's expiry and size bound, Redis URL forms, failure mapping."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from gateway.cache import Cache, Entry, Keys
from gateway.errors import CacheUnavailable
from gateway.store import MemoryStore, RedisStore, redis_client
from tests.conftest import RedisProcess


async def test_memory_store_expiry_and_size_bound() -> None:
    now = [0.0]
    store = MemoryStore(max_bytes=10, clock=lambda: now[0])
    await store.set_many([("a", b"12345"), ("b", b"67890")], ttl=5)
    assert await store.get("a") == b"12345"  # touching "a" makes "b" the oldest
    await store.set_many([("c", b"xyz")], ttl=5)
    assert await store.get("b") is None and await store.get("a") == b"12345"
    assert await store.get_range("a", 1) == b"12"
    await store.set_many([("huge", b"x" * 11)], ttl=5)
    assert await store.get("huge") is None
    now[0] = 6
    assert await store.get("a") is None
    await store.set_many([("p:1", b"1"), ("p:2", b"2"), ("q", b"3")], ttl=5)
    assert await store.delete_prefix("p:") == 2
    assert await store.get("q") == b"3"
    await store.delete(["q"])
    assert await store.get("q") is None


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
    assert plain.connection_pool.max_connections == 32


async def test_failures_become_cache_unavailable(own_redis: RedisProcess) -> None:
    outcomes: list[tuple[str, bool]] = []
    store = RedisStore(
        redis_client(own_redis.url, timeout=0.2),
        timeout=0.2,
        on_result=lambda op, ok: outcomes.append((op, ok)),
    )
    await store.set_many([("k", b"v")], ttl=5)
    assert await store.get("k") == b"v"
    own_redis.kill()
    for call in (
        store.get("k"),
        store.set_many([("k", b"v")], ttl=1),
        store.delete(["k"]),
        store.delete_prefix("k"),
        store.ping(),
        store.get_range("k", 3),
    ):
        with pytest.raises(CacheUnavailable):
            await call
    assert ("get", True) in outcomes and ("get", False) in outcomes
    assert ("purge", False) in outcomes
    await store.close()


async def test_cache_over_redis(redis_url: str) -> None:
    store = RedisStore(redis_client(redis_url, timeout=0.5), timeout=0.5)
    cache = Cache(store, fresh_ttl=10, stale_ttl=10, negative_ttl=5, keys=Keys("t"))
    entries = await cache.put_many({"t:v1:a": b'{"x":1}'}, stored_at=cache.now())
    lookup = await cache.get("t:v1:a")
    assert lookup is not None and lookup.fresh and lookup.entry == entries["t:v1:a"]
    peeked = await cache.peek("t:v1:a")
    assert peeked is not None and peeked.entry.etag == lookup.entry.etag
    assert peeked.entry.body == b""
    # Old or foreign bytes under a key are a miss, never misread.
    await store.set_many([("t:v1:a", b"something else")], ttl=5)
    assert await cache.get("t:v1:a") is None
    await cache.put_negative(["t:v1:gone"], stored_at=cache.now())
    negative = await cache.get("t:v1:gone")
    assert negative is not None and negative.entry.negative
    assert await cache.purge_all() == 2
    await store.close()


def test_entry_round_trip() -> None:
    entry = Entry.for_body(b'{"a":"\xc3\xa9"}', 1700000000.25)
    assert Entry.decode(entry.encode()) == entry
    assert Entry.decode(b"CPG0" + entry.encode()[4:]) is None
    assert Entry.decode(b"short") is None


def test_page_cache_is_bounded_by_count_and_bytes() -> None:
    from gateway.fleet import PageCache, Query, Rendered

    pages = PageCache(size=3, max_bytes=10)
    queries = [Query(limit=n) for n in range(1, 6)]
    for query in queries[:3]:
        pages.put(query, Rendered(b"abc", "e"))
    assert pages.get(queries[0]) is not None  # now the most recent
    pages.put(queries[3], Rendered(b"abc", "e"))  # 4 pages > 3: the oldest (queries[1]) goes
    assert pages.get(queries[1]) is None and pages.get(queries[0]) is not None
    pages.put(queries[4], Rendered(b"x" * 8, "e"))  # bytes over 10: evict until it fits
    assert pages.get(queries[4]) is not None
    assert [pages.get(q) for q in queries[:4]] == [None] * 4
