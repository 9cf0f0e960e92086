"""Charging events (`GET /sites/{id}/charging-events`): the query a client may send, its
canonical form, and the answer mapped from the upstream's.  Pure: no I/O, no clock.

Parameters (each optional, at most once; anything else is a 400 before any upstream call):

    from, to     ISO 8601: a date (`2025-01-01`) or a date-time with optional seconds and
                 fraction, and an optional offset (`Z`, `+01:00`, `-0500`); `from` after
                 `to` is a 400.  A `+` sent unencoded arrives as a space (form encoding):
                 a space before a trailing `HH:MM` offset is read back as `+`.
    take         1..1000
    skip         0..1000000000
    sort_field   one of `SORT_FIELDS`
    sort_order   `asc` or `desc`

The canonical query is the given parameters in the order above, timestamps as the client
sent them (validated, not rewritten: the upstream reads them), numbers without leading
zeros.  It is what goes upstream, percent-encoded by `upstream.query_string` and signed
exactly as sent, and its hash names the cache entry (`Keys.events`), so `?take=010&skip=0`
and `?skip=0&take=10` share one entry and one upstream call.

Answer: `{"data": [...], "count", "truncated"}` from the upstream's
`{"charging_events": [...], "count", "truncated", ...}` (other fields are dropped; a missing
`count` is the number of events, a missing `truncated` is false).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import BadRequest, BadUpstreamPayload
from .jsonutil import dumps
from .params import single_values

PARAMETERS = ("from", "to", "take", "skip", "sort_field", "sort_order")
SORT_FIELDS = (
    "start_time",
    "end_time",
    "energy_kwh",
    "max_current",
    "connector_id",
    "charging_station_id",
    "id",
)
SORT_ORDERS = ("asc", "desc")
MAX_TAKE = 1000
MAX_SKIP = 999_999_999  # nine digits, as the simulator (and likely the upstream) reads them
_INSTANT = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_SPACED_OFFSET = re.compile(r"(T[0-9:.]+) (\d{2}:?\d{2})$")
_DIGITS = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class EventsQuery:
    """One validated query in canonical form."""

    pairs: tuple[tuple[str, str], ...] = ()

    @property
    def digest(self) -> str:
        canonical = "&".join(f"{name}={value}" for name, value in self.pairs)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def parse_events_query(params: Mapping[str, str], *, extra: tuple[str, ...] = ()) -> EventsQuery:
    """The canonical query from the request's parameters (`extra`: names the route reads
    itself, e.g. `account`, allowed and left out); a 400 names the bad parameter."""
    values = single_values(params, (*PARAMETERS, *extra))
    canonical: dict[str, str] = {}
    instants: dict[str, datetime] = {}
    for name in ("from", "to"):
        if name in values:
            canonical[name], instants[name] = _instant(name, values[name])
    if "from" in instants and "to" in instants and instants["from"] > instants["to"]:
        raise BadRequest("from must not be after to")
    if "take" in values:
        canonical["take"] = str(_integer("take", values["take"], 1, MAX_TAKE))
    if "skip" in values:
        canonical["skip"] = str(_integer("skip", values["skip"], 0, MAX_SKIP))
    if "sort_field" in values:
        if values["sort_field"] not in SORT_FIELDS:
            raise BadRequest(f"sort_field must be one of {', '.join(SORT_FIELDS)}")
        canonical["sort_field"] = values["sort_field"]
    if "sort_order" in values:
        if values["sort_order"] not in SORT_ORDERS:
            raise BadRequest("sort_order must be asc or desc")
        canonical["sort_order"] = values["sort_order"]
    return EventsQuery(tuple((name, canonical[name]) for name in PARAMETERS if name in canonical))


def _instant(name: str, value: str) -> tuple[str, datetime]:
    """(the value to send, the instant it names); naive times are read as UTC to compare."""
    value = _SPACED_OFFSET.sub(r"\1+\2", value)
    moment = None
    if _INSTANT.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if moment is None:
        raise BadRequest(
            f"{name} must be an ISO 8601 date or date-time, e.g. 2025-01-01T00:00:00+01:00"
        )
    return value, moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _integer(name: str, value: str, low: int, high: int) -> int:
    number = int(value) if _DIGITS.fullmatch(value) else -1
    if not low <= number <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return number


def events_body(payload: dict[str, Any]) -> bytes:
    """The gateway's answer from the upstream's, or `BadUpstreamPayload`."""
    events = payload.get("charging_events")
    if not isinstance(events, list):
        raise BadUpstreamPayload("upstream charging-events answer has no charging_events list")
    count = payload.get("count")
    if isinstance(count, bool) or not isinstance(count, int):
        count = len(events)
    truncated = payload.get("truncated")
    return dumps({"data": events, "count": count, "truncated": truncated is True})
