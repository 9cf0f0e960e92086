"""Byte stores behind the cache: `RedisStore` (shared by all replicas) and `MemoryStore`
(the embedded in-process cache, also the fallback tier while Redis is down).

A store knows keys, bytes and expiry — nothing of HTTP, sites or freshness.  Every Redis
call is bounded by `GATEWAY_REDIS_TIMEOUT` and redis-py's own retries are limited to one
immediate reconnect, so a dead Redis costs a request at most that timeout.  Redis and
socket exceptions are translated to `CacheUnavailable(operation)` here and only here;
redis-py's pool reconnects by itself on the next call once Redis is back.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .errors import CacheUnavailable

T = TypeVar("T")
DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024
MAX_CONNECTIONS = 32


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def get_range(self, key: str, end: int) -> bytes | None: ...
    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float) -> None: ...
    async def delete(self, keys: Iterable[str]) -> None: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class MemoryStore:
    """An LRU of bytes with per-key expiry, bounded by total size; single event loop only."""

    def __init__(
        self, *, max_bytes: int = DEFAULT_MEMORY_BYTES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._clock = clock

    def get_now(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return value

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    async def get_range(self, key: str, end: int) -> bytes | None:
        value = self.get_now(key)
        return None if value is None else value[: end + 1]

    def set_many_now(self, items: Sequence[tuple[str, bytes]], ttl: float) -> None:
        expires = self._clock() + ttl
        for key, value in items:
            self._drop(key)
            if ttl <= 0 or len(value) > self._max_bytes:
                continue
            self._items[key] = (expires, value)
            self._bytes += len(value)
        while self._bytes > self._max_bytes and self._items:
            self._drop(next(iter(self._items)))

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float) -> None:
        self.set_many_now(items, ttl)

    async def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._drop(key)

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._items if key.startswith(prefix)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._items.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= len(item[1])


class RedisStore:
    """The shared store; `client` is any redis.asyncio client (plain, Sentinel master, Cluster)."""

    def __init__(
        self,
        client: Any,
        *,
        timeout: float,
        on_result: Callable[[str, bool], None] = lambda operation, ok: None,
    ) -> None:
        self.client = client
        self._timeout = timeout
        self._on_result = on_result

    async def call(self, operation: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis call under the timeout; map failures to `CacheUnavailable`."""
        try:
            result = await asyncio.wait_for(make(), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            self._on_result(operation, False)
            raise CacheUnavailable(operation, type(exc).__name__) from None
        self._on_result(operation, True)
        return result

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.call("get", lambda: self.client.get(key))
        return value

    async def get_range(self, key: str, end: int) -> bytes | None:
        value: bytes = await self.call("getrange", lambda: self.client.getrange(key, 0, end))
        return value or None

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float) -> None:
        if not items:
            return
        milliseconds = max(1, int(ttl * 1000))

        async def write() -> None:
            # Non-transactional: in Cluster mode the keys live in different slots.
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(key, value, px=milliseconds)
                await pipe.execute()

        await self.call("set", write)

    async def delete(self, keys: Iterable[str]) -> None:
        doomed = list(keys)
        if not doomed:
            return

        async def unlink() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in doomed:
                    # Not `pipe.unlink(key)`: on redis-py's asyncio ClusterPipeline that is a
                    # coroutine function, so the command would never be queued.
                    pipe.execute_command("UNLINK", key)
                await pipe.execute()

        await self.call("delete", unlink)

    async def delete_prefix(self, prefix: str) -> int:
        async def sweep() -> int:
            keys = [key async for key in self.client.scan_iter(match=prefix + "*", count=1000)]
            for start in range(0, len(keys), 500):
                await self.client.unlink(*keys[start : start + 500])
            return len(keys)

        # A purge may scan many keys: allow it more than one ordinary call.
        try:
            count: int = await asyncio.wait_for(sweep(), max(self._timeout * 20, 5.0))
        except (RedisError, OSError, TimeoutError) as exc:
            self._on_result("purge", False)
            raise CacheUnavailable("purge", type(exc).__name__) from None
        self._on_result("purge", True)
        return count

    async def ping(self) -> None:
        await self.call("ping", lambda: self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool, bounded: it waits for a free connection (`timeout`)
    instead of opening one more for every concurrent command."""


class _SentinelMaster(aioredis.Redis):
    """The master that the sentinels name; closing it also closes the connections to the
    sentinels (redis-py's own `aclose()` leaves them open, and they leak)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await sentinel.aclose()


def redis_client(url: str, *, timeout: float) -> Any:
    """A redis.asyncio client for redis://, rediss://, unix://, redis+sentinel://, redis+cluster://.

    Sentinel: `redis+sentinel://[:password@]host:port[,host:port]/service_name[/db]`.
    Cluster: `redis+cluster://host:port` (any node; the rest are discovered).
    """
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 15,
    }
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme.endswith("+cluster"):
        plain = url.replace(scheme, scheme.removesuffix("+cluster"), 1)
        common.pop("health_check_interval")
        return RedisCluster.from_url(plain, **common)
    if scheme.endswith("+sentinel"):
        hosts = []
        for host_port in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = host_port.partition(":")
            hosts.append((host, int(port or 26379)))
        path = [p for p in parts.path.split("/") if p]
        service = unquote(path[0]) if path else "mymaster"
        db = int(path[1]) if len(path) > 1 else 0
        password = unquote(parts.password) if parts.password else None
        ssl = scheme.startswith("rediss")
        options = parse_qs(parts.query)
        # Finding the master asks the sentinels one after another, within one call's
        # budget: a sentinel gets half of it and no retry (redis-py retries 3 times by
        # default), so one hung sentinel can't use it all up.
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts,
            sentinel_kwargs={
                "socket_timeout": timeout / 2,
                "socket_connect_timeout": timeout / 2,
                "retry": Retry(NoBackoff(), 0),
                "password": options.get("sentinel_password", [None])[0],
            },
            ssl=ssl,
            password=password,
            db=db,
            **common,
        )
        # Bounded like the plain pool below; here each new connection also asks a sentinel.
        return sentinel.master_for(
            service,
            redis_class=_SentinelMaster,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
        )
    # A bounded pool that queues (for at most the timeout) instead of opening a new
    # connection per concurrent command: a burst of requests must not become a burst of
    # connects against Redis.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=timeout, **common
    )
    return aioredis.Redis.from_pool(pool)
