"""The response cache: entries (bytes + metadata) with fresh, stale and negative lifetimes.

Knows TTLs, key layout and the entry format; nothing of HTTP or ChargePilot.

Entry format (binary, one Redis string per key):
    b"CPG1" | stored_at: f64 big-endian | flags: u8 | etag: 32 ascii hex | body bytes
Keys are namespaced and versioned (`cpgw:v1:…`); a format change bumps `FORMAT`, so new
code never reads old bytes (old keys simply expire).  Ids inside keys are percent-encoded,
so no id can forge another key.

Lifetimes: a positive entry is fresh for `fresh_ttl` after `stored_at` and then stale for
`stale_ttl` more, after which the store drops it; a negative entry (upstream 404) lives for
`negative_ttl` and is never stale.  `stored_at` is wall-clock time so replicas agree on age.

Tiers: with Redis, every write also goes to a small in-process `MemoryStore`; when a Redis
call fails (`CacheUnavailable`) reads fall back to it and writes skip Redis, so the gateway
keeps serving.  Without Redis the memory store is the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from .errors import CacheUnavailable
from .store import MemoryStore, Store

FORMAT = "v1"
MAGIC = b"CPG1"
_HEADER = struct.Struct("!dB")
ETAG_LENGTH = 32
HEADER_LENGTH = len(MAGIC) + _HEADER.size + ETAG_LENGTH
FLAG_NEGATIVE = 1


def make_etag(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes
    stored_at: float
    etag: str  # 32 hex characters, without quotes
    negative: bool = False

    def encode(self) -> bytes:
        flags = FLAG_NEGATIVE if self.negative else 0
        return b"".join(
            (MAGIC, _HEADER.pack(self.stored_at, flags), self.etag.encode("ascii"), self.body)
        )

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """The entry, or None for bytes of another format (treated as a miss)."""
        if len(raw) < HEADER_LENGTH or not raw.startswith(MAGIC):
            return None
        stored_at, flags = _HEADER.unpack_from(raw, len(MAGIC))
        start = len(MAGIC) + _HEADER.size
        etag = raw[start : start + ETAG_LENGTH].decode("ascii", "replace")
        return cls(raw[HEADER_LENGTH:], stored_at, etag, bool(flags & FLAG_NEGATIVE))

    @classmethod
    def for_body(cls, body: bytes, stored_at: float) -> Entry:
        return cls(body, stored_at, make_etag(body))


@dataclass(frozen=True, slots=True)
class Lookup:
    entry: Entry
    ttl: float  # seconds of freshness left; negative once stale

    @property
    def fresh(self) -> bool:
        return self.ttl > 0


class Keys:
    """The key layout; one place, so purge and fill can't disagree."""

    def __init__(self, prefix: str = "cpgw") -> None:
        self.namespace = f"{prefix}:{FORMAT}:"

    def sites(self) -> str:
        return self.namespace + "sites"

    def fleet_connectors(self) -> str:
        return self.namespace + "connectors"

    def site(self, site_id: str) -> str:
        return f"{self.namespace}site:{quote(site_id, safe='')}"

    def site_connectors(self, site_id: str) -> str:
        return self.site(site_id) + ":connectors"

    def site_nodes(self, site_id: str) -> str:
        return self.site(site_id) + ":nodes"

    def connector(self, connector_id: str) -> str:
        return f"{self.namespace}connector:{quote(connector_id, safe='')}"

    def site_family(self, site_id: str) -> list[str]:
        return [self.site(site_id), self.site_connectors(site_id), self.site_nodes(site_id)]


class Cache:
    def __init__(
        self,
        store: Store,
        *,
        fresh_ttl: float,
        stale_ttl: float,
        negative_ttl: float,
        fallback: MemoryStore | None = None,
        keys: Keys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keys = keys or Keys()
        self.fresh_ttl = fresh_ttl
        self.stale_ttl = stale_ttl
        self.negative_ttl = negative_ttl
        self._fallback = fallback
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    async def get(self, key: str) -> Lookup | None:
        return self._lookup(await self._read(key))

    async def peek(self, key: str) -> Lookup | None:
        """The entry's metadata without its body (a range read): for big entries whose
        decoded form a process keeps, and only needs to re-validate by ETag."""
        try:
            raw = await self.store.get_range(key, HEADER_LENGTH - 1)
        except CacheUnavailable:  # counted by the store; serve from the local tier
            raw = self._fallback.get_now(key) if self._fallback else None
        return self._lookup(raw[:HEADER_LENGTH] if raw is not None else None)

    def _lookup(self, raw: bytes | None) -> Lookup | None:
        entry = Entry.decode(raw) if raw is not None else None
        if entry is None:
            return None
        lifetime = self.negative_ttl if entry.negative else self.fresh_ttl
        ttl = entry.stored_at + lifetime - self._clock()
        if (entry.negative and ttl <= 0) or ttl <= -self.stale_ttl:
            return None
        return Lookup(entry, ttl)

    async def put_many(self, bodies: Mapping[str, bytes], *, stored_at: float) -> dict[str, Entry]:
        entries = {key: Entry.for_body(body, stored_at) for key, body in bodies.items()}
        await self._write(
            [(key, entry.encode()) for key, entry in entries.items()],
            self.fresh_ttl + self.stale_ttl,
        )
        return entries

    async def put_negative(self, keys: Iterable[str], *, stored_at: float) -> None:
        raw = Entry(b"", stored_at, "0" * ETAG_LENGTH, negative=True).encode()
        await self._write([(key, raw) for key in keys], self.negative_ttl)

    async def delete(self, keys: Iterable[str]) -> None:
        doomed = list(keys)
        if self._fallback is not None:
            await self._fallback.delete(doomed)
        await self.store.delete(doomed)  # a failed purge must be reported, not hidden

    async def purge_all(self) -> int:
        if self._fallback is not None:
            await self._fallback.delete_prefix(self.keys.namespace)
        return await self.store.delete_prefix(self.keys.namespace)

    async def _read(self, key: str) -> bytes | None:
        try:
            return await self.store.get(key)
        except CacheUnavailable:  # counted by the store; serve from the local tier
            return self._fallback.get_now(key) if self._fallback else None

    async def _write(self, items: list[tuple[str, bytes]], ttl: float) -> None:
        if ttl <= 0:
            return
        if self._fallback is not None:
            self._fallback.set_many_now(items, ttl)
        # A failed shared write is counted by the store; the local tier still has the entry.
        with contextlib.suppress(CacheUnavailable):
            await self.store.set_many(items, ttl)
