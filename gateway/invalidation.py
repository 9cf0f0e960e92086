"""Cross-replica invalidation of the in-process tier, over Redis pub/sub.

Whenever a replica replaces or purges entries in Redis it publishes their keys on its
account's channel (`Keys.channel`); every replica drops those keys from its tier, so a
replacement or purge anywhere is seen everywhere within a round trip.  A message is
`origin \\n key \\n key …`; a key `*prefix` drops everything under the prefix (purge all);
a replica ignores its own messages (it updated its tier when it wrote).

Trust: the tier may answer without asking Redis only while this subscriber is `healthy` —
subscribed, and heard from (a message or the answer to its own PING every `PING_EVERY`)
within `SILENCE_LIMIT`.  Every new subscription bumps `generation`; entries loaded under an
older generation may have missed messages while the link was down, so the cache
revalidates them against Redis before trusting them again.

Cluster: classic PUBLISH is broadcast over the cluster bus, so one plain connection to any
node receives every channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from .errors import CacheUnavailable
from .store import RedisStore

log = logging.getLogger("gateway.invalidation")
PING_EVERY = 0.5
SILENCE_LIMIT = 2.0
RETRY_MAX = 2.0


def pubsub_client(client: Any) -> Any:
    """A client whose `.pubsub()` works: the client itself, or for a Cluster one plain
    connection to one of its nodes."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()
        kwargs: dict[str, Any] = client.get_connection_kwargs()
        options: dict[str, Any] = {
            name: kwargs[name]
            for name in ("username", "password", "ssl", "socket_connect_timeout")
            if name in kwargs
        }
        return aioredis.Redis(host=node.host, port=int(node.port), **options)
    return client


class Invalidations:
    def __init__(
        self,
        store: RedisStore,
        channels: Iterable[str],
        on_keys: Callable[[list[str]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._channels = list(channels)
        self._on_keys = on_keys
        self._clock = clock
        self._origin = secrets.token_hex(8).encode()
        self._heard = -1e9
        self._subscribed = False
        self.generation = 0

    @property
    def healthy(self) -> bool:
        return self._subscribed and self._clock() - self._heard < SILENCE_LIMIT

    async def publish(self, channel: str, keys: Iterable[str]) -> None:
        """Tell the other replicas; raises CacheUnavailable when Redis does not take it."""
        message = b"\n".join([self._origin, *(key.encode() for key in keys)])
        await self._store.publish(channel, message)

    async def run(self) -> None:
        """Subscribe, listen and ping until cancelled; reconnect after every failure."""
        delay = 0.05
        client = pubsub_client(self._store.client)
        task = asyncio.current_task()
        while task is None or not task.cancelling():  # redis-py may swallow a cancellation
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(*self._channels)
                self._connected()
                # redis-py reconnects a pub/sub connection by itself (and subscribes again):
                # messages sent meanwhile are lost, so every reconnect is a new generation.
                pubsub.connection.register_connect_callback(self._reconnected)
                delay = 0.05
                await self._listen(pubsub)
            except (RedisError, OSError, TimeoutError, CacheUnavailable) as exc:
                if self._subscribed:
                    log.warning("invalidation channel lost", extra={"error": type(exc).__name__})
            except Exception:  # never let the listener die: the tier would be trusted blindly
                log.exception("invalidation listener failed; reconnecting")
            finally:
                self._subscribed = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if task is not None and task.cancelling():
                break
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    def _reconnected(self, connection: object) -> None:
        self._connected()

    def _connected(self) -> None:
        self._subscribed = True
        self._heard = self._clock()
        self.generation += 1

    async def _listen(self, pubsub: Any) -> None:
        last_ping = 0.0
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # redis-py swallowed it (see store.py)
            now = self._clock()
            if now - last_ping >= PING_EVERY:
                await pubsub.ping()
                last_ping = now
            if now - self._heard >= SILENCE_LIMIT:
                raise TimeoutError("no answer on the invalidation channel")
            message = await pubsub.get_message(timeout=PING_EVERY)
            if message is None:
                continue
            self._heard = self._clock()
            if message.get("type") == "message":
                self._receive(message["data"])

    def _receive(self, data: bytes) -> None:
        origin, _, rest = data.partition(b"\n")
        if origin == self._origin or not rest:
            return
        self._on_keys(rest.decode("utf-8", "replace").split("\n"))
