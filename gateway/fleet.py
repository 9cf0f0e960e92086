"""Fleet-wide connector paging: an in-process index over the cached fleet connector list,
filters, and signed opaque cursors.

The fleet list (every connector, sorted by site id then connector id) is cached as one
entry; decoding ~100k connectors per request would be slow, so each process keeps the
decoded `FleetIndex` for the entry's ETag and re-checks only the tag (a short range read)
per request.  Paging is by position key, not offset: a cursor names the last connector
returned, so pages stay consistent when the fleet is refreshed between two calls.

Cursors are base64url(JSON) + an HMAC tag keyed from the API secret (shared by every
replica), bound to the query's filters: a tampered cursor or one from another query → 400.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import BadRequest

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
FILTERS = ("site_id", "charging_station_id", "v2g")
PARAMETERS = frozenset({*FILTERS, "limit", "cursor"})
MAX_VALUE_LENGTH = 256

PositionKey = tuple[str, int, str, int]


@dataclass(frozen=True, slots=True)
class Query:
    site_id: str | None = None
    charging_station_id: str | None = None
    v2g: bool | None = None
    limit: int = DEFAULT_LIMIT
    after: PositionKey | None = None

    def fingerprint(self) -> str:
        raw = orjson.dumps([self.site_id, self.charging_station_id, self.v2g])
        return hashlib.sha256(raw).hexdigest()[:16]

    def matches(self, connector: Mapping[str, Any]) -> bool:
        if self.charging_station_id is not None and (
            connector.get("charging_station_id") != self.charging_station_id
        ):
            return False
        return self.v2g is None or connector.get("v2g") is self.v2g


def _position_order(connector: Mapping[str, Any]) -> tuple[str, bool, str]:
    connector_id = connector.get("id")
    return (str(connector.get("site_id")), connector_id is None, str(connector_id or ""))


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    etag: str


class PageCache:
    """The most recently served pages of one fleet version, as bytes: dashboards poll the
    same pages, and serializing 1000 connectors costs more than everything else in a hit."""

    def __init__(self, size: int = 256, max_bytes: int = 128 << 20) -> None:
        self._pages: OrderedDict[Query, Rendered] = OrderedDict()
        self._size = size
        self._max_bytes = max_bytes  # pages of 1000 connectors are ~0.7 MiB each
        self._bytes = 0

    def get(self, query: Query) -> Rendered | None:
        rendered = self._pages.get(query)
        if rendered is not None:
            self._pages.move_to_end(query)
        return rendered

    def put(self, query: Query, rendered: Rendered) -> Rendered:
        old = self._pages.pop(query, None)
        if old is not None:
            self._bytes -= len(old.body)
        self._pages[query] = rendered
        self._bytes += len(rendered.body)
        while self._pages and (len(self._pages) > self._size or self._bytes > self._max_bytes):
            _, evicted = self._pages.popitem(last=False)
            self._bytes -= len(evicted.body)
        return rendered


class FleetIndex:
    def __init__(self, etag: str, connectors: list[dict[str, Any]]) -> None:
        self.etag = etag
        self.rendered = PageCache()
        # Paging bisects `keys`, so they must ascend. Fills write the list in that order
        # already (the stable sort is then a linear no-op), but two upstream sites sharing
        # an id would interleave their connectors and a cursor would skip or repeat some.
        connectors = sorted(connectors, key=_position_order)
        self.connectors = connectors
        self.keys: list[PositionKey] = []
        self.site_ranges: dict[str, tuple[int, int]] = {}
        seen: dict[tuple[str, str | None], int] = {}
        for index, connector in enumerate(connectors):
            site_id = str(connector.get("site_id"))
            connector_id = connector.get("id")
            occurrence = seen.get((site_id, connector_id), 0)
            seen[(site_id, connector_id)] = occurrence + 1
            self.keys.append(
                (site_id, 0 if connector_id is not None else 1, str(connector_id or ""), occurrence)
            )
            start, _ = self.site_ranges.get(site_id, (index, index))
            self.site_ranges[site_id] = (start, index + 1)

    @classmethod
    def from_body(cls, etag: str, body: bytes) -> FleetIndex:
        return cls(etag, orjson.loads(body)["data"])

    def page(self, query: Query) -> tuple[list[dict[str, Any]], PositionKey | None]:
        """Up to `limit` matches after the cursor, and the key to continue after (or None)."""
        start, end = 0, len(self.connectors)
        if query.site_id is not None:
            start, end = self.site_ranges.get(query.site_id, (0, 0))
        if query.after is not None:
            start = max(start, bisect.bisect_right(self.keys, query.after))
        found: list[dict[str, Any]] = []
        last = start
        for position in range(start, end):
            connector = self.connectors[position]
            if query.matches(connector):
                if len(found) == query.limit:
                    # There is at least one more match: continue after the last one returned.
                    return found, self.keys[last]
                found.append(connector)
                last = position
        return found, None


class Cursors:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"chargepilot-gateway cursor\x00" + secret).digest()

    def encode(self, query: Query, after: PositionKey) -> str:
        payload = orjson.dumps({"q": query.fingerprint(), "k": list(after)})
        tag = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(tag + payload).decode("ascii").rstrip("=")

    def decode(self, query: Query, cursor: str) -> PositionKey:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise BadRequest("cursor is not valid") from None
        tag, payload = raw[:16], raw[16:]
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        if len(tag) != 16 or not hmac.compare_digest(tag, expected):
            raise BadRequest("cursor is not valid")
        data = orjson.loads(payload)
        if data.get("q") != query.fingerprint():
            raise BadRequest("cursor belongs to another query (filters differ)")
        site_id, rank, connector_id, occurrence = data["k"]
        return (str(site_id), int(rank), str(connector_id), int(occurrence))


def parse_query(params: Mapping[str, str], cursors: Cursors) -> Query:
    """Validate `/connectors` query parameters; any problem is a 400 naming the parameter."""
    unknown = sorted(set(params) - PARAMETERS)
    if unknown:
        raise BadRequest(
            f"unknown query parameter {unknown[0]!r}; allowed: " + ", ".join(sorted(PARAMETERS))
        )
    for name, value in params.items():
        longest = 4096 if name == "cursor" else MAX_VALUE_LENGTH
        if not value or len(value) > longest or any(ord(c) < 32 for c in value):
            raise BadRequest(f"query parameter {name!r} is empty or malformed")
    v2g: bool | None = None
    if "v2g" in params:
        if params["v2g"] not in ("true", "false"):
            raise BadRequest("v2g must be true or false")
        v2g = params["v2g"] == "true"
    limit = DEFAULT_LIMIT
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            raise BadRequest("limit must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    query = Query(params.get("site_id"), params.get("charging_station_id"), v2g, limit)
    if "cursor" in params:
        after = cursors.decode(query, params["cursor"])
        query = Query(query.site_id, query.charging_station_id, v2g, limit, after)
    return query
