"""Fleet-wide connectors: the compact form the fleet fill stores, the in-process index each
replica keeps of it, filters and paging.

The fleet fill stores every connector of every site as one entry in a compact record
format (`encode_fleet`): per connector its site id, id, charging station id, V2G flag and
its JSON bytes, in (site id, connector id) order.  A replica decodes it once per fleet
version (`FleetIndex.from_blob`, off the event loop for big fleets) into parallel lists
of plain strings and byte strings — no per-connector dicts — so 100k connectors cost
tens of MiB, a page is a `b",".join` of precomputed bytes (no JSON serializing), and
`/connectors/{id}` is a dict lookup.

Paging is by position key, not offset: a cursor names the last connector returned, so
pages stay consistent when the fleet is refreshed between two calls.  Cursors live in
`cursors.py`.
"""

from __future__ import annotations

import bisect
import struct
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .entry import Entry, make_etag

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
MAGIC = b"FLT1"
_RECORD = struct.Struct("!IIIBI")
_NULL = 0xFFFFFFFF

PositionKey = tuple[str, int, str, int]


@dataclass(frozen=True, slots=True)
class Query:
    site_id: str | None = None
    charging_station_id: str | None = None
    v2g: bool | None = None
    account: str | None = None
    limit: int = DEFAULT_LIMIT
    after: PositionKey | None = None
    # Paging merged across accounts: the account of the connector `after` names.
    after_account: str | None = None

    @property
    def filters(self) -> tuple[str | None, str | None, bool | None, str | None]:
        return (self.site_id, self.charging_station_id, self.v2g, self.account)


def _text(value: Any) -> bytes | None:
    return None if value is None else str(value).encode("utf-8")


def encode_fleet(records: Iterable[tuple[dict[str, Any], bytes]]) -> bytes:
    """The stored form of (connector, its JSON bytes) pairs, in the order given."""
    parts = [MAGIC]
    for connector, body in records:
        fields = [
            _text(connector.get("site_id")) or b"",
            _text(connector.get("id")),
            _text(connector.get("charging_station_id")),
        ]
        lengths = [_NULL if f is None else len(f) for f in fields]
        parts.append(_RECORD.pack(*lengths, bool(connector.get("v2g")), len(body)))
        parts.extend(f for f in fields if f)
        parts.append(body)
    return b"".join(parts)


def _decode(blob: bytes) -> Iterator[tuple[str, str | None, str | None, bool, bytes]]:
    if not blob.startswith(MAGIC):
        raise ValueError("not a fleet blob")
    view, offset = memoryview(blob), len(MAGIC)
    while offset < len(blob):
        site_len, id_len, station_len, v2g, body_len = _RECORD.unpack_from(blob, offset)
        offset += _RECORD.size
        texts: list[str | None] = []
        for length in (site_len, id_len, station_len):
            if length == _NULL:
                texts.append(None)
                continue
            texts.append(str(view[offset : offset + length], "utf-8"))
            offset += length
        body = bytes(view[offset : offset + body_len])
        offset += body_len
        yield texts[0] or "", texts[1], texts[2], bool(v2g), body


