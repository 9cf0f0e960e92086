"""Upstream admission shared by all replicas: the rate ceiling, Retry-After pauses and the
circuit breaker (`circuit.py`).

    Shield.admit(deadline) -> Permit  (called before every upstream attempt)
      1. circuit open (this process saw N consecutive failures) → 503 at once; after the
         cool-down one probe is let through (half-open), its outcome closes or re-opens it;
      2. one atomic Lua script on Redis: if the shared pause key is alive → 503 with its
         remaining time; else take a token from the shared bucket (`GATEWAY_UPSTREAM_RPS`,
         burst one second's worth, refilled by Redis server time so replica clocks don't
         matter) or learn how long until the next one;
      3. no token → wait, but never past the request's deadline → 503 with Retry-After.

Background refreshes (the fleet refresher) have lower priority on the same bucket:
`take_background(reserve)` takes a token only when `reserve` tokens stay in the bucket for
client requests (the same Lua script, with the reserve as an argument), else says how long
to wait.  The refresher takes its token first and then runs its fetch inside `prepaid()`:
the fetch's first attempt is admitted on that token (the circuit is still asked), so a
client request that joins the refresher's fetch never waits on the reserve.

The bucket and pause keys are the account's (`Keys.bucket`, `Keys.pause`) and share one hash
tag, so the script also works on Redis Cluster.
When Redis fails, each replica falls back to a local bucket and local pause (counted in
`gateway_redis_errors_total`), and goes back to the shared ones on the next good call.

The cross-replica fetch locks live in `locks.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections.abc import Callable, Iterator

from .circuit import Circuit, Health, Permit
from .errors import CacheUnavailable, UpstreamUnavailable
from .keys import Keys
from .metrics import Metrics
from .store import RedisStore

log = logging.getLogger("gateway.shield")

_TAKE = """
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return {2, paused, 0} end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local reserve = tonumber(ARGV[3] or '0')
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then tokens = burst; at = now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local result = 1
local wait = 0
if tokens >= 1 + reserve then
  tokens = tokens - 1
  result = 0
else
  wait = math.ceil((1 + reserve - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {result, wait, math.floor(tokens * 1000)}
"""

_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if tonumber(ARGV[1]) > left then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
"""


class Prepaid:
    """A token the refresher took already, for the first attempt of the fetch it runs."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = False


_PREPAID: contextvars.ContextVar[Prepaid | None] = contextvars.ContextVar(
    "gateway_prepaid", default=None
)


def client_reserve(rate: float, share: float) -> float:
    """Tokens a background take leaves in the bucket: the clients' part of the burst, but
    never the whole burst (a full bucket always lets the refresher through)."""
    burst = max(1.0, rate)
    return max(0.0, min(burst - 1.0, burst * (1.0 - share)))


class LocalBucket:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self._at = clock()
        self._clock = clock

    def take(self, reserve: float = 0.0) -> float:
        """0 when a token was taken (leaving `reserve`), else seconds until one is."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens >= 1 + reserve:
            self.tokens -= 1
            return 0.0
        return (1 + reserve - self.tokens) / self.rate


class Shield:
    def __init__(
        self,
        *,
        rate: float,
        circuit: Circuit,
        metrics: Metrics,
        keys: Keys,
        redis: RedisStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._local = LocalBucket(rate, clock)
        self.circuit = circuit
        self._metrics = metrics
        self._redis = redis
        self._bucket_key = keys.bucket
        self._pause_key = keys.pause
        self._paused_until = 0.0
        self._clock = clock
        metrics.rate_limit.set(rate)
        metrics.rate_tokens.set(self._local.tokens)

    def available(self) -> bool:
        """False while upstream is known to be held back: a pause, or an open circuit still
        in its cool-down (after it, a refresh may be the half-open probe)."""
        return self._paused_until <= self._clock() and not self.circuit.holding_back()

    async def admit(self, deadline: float) -> Permit:
        """A permit for one attempt now, or `UpstreamUnavailable` (503) with Retry-After."""
        permit = self.circuit.allow()
        if permit is None:
            raise UpstreamUnavailable(
                "upstream circuit is open", retry_after=self.circuit.remaining() or 1
            )
        prepaid = _PREPAID.get()
        if prepaid is not None and not prepaid.used:
            prepaid.used = True
            return permit
        try:
            await self._wait_for_token(deadline)
        except BaseException:
            permit.record(Health.NEUTRAL)  # held back before any call: frees a half-open slot
            raise
        return permit

    async def _wait_for_token(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            paused, wait = await self._take()
            if paused:
                raise UpstreamUnavailable("upstream asked us to pause", retry_after=wait)
            if wait <= 0:
                return
            if loop.time() + wait > deadline:
                raise UpstreamUnavailable("upstream rate budget is spent", retry_after=wait)
            await asyncio.sleep(wait)

    async def take_background(self, reserve: float) -> float:
        """Take a token for a background fetch if `reserve` tokens stay for clients: 0 when
        taken, else seconds to wait (also while paused or the circuit holds back)."""
        if self.circuit.holding_back():
            return max(0.05, self.circuit.remaining())
        paused, wait = await self._take(reserve)
        return max(wait, 0.001) if paused else wait

    @contextlib.contextmanager
    def prepaid(self) -> Iterator[None]:
        """Fetches started inside admit their first attempt on a token taken already."""
        token = _PREPAID.set(Prepaid())
        try:
            yield
        finally:
            _PREPAID.reset(token)

    async def _take(self, reserve: float = 0.0) -> tuple[bool, float]:
        """(paused, seconds to wait); shared through Redis when it answers."""
        if self._redis is not None:
            try:
                result = await self._redis.call(
                    "ratelimit",
                    lambda: self._redis.client.eval(  # type: ignore[union-attr]
                        _TAKE,
                        2,
                        self._bucket_key,
                        self._pause_key,
                        self._rate,
                        max(1.0, self._rate),
                        reserve,
                    ),
                )
            except CacheUnavailable:
                pass
            else:
                code, wait_ms, tokens_milli = (int(x) for x in result)
                self._metrics.rate_tokens.set(tokens_milli / 1000)
                if code == 2:
                    self._paused_until = self._clock() + wait_ms / 1000
                return code == 2, wait_ms / 1000
        left = self._paused_until - self._clock()
        if left > 0:
            return True, left
        wait = self._local.take(reserve)
        self._metrics.rate_tokens.set(self._local.tokens)
        return False, wait

    async def pause(self, seconds: float) -> None:
        seconds = max(seconds, 0.001)
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        log.warning("upstream pause", extra={"retry_after": seconds})
        if self._redis is None:
            return
        milliseconds = math.ceil(seconds * 1000)
        redis = self._redis
        with contextlib.suppress(CacheUnavailable):  # the local pause still holds
            await redis.call(
                "pause", lambda: redis.client.eval(_PAUSE, 1, self._pause_key, milliseconds)
            )
