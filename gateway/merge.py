"""Answers merged across accounts: the site list, connector pages, and what the cache did.

Pure functions over what the accounts' services served (bodies, decoded fleets, outcomes);
no I/O, no clock.  The fleet-wide facade (`fleetwide.py`) decides when to call them: once
per combination of the accounts' ETags, never per request.

Order: sites by (id, account name); connectors by (site id, account name, then the
account's own position key: connector id, occurrence), so an id two accounts share shows
both, one after the other, and a cursor names the account of the last connector it
returned (`Query.after_account`).

Outcome of a merged answer: the worst of its parts (a fetch over a stale part over a
hit; among equals the least freshness left).  A merged miss is `collapsed` only when every
part that missed joined another request's fetch.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from .cursors import Cursors
from .engine import Outcome
from .fleet import FleetIndex, PositionKey, Query
from .jsonutil import dumps

_RANK = {"hit": 0, "negative_hit": 0, "stale": 1, "miss": 2}


def worst(outcomes: Sequence[Outcome]) -> Outcome:
    """The outcome of an answer made of several parts (at least one)."""
    rank = max(_RANK[outcome.result] for outcome in outcomes)
    same = [outcome for outcome in outcomes if _RANK[outcome.result] == rank]
    if rank == _RANK["miss"]:
        return Outcome(
            "miss",
            collapsed=all(outcome.collapsed for outcome in same),
            stored=any(outcome.stored for outcome in same),
        )
    return min(same, key=lambda outcome: outcome.ttl)


def merge_site_lists(parts: Sequence[tuple[str, bytes]], unavailable: Sequence[str]) -> bytes:
    """One `{"data": [...]}` from the accounts' list bodies, sorted by (id, account);
    `unavailable_accounts` when some account had nothing to give."""
    sites: list[tuple[tuple[str, str], Any]] = []
    for account, body in parts:
        sites.extend(((str(site.get("id")), account), site) for site in orjson.loads(body)["data"])
    sites.sort(key=lambda item: item[0])
    document: dict[str, Any] = {"data": [site for _, site in sites]}
    if unavailable:
        document["unavailable_accounts"] = list(unavailable)
    return dumps(document)


def _start(index: FleetIndex, after: PositionKey, after_account: str) -> int:
    """The first position of `index` past the cursor, in the merged order."""
    account = index.account or ""
    if account < after_account:
        return index.start_for(after[0], after_site=True)
    if account > after_account:
        return index.start_for(after[0], after_site=False)
    return bisect.bisect_right(index.keys, after)


def _stream(index: FleetIndex, query: Query) -> Iterator[tuple[tuple[Any, ...], int, int]]:
    """(merge key, position) of the index's matches past the cursor."""
    start = 0
    if query.after is not None and query.after_account is not None:
        start = _start(index, query.after, query.after_account)
    account, keys = index.account or "", index.keys
    for position in index.matching(query, start):
        site_id, rank, connector_id, occurrence = keys[position]
        yield (site_id, account, rank, connector_id, occurrence), id(index), position


def merged_page(
    indexes: Sequence[FleetIndex],
    query: Query,
    cursors: Cursors,
    unavailable: Sequence[str],
) -> bytes:
    """One `/connectors` page over every account's fleet, with its `next_cursor`."""
    by_id = {id(index): index for index in indexes}
    streams = [_stream(index, query) for index in indexes]
    chosen: list[tuple[FleetIndex, int]] = []
    cursor = None
    for _, index_id, position in heapq.merge(*streams):
        index = by_id[index_id]
        if len(chosen) == query.limit:
            last_index, last = chosen[-1]
            cursor = cursors.encode(query, last_index.keys[last], last_index.account or "")
            break
        chosen.append((index, position))
    parts = [
        b'{"data":[',
        b",".join(index.bodies[position] for index, position in chosen),
        b'],"next_cursor":',
        orjson.dumps(cursor),
    ]
    if unavailable:
        parts += [b',"unavailable_accounts":', orjson.dumps(list(unavailable))]
    parts.append(b"}")
    return b"".join(parts)
