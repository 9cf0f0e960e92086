"""Upstream health: what an upstream outcome means (`classify`), and the circuit breaker.

One function decides what every upstream outcome says about the upstream's health:

    outcome                                          health
    2xx with a usable body, 404                      SUCCESS  (the upstream works)
    5xx, timeout, connection error, unusable body    FAILURE  (counts against the circuit)
    429, 503 with Retry-After (a pause)              NEUTRAL  (it asks us to wait; not broken)
    any other 4xx (401 from a bad key, 400, …)       NEUTRAL  (caused by the request or the
                                                              configuration; no client input
                                                              can open the circuit)

The breaker is per process and per account: closed → open after `failures` consecutive
FAILUREs → half-open after `cooldown` (exactly one probe let through) → closed on a SUCCESS,
open again on a FAILURE.  Every attempt holds a `Permit`; whatever way the attempt ends
— recorded, raised, timed out or cancelled — leaving the permit's `with` block settles it,
so the half-open slot is always freed: a probe that ends without a verdict counts as a
FAILURE if it timed out or was cancelled, NEUTRAL otherwise.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from types import TracebackType

from .errors import UpstreamTimeout


class Health(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


def classify(status: int, *, retry_after: float | None = None) -> Health:
    """What an HTTP answer from upstream says about its health (bodies: see `Permit`)."""
    if 200 <= status < 300 or status == 404:
        return Health.SUCCESS
    if status == 429 or (status == 503 and retry_after is not None):
        return Health.NEUTRAL
    if status >= 500:
        return Health.FAILURE
    return Health.NEUTRAL


class Permit:
    """One admitted attempt; settle it with `record`, or let its `with` block end."""

    __slots__ = ("_circuit", "probe", "settled")

    def __init__(self, circuit: Circuit | None, probe: bool) -> None:
        self._circuit = circuit
        self.probe = probe
        self.settled = False

    def record(self, health: Health) -> None:
        if self.settled:
            return
        self.settled = True
        if self._circuit is not None:
            self._circuit.settle(health, probe=self.probe)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        ended_badly = kind is not None and issubclass(
            kind, asyncio.CancelledError | TimeoutError | UpstreamTimeout
        )
        self.record(Health.FAILURE if ended_badly and self.probe else Health.NEUTRAL)


class Circuit:
    """Consecutive-failure breaker, per process: closed → open → half-open → closed."""

    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        on_change: Callable[[str], None] = lambda state: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._on_change = on_change
        self._clock = clock
        self.state = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    def remaining(self) -> float:
        """Seconds of cool-down left while open (0 otherwise)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    def holding_back(self) -> bool:
        """Open and still cooling down: no attempt would be admitted."""
        return self.state == "open" and self.remaining() > 0

    def allow(self) -> Permit | None:
        if self.state == "closed":
            return Permit(self, probe=False)
        if self.holding_back():
            return None
        if self.state == "open":
            self._set("half_open")
        if self._probing:
            return None
        self._probing = True
        return Permit(self, probe=True)

    def settle(self, health: Health, *, probe: bool) -> None:
        if probe:
            self._probing = False
        if health is Health.SUCCESS:
            self._failures = 0
            if self.state != "closed":
                self._set("closed")
        elif health is Health.FAILURE:
            self._failures += 1
            if self.state == "half_open" or self._failures >= self._threshold:
                self._opened_at = self._clock()
                if self.state != "open":
                    self._set("open")

    def _set(self, state: str) -> None:
        self.state = state
        self._on_change(state)
