"""The response cache of one account: the in-process tier in front of Redis (or alone).

Knows lifetimes, the tier, Redis and invalidation; nothing of HTTP or ChargePilot.

Lifetimes: a positive entry is fresh for `fresh_ttl` after `stored_at` (or for the lifetime
its writer gave `put_many`, which its readers give `get`: charging events), then stale for
`stale_ttl` more, after which it is gone (Redis expires the key; the tier sweeps it); a
negative entry (an upstream 404) lives `negative_ttl` and is never stale.

Reading `get(key)`:
  1. the tier holds the entry and may be trusted (no Redis: always; with Redis: the
     invalidation channel is healthy and the entry was loaded under its current
     generation) → answered from the process, no Redis round trip;
  2. the tier holds it untrusted → a header-only read revalidates it (same ETag and age:
     trusted again, prebuilt bytes kept), else the entry is read in full;
  3. a miss in the tier → one Redis read (concurrent reads of one key share it);
  4. Redis fails → whatever the tier holds, trusted or not (degraded, never an error).
A read that raced with an invalidation or a local write is kept but not trusted, and an
older copy from Redis never replaces a newer one in the tier.

Writing: the tier first, then Redis in chunks, then the keys are published so every
other replica drops its copy.  A failed Redis write is counted by the store and leaves the
tier serving; a failed delete (purge) is raised, because a purge that did not happen must
be reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping

from .entry import HEADER_LENGTH, Entry, Lookup
from .errors import CacheUnavailable
from .invalidation import Invalidations
from .keys import Keys
from .store import RedisStore, chunks
from .tier import Ready, Tier

_Read = tuple[str, bool]  # (key, header only)


class Cache:
    def __init__(
        self,
        keys: Keys,
        tier: Tier,
        *,
        fresh_ttl: float,
        stale_ttl: float,
        negative_ttl: float,
        shared: RedisStore | None = None,
        invalidations: Invalidations | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.tier = tier
        self.shared = shared
        self.fresh_ttl = fresh_ttl
        self.stale_ttl = stale_ttl
        self.negative_ttl = negative_ttl
        self._invalidations = invalidations
        self._clock = clock
        self._reads: dict[_Read, asyncio.Future[bytes | None]] = {}
        self._sequence = 0  # bumped by every invalidation and local write

    def now(self) -> float:
        return self._clock()

    def lookup(self, entry: Entry, fresh_ttl: float | None = None) -> Lookup | None:
        """Freshness of `entry` now, or None once it has outlived its lifetime."""
        if entry.negative:
            ttl = entry.stored_at + self.negative_ttl - self._clock()
            return Lookup(entry, ttl) if ttl > 0 else None
        ttl = entry.stored_at + (self.fresh_ttl if fresh_ttl is None else fresh_ttl) - self._clock()
        return Lookup(entry, ttl) if ttl > -self.stale_ttl else None

    def invalidated(self, keys: Iterable[str]) -> None:
        """Keys replaced or purged by another replica (`*prefix`: everything under it)."""
        self._sequence += 1
        for key in keys:
            if key.startswith("*"):
                self.tier.drop_prefix(key[1:])
            else:
                self.tier.drop([key])

    # -- reading --------------------------------------------------------------------------

    async def get(
        self,
        key: str,
        *,
        meta_only: bool = False,
        fresh_ttl: float | None = None,
        from_shared: bool = False,
        keep: bool = True,
    ) -> Lookup | None:
        """The entry for `key` (with `meta_only`, possibly without its body).  With
        `from_shared`, Redis is asked even when the tier could answer: after another
        replica's fill, whose invalidation may still be on its way.  `keep=False`: a big
        entry the caller keeps in another form; the tier is not filled with it."""
        ready = self.tier.get(key)
        if ready is not None and ready.partial and not meta_only:
            ready = None
        if ready is not None and (
            self.shared is None or (self._trusted(ready) and not from_shared)
        ):
            return self._from_tier(key, ready, fresh_ttl)
        if self.shared is None:
            return None
        sequence = self._sequence
        try:
            if ready is not None and not from_shared:
                head = await self._read(key, header=True)
                current = Entry.decode(head) if head is not None else None
                if current is not None and _same(current, ready.entry):
                    if sequence == self._sequence and self._invalidations is not None:
                        ready.generation = self._invalidations.generation
                    return self._from_tier(key, ready, fresh_ttl)
            raw = await self._read(key, header=meta_only)
        except CacheUnavailable:  # counted by the store: serve what this process holds
            if ready is None or ready.partial:
                return None  # metadata of a body only Redis has is no answer while it is down
            return self._from_tier(key, ready, fresh_ttl)
        entry = Entry.decode(raw) if raw is not None else None
        if entry is None:
            self.tier.drop([key])
            return None
        lookup = self.lookup(entry, fresh_ttl)
        if lookup is not None and keep:
            self._keep(key, entry, partial=meta_only, trusted=sequence == self._sequence)
        return lookup

    def peek(self, key: str) -> Lookup | None:
        """What `get` would answer from the tier alone, without a Redis read (None when
        it would have to ask Redis: not held, partial, or not trusted)."""
        ready = self.tier.get(key)
        if ready is None or ready.partial or not self._trusted(ready):
            return None
        return self._from_tier(key, ready, None)

    def _trusted(self, ready: Ready) -> bool:
        if self.shared is None:
            return True
        invalidations = self._invalidations
        return (
            invalidations is not None
            and invalidations.healthy
            and ready.generation == invalidations.generation
        )

    def _from_tier(self, key: str, ready: Ready, fresh_ttl: float | None) -> Lookup | None:
        lookup = self.lookup(ready.entry, fresh_ttl)
        if lookup is None:
            self.tier.drop([key])
        return lookup

    async def _read(self, key: str, *, header: bool) -> bytes | None:
        """One Redis read per (key, header) at a time; concurrent callers share it."""
        shared = self.shared
        assert shared is not None
        slot = (key, header)
        pending = self._reads.get(slot)
        if pending is None:
            read = shared.get_range(key, HEADER_LENGTH - 1) if header else shared.get(key)
            pending = asyncio.ensure_future(read)
            self._reads[slot] = pending
            pending.add_done_callback(lambda _: self._reads.pop(slot, None))
        return await asyncio.shield(pending)

    def _keep(self, key: str, entry: Entry, *, partial: bool, trusted: bool) -> None:
        held = self.tier.get(key)
        if held is not None and held.entry.stored_at > entry.stored_at:
            return  # never let an older copy replace a newer one
        generation = self._invalidations.generation if self._invalidations and trusted else -1
        if partial:
            entry = Entry(b"", entry.stored_at, entry.etag, entry.negative)
        self.tier.put(
            key, entry, expires=self._expires(entry), generation=generation, partial=partial
        )

    def _expires(self, entry: Entry) -> float:
        lifetime = self.negative_ttl if entry.negative else self.fresh_ttl + self.stale_ttl
        return entry.stored_at + lifetime

    # -- writing --------------------------------------------------------------------------

    async def put_many(
        self,
        bodies: Mapping[str, bytes],
        *,
        stored_at: float,
        partial: Collection[str] = (),
        lifetime: float | None = None,
        variants: Mapping[str, dict[str, bytes]] | None = None,
        fresh_ttl: float | None = None,
    ) -> dict[str, Entry]:
        """Store `bodies` (with their content codings in `variants`, where built).  They
        live `lifetime` seconds, else their freshness (`fresh_ttl`: these entries' own, as
        for charging events, which readers pass to `get` too; else the cache's) plus the
        stale window.  Keys in `partial` keep only their metadata in the tier."""
        codings = variants or {}
        entries = {
            key: Entry.for_body(body, stored_at, codings.get(key)) for key, body in bodies.items()
        }
        fresh = self.fresh_ttl if fresh_ttl is None else fresh_ttl
        total = fresh + self.stale_ttl if lifetime is None else lifetime
        await self._write(entries, total, partial)
        return entries

    async def put_negative(self, keys: Iterable[str], *, stored_at: float) -> None:
        entry = Entry.missing(stored_at)
        await self._write(dict.fromkeys(keys, entry), self.negative_ttl, ())

    async def _write(
        self, entries: Mapping[str, Entry], ttl: float, partial: Collection[str]
    ) -> None:
        if ttl <= 0 or not entries:
            return
        self._sequence += 1
        generation = self._invalidations.generation if self._invalidations else 0
        for key, entry in entries.items():
            self.tier.put(key, entry, expires=entry.stored_at + ttl, generation=generation)
        if self.shared is None:
            return  # without Redis the tier is the only copy
        try:
            pairs = list(entries.items())
            for chunk in chunks(pairs, lambda pair: pair[1].size):
                await self.shared.set_many([(key, e.encode()) for key, e in chunk], ttl)
        except CacheUnavailable:
            return  # counted by the store; the tier keeps the whole entries meanwhile
        # In Redis now: keys in `partial` keep only their metadata here.
        for key in partial:
            stored = entries.get(key)
            if stored is not None:
                self.tier.put(
                    key,
                    Entry(b"", stored.stored_at, stored.etag, stored.negative),
                    expires=stored.stored_at + ttl,
                    generation=generation,
                    partial=True,
                )
        with contextlib.suppress(CacheUnavailable):
            await self._publish(entries)

    async def _publish(self, keys: Iterable[str]) -> None:
        if self._invalidations is not None:
            await self._invalidations.publish(self.keys.channel, keys)

    # -- purging --------------------------------------------------------------------------

    async def delete(self, keys: Iterable[str]) -> int:
        """Drop entries everywhere; raises CacheUnavailable when Redis did not take it."""
        doomed = list(keys)
        self._sequence += 1
        if self.shared is not None:
            await self.shared.delete(doomed)
            with contextlib.suppress(CacheUnavailable):  # replicas also drop at their TTL
                await self._publish(doomed)
        self.tier.drop(doomed)
        return len(doomed)

    async def purge_all(self) -> int:
        """Drop every cache entry of this account (nothing else: not locks, budget, pause)."""
        return await self.delete_prefix(self.keys.entries_prefix)

    async def delete_prefix(self, prefix: str) -> int:
        """Drop every entry whose key starts with `prefix`, everywhere; raises
        CacheUnavailable when Redis did not take it."""
        self._sequence += 1
        count = self.tier.drop_prefix(prefix)
        if self.shared is not None:
            doomed = await self.shared.keys_with_prefix(prefix)
            await self.shared.delete(doomed)
            with contextlib.suppress(CacheUnavailable):
                await self._publish(["*" + prefix])
            count = len(doomed)
        return count


def _same(a: Entry, b: Entry) -> bool:
    return a.etag == b.etag and a.stored_at == b.stored_at and a.negative == b.negative