class FleetIndex:
    """One fleet version, decoded: parallel lists in position order."""

    def __init__(
        self,
        etag: str,
        stored_at: float,
        rows: Iterable[tuple[str, str | None, str | None, bool, bytes]],
        account: str | None = None,
    ) -> None:
        self.etag = etag
        self.stored_at = stored_at
        self.account = account
        # Paging bisects `keys`, so they must ascend; the fill writes them in that order,
        # but two upstream sites sharing an id would interleave (the sort is stable).
        ordered = sorted(rows, key=lambda row: (row[0], row[1] is None, row[1] or ""))
        self.site_ids = [row[0] for row in ordered]
        self.ids = [row[1] for row in ordered]
        self.stations = [row[2] for row in ordered]
        self.v2g = [row[3] for row in ordered]
        self.bodies = [row[4] for row in ordered]
        self.keys: list[PositionKey] = []
        self.site_ranges: dict[str, tuple[int, int]] = {}
        self.by_id: dict[str, int] = {}
        seen: dict[tuple[str, str | None], int] = {}
        for index, (site_id, connector_id) in enumerate(zip(self.site_ids, self.ids, strict=True)):
            occurrence = seen.get((site_id, connector_id), 0)
            seen[(site_id, connector_id)] = occurrence + 1
            rank = 0 if connector_id is not None else 1
            self.keys.append((site_id, rank, connector_id or "", occurrence))
            start, _ = self.site_ranges.get(site_id, (index, index))
            self.site_ranges[site_id] = (start, index + 1)
            if connector_id is not None:
                self.by_id.setdefault(connector_id, index)  # the first site (by id) wins
        self.pages = PageCache()
        self._entries: dict[int, Entry] = {}

    @classmethod
    def from_blob(
        cls, etag: str, stored_at: float, blob: bytes, account: str | None = None
    ) -> FleetIndex:
        return cls(etag, stored_at, _decode(blob), account)

    def __len__(self) -> int:
        return len(self.bodies)

    def connector(self, connector_id: str) -> Entry | None:
        """One connector as a cache entry of this fleet version (None: not in the fleet)."""
        index = self.by_id.get(connector_id)
        if index is None:
            return None
        entry = self._entries.get(index)
        if entry is None:
            body = self.bodies[index]
            entry = Entry(body, self.stored_at, make_etag(body))
            if len(self._entries) < 100_000:
                self._entries[index] = entry
        return entry

    def page(self, query: Query) -> tuple[list[int], PositionKey | None]:
        """Positions of up to `limit` matches after the cursor, and where to continue."""
        start = 0 if query.after is None else bisect.bisect_right(self.keys, query.after)
        found: list[int] = []
        for position in self.matching(query, start):
            if len(found) == query.limit:
                # There is at least one more match: continue after the last one returned.
                return found, self.keys[found[-1]]
            found.append(position)
        return found, None

    def matching(self, query: Query, start: int = 0) -> Iterator[int]:
        """Positions from `start` on that match the query's filters, in position order."""
        if query.account is not None and query.account != self.account:
            return
        end = len(self.bodies)
        if query.site_id is not None:
            first, end = self.site_ranges.get(query.site_id, (0, 0))
            start = max(start, first)
        station, v2g = query.charging_station_id, query.v2g
        for position in range(start, end):
            if station is not None and self.stations[position] != station:
                continue
            if v2g is not None and self.v2g[position] is not v2g:
                continue
            yield position

    def start_for(self, site_id: str, *, after_site: bool) -> int:
        """The first position of `site_id`'s connectors or later sites' (`after_site`: the
        first position past them)."""
        bound: PositionKey = (site_id, 2, "", 0) if after_site else (site_id, -1, "", 0)
        return bisect.bisect_left(self.keys, bound)


class PageCache:
    """The most recently served pages of one fleet version, as bytes: dashboards poll the
    same pages, and joining 1000 connectors' bytes still costs more than a hit."""

    def __init__(self, size: int = 256, max_bytes: int = 128 << 20) -> None:
        self._pages: OrderedDict[Query, Entry] = OrderedDict()
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0

    def get(self, query: Query) -> Entry | None:
        page = self._pages.get(query)
        if page is not None:
            self._pages.move_to_end(query)
        return page

    def put(self, query: Query, page: Entry) -> Entry:
        old = self._pages.pop(query, None)
        if old is not None:
            self._bytes -= len(old.body)
        self._pages[query] = page
        self._bytes += len(page.body)
        while self._pages and (len(self._pages) > self._size or self._bytes > self._max_bytes):
            _, evicted = self._pages.popitem(last=False)
            self._bytes -= len(evicted.body)
        return page
