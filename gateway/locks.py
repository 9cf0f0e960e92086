"""Cross-replica fetch locks: the other half of request collapsing.

In one process, concurrent fetches of the same fill already share one task (service.py).
Across replicas, the task first takes a lock in Redis: SET NX PX with a random owner
token, released by a compare-and-delete script only by its owner.  A replica that finds
the lock taken polls (every 20 ms) until it is released and then reads what the holder
stored.  A holder that dies blocks the others at most `lock_ttl`, after which the lock
expires and a waiter fetches itself.  When Redis fails, every lock is granted locally:
collapsing degrades to per-process, it never blocks serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Protocol

from .errors import CacheUnavailable
from .keys import Keys
from .store import RedisStore

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Coordinator(Protocol):
    """Cross-replica fetch locks; the local implementation grants every lock."""

    async def try_lock(self, name: str) -> str | None: ...
    async def unlock(self, name: str, token: str) -> None: ...
    async def wait_unlocked(self, name: str) -> None: ...


class LocalCoordinator:
    """One process: in-process collapsing suffices, every lock is granted."""

    async def try_lock(self, name: str) -> str | None:
        return "local"

    async def unlock(self, name: str, token: str) -> None:
        return None

    async def wait_unlocked(self, name: str) -> None:
        return None


class RedisCoordinator:
    """Cross-replica fetch locks on Redis; on Redis errors every lock is granted locally."""

    def __init__(
        self, redis: RedisStore, keys: Keys, *, lock_ttl: float, poll: float = 0.02
    ) -> None:
        self._redis = redis
        self._ttl_ms = max(1, int(lock_ttl * 1000))
        self._key = keys.lock
        self._poll = poll

    async def try_lock(self, name: str) -> str | None:
        token = secrets.token_hex(8)
        try:
            won = await self._redis.call(
                "lock",
                lambda: self._redis.client.set(self._key(name), token, nx=True, px=self._ttl_ms),
            )
        except CacheUnavailable:
            return "local"
        return token if won else None

    async def unlock(self, name: str, token: str) -> None:
        if token == "local":
            return
        with contextlib.suppress(CacheUnavailable):  # the lock expires by itself
            await self._redis.call(
                "unlock", lambda: self._redis.client.eval(_UNLOCK, 1, self._key(name), token)
            )

    async def wait_unlocked(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ttl_ms / 1000
        while loop.time() < deadline:
            try:
                held = await self._redis.call(
                    "lock_wait", lambda: self._redis.client.exists(self._key(name))
                )
            except CacheUnavailable:
                return
            if not held:
                return
            await asyncio.sleep(self._poll)
