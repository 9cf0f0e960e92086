"""The simulator's state: the runtime knobs (`SimulatorConfig`), the sites it serves and
the call log tests read (`SimulatorState`, `Call`).  No HTTP here; `app.py` serves it."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.simulator.data import Site

BASE_PATH = "/rest/v1"
HANG_SECONDS = 3600.0
NO_ANSWER = 0  # Call.outcome for "hang": the simulator never answers
FAIL_MODES = frozenset(
    {"500", "502", "503", "non_json", "wrong_shape", "hang", "429", "503_retry_after", "401"}
)
_CHOICES: dict[str, tuple[object, ...]] = {
    "sign_path": ("full", "relative"),
    "envelope": ("bare", "sites", "data"),
    "fail_mode": (None, *sorted(FAIL_MODES)),
}


@dataclass
class SimulatorConfig:
    """Runtime knobs; mutable on purpose so tests (and ``POST /_sim/config``) can flip them."""

    api_key: str = "demo-key"
    api_secret: str = "demo-secret"
    sign_path: Literal["full", "relative"] = "full"
    max_skew: float = 300
    latency: float = 0.0
    latency_jitter: float = 0.0
    error_rate: float = 0.0
    fail_mode: str | None = None
    retry_after: float = 1
    rate_limit_rps: float | None = None
    envelope: Literal["bare", "sites", "data"] = "bare"
    seed: int = 0  # seeds the error_rate and jitter draws so failures are reproducible

    def __post_init__(self) -> None:
        validate_config(dataclasses.asdict(self))


def validate_config(values: dict[str, Any]) -> None:
    """Raise ValueError naming the knob if any value is out of range or of the wrong kind."""
    names = {f.name for f in dataclasses.fields(SimulatorConfig)}
    for name, value in values.items():
        if name not in names:
            raise ValueError(f"unknown simulator knob {name!r}; known: {sorted(names)}")
        if name in _CHOICES:
            if value not in _CHOICES[name]:
                raise ValueError(f"{name} must be one of {_CHOICES[name]}, got {value!r}")
        elif name in ("api_key", "api_secret"):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        elif name == "seed":
            if not isinstance(value, int):
                raise ValueError("seed must be an integer")
        elif value is not None or name != "rate_limit_rps":
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
            if name == "error_rate" and value > 1:
                raise ValueError(f"error_rate must be within [0, 1], got {value!r}")
            if name == "rate_limit_rps" and value == 0:
                raise ValueError("rate_limit_rps must be > 0 (or null to disable)")


@dataclass(frozen=True, slots=True)
class Call:
    """One request that reached a data route; ``outcome`` is the status (0: never answered)."""

    time: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival
    method: str
    path: str  # raw path as it arrived, query string included
    outcome: int


@dataclass
class SimulatorState:
    """Everything one simulator app holds: knobs, the sites it serves, and its call log."""

    config: SimulatorConfig
    sites: dict[str, Site]
    calls: list[Call] = field(default_factory=list)
    # Arrival times of calls the rate limiter let through, for its sliding window.
    accepted: collections.deque[float] = field(default_factory=collections.deque)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)

    def count(self, path: str | None = None) -> int:
        """Calls that reached the data routes (all outcomes), optionally for one raw path."""
        if path is None:
            return len(self.calls)
        return sum(1 for call in self.calls if call.path == path)

    def reset(self) -> None:
        self.calls.clear()
        self.accepted.clear()
