"""Change detection where fills store sites: the one hook between the cache and the feed.

Every fill that stores sites (a site fill, a fleet fill; whatever caused it: a client miss,
a refresh-ahead, the refresher) calls it in two steps around its cache write:

    prepare(stored)   before the write: read each site's recorded ETag from the change log;
                      for a site whose new ETag differs, read the previous body from the
                      cache (it is the recorded content only if its ETag is the recorded
                      one) and compute the structural diff (`diff.py`)
    write             the fill writes the cache as before
    commit(pending)   after the write: one compare-and-append on the change log, which
                      appends the events that are still news (another replica may have
                      recorded the same content meanwhile: then nothing is appended)

A site the upstream answers 404 for is `deleted` only while the current fleet list does not
hold it either: a site missing from the list is confirmed gone by a 404 on its own fetch, and
a 404 for a site the list still shows is a disagreement to look at again, not a deletion.

The change log failing (Redis down) never fails a fill: the fill stores its entries, the
log line says what was not recorded, and the next fill of those sites records the change
(its diff unknown, since the cache then holds the new content already).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from .cache import Cache
from .changelog import ChangeLog, Record
from .diff import diff_sites
from .errors import CacheUnavailable
from .jsonutil import dumps, loads
from .metrics import Metrics

log = logging.getLogger("gateway.changes")
DIFFS_IN_THREAD = 8  # more changed sites than this in one fill: diff them off the event loop

# site id -> (the stored body's ETag, the body, the normalized site when the fill holds it)
Stored = Mapping[str, tuple[str, bytes, dict[str, Any] | None]]


@dataclass(slots=True)
class Pending:
    records: list[Record]
    baseline: bool  # a fleet list: sets the baseline when the log has none
    vanished: list[str] = field(default_factory=list)  # recorded, but no longer listed


class ChangeRecorder:
    def __init__(
        self,
        log: ChangeLog,
        cache: Cache,
        metrics: Metrics,
        *,
        account: str | None = None,
        on_vanished: Callable[[list[str]], None] = lambda site_ids: None,
    ) -> None:
        self.log = log
        self.cache = cache
        self._keys = cache.keys
        self._metrics = metrics
        self._account = account
        self.on_vanished = on_vanished

    async def prepare(self, stored: Stored, stored_at: float, *, fleet: bool) -> Pending | None:
        """What `commit` will record for these sites (None: the log is unreachable)."""
        try:
            recorded = await self.log.recorded(None if fleet else list(stored))
        except CacheUnavailable as error:
            log.warning("changes not recorded", extra={"operation": error.operation})
            return None
        expected = recorded.etags
        diffs: dict[str, bytes] = {}
        if recorded.baseline:
            changed = [
                (site_id, expected[site_id], body, site)
                for site_id, (etag, body, site) in stored.items()
                if site_id in expected and expected[site_id] != etag
            ]
            diffs = await self._diffs(changed)
        records = [
            self._record(site_id, expected.get(site_id), etag, stored_at, diffs.get(site_id))
            for site_id, (etag, _, _) in stored.items()
        ]
        vanished = sorted(expected.keys() - stored.keys()) if fleet else []
        return Pending(records, baseline=fleet, vanished=vanished)

    async def commit(self, pending: Pending | None) -> None:
        if pending is None:
            return
        try:
            appended = await self.log.record(pending.records, baseline=pending.baseline)
        except CacheUnavailable as error:
            log.warning("changes not recorded", extra={"operation": error.operation})
            return
        for _, kind in appended:
            self._metrics.changes.labels(kind).inc()
        if pending.vanished:
            self.on_vanished(pending.vanished)

    async def deleted(self, site_id: str, stored_at: float) -> None:
        """The upstream answered 404 for `site_id`: record its deletion unless it is listed."""
        known = await self.cache.get(self._keys.known(), from_shared=True)
        if known is not None and not known.entry.negative:
            listed = orjson.loads(known.entry.body)
            if site_id in listed:
                return
        pending = Pending([self._record(site_id, None, None, stored_at, None)], baseline=False)
        await self.commit(pending)

    def _record(
        self,
        site_id: str,
        expected: str | None,
        etag: str | None,
        stored_at: float,
        changes: bytes | None,
    ) -> Record:
        prefix = b'{"site_id":' + orjson.dumps(site_id)
        if self._account is not None:
            prefix += b',"account":' + orjson.dumps(self._account)
        at = datetime.fromtimestamp(stored_at, UTC).isoformat(timespec="milliseconds")
        return Record(
            site_id,
            expected,
            etag,
            stored_at,
            prefix,
            orjson.dumps(at.replace("+00:00", "Z")),
            changes,
        )

    async def _diffs(
        self, changed: list[tuple[str, str, bytes, dict[str, Any] | None]]
    ) -> dict[str, bytes]:
        """The changes of each changed site whose previous content the cache still holds."""
        pairs: list[tuple[str, bytes, bytes, dict[str, Any] | None]] = []
        for site_id, expected, body, site in changed:
            previous = await self._previous(site_id, expected)
            if previous is not None:
                pairs.append((site_id, previous, body, site))
        if len(pairs) > DIFFS_IN_THREAD:
            return await asyncio.to_thread(_diff_all, pairs)
        return _diff_all(pairs)

    async def _previous(self, site_id: str, expected: str) -> bytes | None:
        """The body of the recorded content, if the cache still holds it."""
        key = self._keys.site(site_id)
        for from_shared in (False, True):
            lookup = await self.cache.get(key, from_shared=from_shared, keep=False)
            if lookup is not None and lookup.entry.etag == expected:
                return lookup.entry.body
            if self.cache.shared is None:
                break
        return None


def _diff_all(pairs: list[tuple[str, bytes, bytes, dict[str, Any] | None]]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for site_id, previous, body, site in pairs:
        try:
            diff = diff_sites(loads(previous), site if site is not None else loads(body))
        except ValueError:  # not JSON: unknown changes (the event says `truncated`)
            continue
        found[site_id] = dumps(diff.changes) + (b',"truncated":true' if diff.truncated else b"")
    return found
