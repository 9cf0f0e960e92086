"""Charging events: ``GET /charging-events/site/{id}``'s query, data and answer, no HTTP.

Owns the events the simulator invents and how a query selects them. Events are a pure
function of the site's connectors and the seed, one ``random.Random`` stream per connector
(seeded ``"charging-events:SEED:SITE:CONNECTOR"``): every call and every simulator process
with the same seed sees the same events, and a connector added or removed changes only its
own events.

Data: each connector charges now and then within the four weeks from ``EVENTS_START``
(2025-01-01T00:00:00Z): sessions of 20 minutes to 10 hours, 1 to 36 hours apart. An event is
``{"id", "site_id", "charging_station_id", "connector_id", "start_time", "end_time",
"energy_kwh", "max_current"}``; ``connector_id`` is the connector's ``id`` (not its OCPP
number), times are ISO 8601 UTC with ``Z`` and whole seconds, ``max_current`` in A.

Query (every parameter optional; anything else, a repeated or a malformed one is an error):

===============  ==========================================================================
parameter        meaning
===============  ==========================================================================
``from``, ``to``  ISO 8601 instants (``Z`` or an offset such as ``+01:00``; a date alone or a
                 time without offset is UTC); an event matches when
                 ``from <= start_time < to``; ``from`` after ``to`` is an error
``take``         page size, 1..1000, default 100
``skip``         events skipped before the page, >= 0, default 0
``sort_field``   one of ``SORT_FIELDS``, default ``start_time``; ties broken by ``id``
``sort_order``   ``asc`` (default) or ``desc``
===============  ==========================================================================

Answer: ``{"charging_events": [...], "count": N, "truncated": bool}`` where ``count`` is the
number of events in this answer and ``truncated`` is true when more events match beyond it
(``skip + take`` < all matching).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any
from urllib.parse import parse_qsl

from gateway.simulator.data import Site, iter_connectors

EVENTS_START = datetime(2025, 1, 1, tzinfo=UTC)
EVENTS_SPAN = timedelta(days=28)
DEFAULT_TAKE = 100
MAX_TAKE = 1000
SORT_FIELDS = (
    "start_time",
    "end_time",
    "energy_kwh",
    "max_current",
    "connector_id",
    "charging_station_id",
    "id",
)
PARAMETERS = frozenset({"from", "to", "take", "skip", "sort_field", "sort_order"})
_INTEGER = re.compile(r"[0-9]{1,9}")
_VOLTS = 230

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventQuery:
    """One validated charging-events query."""

    start: datetime | None = None
    end: datetime | None = None
    take: int = DEFAULT_TAKE
    skip: int = 0
    sort_field: str = "start_time"
    descending: bool = False


def _instant(name: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 date-time, got {value!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _integer(name: str, value: str, low: int, high: int | None) -> int:
    number = int(value) if _INTEGER.fullmatch(value) else -1
    if number < low or (high is not None and number > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return number


def parse_query(raw_query: str) -> EventQuery:
    """The query from a raw query string; ValueError names the offending parameter."""
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=bool(raw_query),
                          errors="strict")  # fmt: skip
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed query string: {exc}") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name not in PARAMETERS:
            raise ValueError(f"unknown parameter {name!r}; known: {sorted(PARAMETERS)}")
        if name in values:
            raise ValueError(f"parameter {name!r} given more than once")
        values[name] = value
    start = _instant("from", values["from"]) if "from" in values else None
    end = _instant("to", values["to"]) if "to" in values else None
    if start is not None and end is not None and start > end:
        raise ValueError("from must not be after to")
    sort_field = values.get("sort_field", "start_time")
    if sort_field not in SORT_FIELDS:
        raise ValueError(f"sort_field must be one of {SORT_FIELDS}, got {sort_field!r}")
    sort_order = values.get("sort_order", "asc")
    if sort_order not in ("asc", "desc"):
        raise ValueError(f"sort_order must be 'asc' or 'desc', got {sort_order!r}")
    return EventQuery(
        start=start,
        end=end,
        take=_integer("take", values["take"], 1, MAX_TAKE) if "take" in values else DEFAULT_TAKE,
        skip=_integer("skip", values["skip"], 0, None) if "skip" in values else 0,
        sort_field=sort_field,
        descending=sort_order == "desc",
    )


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def timeline(site: Site, seed: int) -> list[tuple[float, Event]]:
    """Every charging event of ``site`` with its start as epoch seconds, in start order."""
    window_end = EVENTS_START + EVENTS_SPAN
    timed: list[tuple[float, Event]] = []
    for connector in iter_connectors(site):
        # One stream per connector: adding or removing a connector leaves the others' alone.
        rng = Random(f"charging-events:{seed}:{site['id']}:{connector['id']}")
        capability = [float(amps) for amps in connector.get("charging_capability") or [16]]
        peak, phases = max(capability), len(capability)
        start = EVENTS_START + timedelta(seconds=rng.randrange(12 * 3600))
        number = 0
        while start < window_end:
            number += 1
            hours = rng.uniform(1 / 3, 10)
            end = start + timedelta(seconds=round(hours * 3600))
            current = round(peak * rng.uniform(0.4, 1.0), 1)
            energy = _VOLTS * current * phases * hours * rng.uniform(0.3, 0.9) / 1000
            timed.append((start.timestamp(), {
                "id": f"{connector['id']}-e{number:04d}",
                "site_id": site["id"],
                "charging_station_id": connector.get("charging_station_id"),
                "connector_id": connector["id"],
                "start_time": _stamp(start),
                "end_time": _stamp(end),
                "energy_kwh": round(energy, 3),
                "max_current": current,
            }))  # fmt: skip
            start = end + timedelta(seconds=rng.randrange(3600, 36 * 3600))
    timed.sort(key=lambda item: (item[0], item[1]["id"]))
    return timed


def site_events(site: Site, seed: int) -> list[Event]:
    """Every charging event of ``site``, in start order (ties by id)."""
    return [event for _, event in timeline(site, seed)]


def answer(events: list[tuple[float, Event]], query: EventQuery) -> dict[str, Any]:
    """Filter, sort and page a ``timeline`` into the upstream's answer."""
    low = query.start.timestamp() if query.start is not None else float("-inf")
    high = query.end.timestamp() if query.end is not None else float("inf")
    field = query.sort_field
    matching = sorted(
        (event for start, event in events if low <= start < high),
        key=lambda event: (event[field] is None, event[field], event["id"]),
        reverse=query.descending,
    )
    page = matching[query.skip : query.skip + query.take]
    return {
        "charging_events": page,
        "count": len(page),
        "truncated": query.skip + query.take < len(matching),
    }
