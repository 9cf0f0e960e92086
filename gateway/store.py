"""The shared store: Redis, reached through one redis.asyncio client (plain, Sentinel or
Cluster).  Knows keys, bytes, expiry and pub/sub; nothing of HTTP, sites or freshness.

Failure model (every Redis and socket exception is mapped here, and only here, to
`CacheUnavailable(operation)`; callers fail open):

- A command is bounded by the client's own `socket_timeout` (`GATEWAY_REDIS_TIMEOUT`); no
  per-call `wait_for` task.  Big writes go in chunks (`CHUNK_BYTES`, `CHUNK_KEYS`) so that no
  single round trip carries more than a timeout's worth of work.
- Waiting for a pooled connection is back-pressure, not a failure: the pool lets a caller
  wait up to `POOL_WAIT` (far longer than a command), and a burst of requests queues on
  `MAX_CONNECTIONS` connections instead of opening hundreds.
- Stall breaker: after `STALL_AFTER` consecutive failures (a stalled or dead Redis) the store
  stops asking Redis for `STALL_COOLDOWN` seconds and fails every call at once; then one call
  probes.  A stalled Redis costs a bounded number of slow requests, not every request.
- redis-py reconnects by itself on the next call once Redis answers again.
- A cancelled call always ends in `CancelledError`, also where redis-py swallowed it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .errors import CacheUnavailable

if TYPE_CHECKING:
    from .tracing import Tracing

T = TypeVar("T")
MAX_CONNECTIONS = 64
POOL_WAIT = 10.0
CHUNK_BYTES = 4 << 20
CHUNK_KEYS = 500
STALL_AFTER = 3
STALL_COOLDOWN = 2.0


def _raise_if_cancelled(task: asyncio.Task[Any] | None, before: int) -> None:
    """redis-py sometimes swallows the CancelledError of a command (about 2% of cancelled
    calls: it answers, or fails, as if nothing had happened); a loop around such a call would
    then never stop.  A cancellation requested during the call is raised here instead."""
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError


def chunks(items: Sequence[T], size: Callable[[T], int]) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most CHUNK_KEYS items and (unless one item alone is
    bigger) CHUNK_BYTES bytes, as `size` counts them."""
    start, total = 0, 0
    for index, item in enumerate(items):
        length = size(item)
        if index > start and (index - start >= CHUNK_KEYS or total + length > CHUNK_BYTES):
            yield items[start:index]
            start, total = index, 0
        total += length
    if start < len(items):
        yield items[start:]


class RedisStore:
    """The shared store; `client` is any redis.asyncio client (plain, Sentinel master, Cluster)."""

    def __init__(
        self,
        client: Any,
        *,
        on_result: Callable[[str, bool], None] = lambda operation, ok: None,
        clock: Callable[[], float] = time.monotonic,
        stall_cooldown: float = STALL_COOLDOWN,
        tracing: Tracing | None = None,
    ) -> None:
        self.client = client
        self._tracing = tracing
        self._on_result = on_result
        self._clock = clock
        self._failures = 0
        self._stalled_until = 0.0
        self._probing = False
        self._stall_cooldown = stall_cooldown

    @property
    def stalled(self) -> bool:
        """True while the breaker keeps callers away from Redis."""
        return self._failures >= STALL_AFTER and (
            self._probing or self._clock() < self._stalled_until
        )

    async def call(self, operation: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis round trip; map every failure to `CacheUnavailable`."""
        if self.stalled:
            raise CacheUnavailable(operation, "not asked: Redis failed repeatedly, cooling down")
        probe = self._failures >= STALL_AFTER  # the one call let through after the cool-down
        self._probing = probe
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            if self._tracing is None:
                result = await make()
            else:
                with self._tracing.redis_span(operation):
                    result = await make()
        except (RedisError, OSError, TimeoutError) as exc:
            _raise_if_cancelled(task, cancels)
            self._failures += 1
            if self._failures >= STALL_AFTER:
                self._stalled_until = self._clock() + self._stall_cooldown
            self._on_result(operation, False)
            raise CacheUnavailable(operation, type(exc).__name__) from None
        finally:
            if probe:
                self._probing = False
        _raise_if_cancelled(task, cancels)
        self._failures = 0
        self._on_result(operation, True)
        return result

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.call("get", lambda: self.client.get(key))
        return value

    async def get_range(self, key: str, end: int) -> bytes | None:
        value: bytes = await self.call("getrange", lambda: self.client.getrange(key, 0, end))
        return value or None

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float) -> None:
        """Write in chunks, one round trip each (callers chunk big batches themselves, so
        that they encode one chunk at a time)."""
        milliseconds = max(1, int(ttl * 1000))
        for chunk in chunks(items, lambda item: len(item[1])):

            async def write(chunk: Sequence[tuple[str, bytes]] = chunk) -> None:
                # Non-transactional: in Cluster mode the keys live in different slots.
                async with self.client.pipeline(transaction=False) as pipe:
                    for key, value in chunk:
                        pipe.set(key, value, px=milliseconds)
                    await pipe.execute()

            await self.call("set", write)

    async def delete(self, keys: Iterable[str]) -> None:
        for chunk in chunks(list(keys), lambda key: 0):

            async def unlink(chunk: Sequence[str] = chunk) -> None:
                async with self.client.pipeline(transaction=False) as pipe:
                    for key in chunk:
                        # Not `pipe.unlink(key)`: on redis-py's asyncio ClusterPipeline that
                        # is a coroutine function, so the command would never be queued.
                        pipe.execute_command("UNLINK", key)
                    await pipe.execute()

            await self.call("delete", unlink)

    async def keys_with_prefix(self, prefix: str) -> list[str]:
        """Every key under `prefix` (SCAN, on every master of a Cluster)."""

        async def scan() -> list[str]:
            found = [key async for key in self.client.scan_iter(match=_glob(prefix), count=1000)]
            return [key.decode() if isinstance(key, bytes) else key for key in found]

        return await self.call("scan", scan)

    async def publish(self, channel: str, message: bytes) -> None:
        await self.call("publish", lambda: self.client.publish(channel, message))

    async def ping(self) -> None:
        await self.call("ping", lambda: self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()


def _glob(prefix: str) -> str:
    """`prefix*` as a SCAN pattern, with the glob's special characters escaped."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in prefix) + "*"


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
        return RedisCluster.from_url(plain, max_connections=MAX_CONNECTIONS, **common)
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
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
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
            timeout=POOL_WAIT,
        )
    # A bounded pool that queues instead of opening a connection per concurrent command: a
    # burst of requests must not become a burst of connects against Redis, and a queue is
    # not an outage (POOL_WAIT, not the command timeout, bounds the wait).
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT, **common
    )
    return aioredis.Redis.from_pool(pool)
