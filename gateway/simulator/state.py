"""The simulator's state: the runtime knobs (`SimulatorConfig`), the sites it serves, the
changes applied to them and the call log tests read (`SimulatorState`, `Call`), and the
typed app key the state lives under.  No HTTP handling here; `app.py` serves it."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from gateway.simulator.changes import Change, apply_change
from gateway.simulator.data import Site, iter_connectors
from gateway.simulator.events import Event, timeline

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
    seed: int = 0  # seeds error_rate, jitter, changes and events so runs are reproducible
    change_interval: float = 0.0  # seconds between random site changes while serving; 0: off
    compress: bool = True  # gzip/br/zstd data answers when the request's Accept-Encoding asks

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
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("seed must be an integer")
        elif name == "compress":
            if not isinstance(value, bool):
                raise ValueError(f"compress must be true or false, got {value!r}")
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
    api_key: str | None = None  # the x-api-key presented
    traceparent: str | None = None
    accept_encoding: str | None = None


@dataclass
class SimulatorState:
    """Everything one simulator app holds: knobs, the sites it serves, the changes applied
    to them (oldest first) and its call log."""

    config: SimulatorConfig
    sites: dict[str, Site]
    calls: list[Call] = field(default_factory=list)
    mutations: list[Change] = field(default_factory=list)
    # Arrival times of calls the rate limiter let through, for its sliding window.
    accepted: collections.deque[float] = field(default_factory=collections.deque)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    rng: random.Random = field(init=False)
    change_rng: random.Random = field(init=False)
    # Generated charging events per (seed, site id, connector ids); bounded, see events().
    _events: dict[tuple[int, str, tuple[str, ...]], list[tuple[float, Event]]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.change_rng = random.Random(f"changes:{self.config.seed}")

    def reseed(self) -> None:
        """Restart every seeded draw from ``config.seed``."""
        self.__post_init__()

    def mutate(
        self,
        kind: str | None = None,
        rng: random.Random | None = None,
        *,
        site_id: str | None = None,
    ) -> Change:
        """Apply one change (see ``changes.py``; None: a random applicable kind), record it in
        ``mutations`` and return it. Draws from ``change_rng`` unless given ``rng``."""
        change = apply_change(self.sites, kind, rng or self.change_rng, site_id=site_id)
        self.mutations.append(change)
        return change

    def events(self, site: Site) -> list[tuple[float, Event]]:
        """The site's charging-event timeline, generated once per seed and connector set."""
        key = (self.config.seed, site["id"], tuple(c["id"] for c in iter_connectors(site)))
        found = self._events.get(key)
        if found is None:
            if len(self._events) >= 64:
                self._events.clear()
            found = self._events[key] = timeline(site, self.config.seed)
        return found

    def count(self, path: str | None = None) -> int:
        """Calls that reached the data routes (all outcomes), optionally for one raw path."""
        if path is None:
            return len(self.calls)
        return sum(1 for call in self.calls if call.path == path)

    def count_by_api_key(self) -> dict[str | None, int]:
        """Calls per ``x-api-key`` presented (None: no key header)."""
        return dict(collections.Counter(call.api_key for call in self.calls))

    def reset(self) -> None:
        self.calls.clear()
        self.accepted.clear()


SIM_STATE = web.AppKey("sim_state", SimulatorState)
