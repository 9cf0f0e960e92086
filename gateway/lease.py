"""A lease on Redis: one replica at a time does a job (the fleet refresher).

SET NX PX with a random owner token takes it; the holder renews it (a compare-and-PEXPIRE
script) every third of its lifetime and releases it on shutdown (compare-and-delete), so
another replica takes over at once after a clean stop, or within one lifetime after a
crash.  The holder counts the lease as its own only until the end of the lifetime that
began *before* its last successful renewal was sent, so two replicas never both believe
they hold it, whatever the network did to the answer.  When Redis fails, the holder keeps
the lease until that moment and then stops; a replica without Redis takes nothing (with
an unreachable Redis, which replica works is unknown).  Without Redis at all (the
embedded mode) there is one process, and it always holds the lease.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable

from .errors import CacheUnavailable
from .store import RedisStore

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

DEFAULT_TTL = 15.0


class Lease:
    def __init__(
        self,
        redis: RedisStore | None,
        key: str,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"a lease needs a lifetime > 0 s, got {ttl}")
        self._redis = redis
        self._key = key
        self._ttl_ms = max(1, int(ttl * 1000))
        self._clock = clock
        self._token = secrets.token_hex(16)
        self._held_until = float("-inf")
        self._asked_at = float("-inf")
        self.ttl = ttl

    @property
    def held(self) -> bool:
        return self._redis is None or self._clock() < self._held_until

    async def hold(self) -> bool:
        """Take or renew the lease when it is time to; whether this replica holds it now."""
        redis = self._redis
        if redis is None:
            return True
        now = self._clock()
        if now - self._asked_at < self.ttl / 3:
            return self.held
        self._asked_at = now
        try:
            if self.held:
                won = await redis.call(
                    "lease",
                    lambda: redis.client.eval(_RENEW, 1, self._key, self._token, self._ttl_ms),
                )
            else:
                won = await redis.call(
                    "lease",
                    lambda: redis.client.set(self._key, self._token, nx=True, px=self._ttl_ms),
                )
        except CacheUnavailable:
            return self.held  # keep it until its lifetime ends, then stop
        self._held_until = now + self.ttl if won else float("-inf")
        return self.held

    async def release(self) -> None:
        redis = self._redis
        if redis is None or not self.held:
            return
        self._held_until = float("-inf")
        with contextlib.suppress(CacheUnavailable):  # it expires by itself
            await redis.call(
                "lease", lambda: redis.client.eval(_RELEASE, 1, self._key, self._token)
            )
