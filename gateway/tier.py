"""The in-process tier: ready-to-send entries in front of Redis (or instead of it).

Each process keeps the entries it served or stored as `Ready` objects: the `Entry` (body
bytes, ETag, stored_at, and the `memo` where the HTTP edge keeps what it prebuilt for that
entry: header sets, compressed bodies), so a hit parses and serializes nothing.

Bounds: at most `max_entries` entries and `max_bytes` body bytes, least recently used
first out; an entry also leaves when its lifetime (`expires`, wall clock) ends, swept on
every write from a heap, so a flood of short-lived entries (negative answers for junk ids)
cannot grow the process.

Trust is decided by the cache, not here: each `Ready` records the invalidation
`generation` it was loaded under (see `invalidation.py`), and a `partial` flag for entries
holding only metadata (the fleet's connector blob is kept decoded elsewhere, only its ETag
here).  Single event loop only.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .entry import Entry


@dataclass(slots=True, eq=False)
class Ready:
    entry: Entry
    expires: float
    generation: int
    partial: bool = False

    @property
    def size(self) -> int:
        return self.entry.size + 200  # the objects around the body cost something too


class Tier:
    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._items: OrderedDict[str, Ready] = OrderedDict()
        self._expiry: list[tuple[float, int, str]] = []
        self._sequence = 0
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> Ready | None:
        ready = self._items.get(key)
        if ready is None:
            return None
        if ready.expires <= self._clock():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return ready

    def put(
        self, key: str, entry: Entry, *, expires: float, generation: int, partial: bool = False
    ) -> Ready:
        ready = Ready(entry, expires, generation, partial)
        self._drop(key)
        if ready.size > self._max_bytes or expires <= self._clock():
            return ready  # handed back, not kept
        self._items[key] = ready
        self._bytes += ready.size
        self._sequence += 1
        heapq.heappush(self._expiry, (expires, self._sequence, key))
        self._evict()
        return ready

    def drop(self, keys: Iterable[str]) -> int:
        return sum(self._drop(key) for key in keys)

    def drop_prefix(self, prefix: str) -> int:
        return self.drop([key for key in self._items if key.startswith(prefix)])

    def clear(self) -> None:
        self._items.clear()
        self._expiry.clear()
        self._bytes = 0

    def _evict(self) -> None:
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            _, _, key = heapq.heappop(self._expiry)
            ready = self._items.get(key)
            if ready is not None and ready.expires <= now:
                self._drop(key)
        while self._items and (
            len(self._items) > self._max_entries or self._bytes > self._max_bytes
        ):
            self._drop(next(iter(self._items)))
        if len(self._expiry) > 2 * len(self._items) + 1024:
            # Heap entries of replaced or dropped keys: rebuild rather than let them pile up.
            self._expiry = [(r.expires, 0, k) for k, r in self._items.items()]
            heapq.heapify(self._expiry)

    def _drop(self, key: str) -> bool:
        ready = self._items.pop(key, None)
        if ready is None:
            return False
        self._bytes -= ready.size
        return True
