"""The Redis key layout: one place, so fills, purge, locks and the shield can't disagree.

Every key of an account lives under its namespace (`GATEWAY_NAMESPACE`, or derived from the
account's base URL and API key), so gateways of different accounts sharing one Redis never
see each other's entries, locks, rate budget, pauses or invalidations:

    cpgw:v2:<ns>:e:sites                        the fleet list (cache entry)
    cpgw:v2:<ns>:e:known                        the known site ids (cache entry)
    cpgw:v2:<ns>:e:fleet                        the fleet's connectors, for paging (cache entry)
    cpgw:v2:<ns>:e:site:{<id>}                  one site          (cache entries; the hash
    cpgw:v2:<ns>:e:site:{<id>}:connectors       its connectors     tag keeps a site's entries
    cpgw:v2:<ns>:e:site:{<id>}:nodes            its fuse tree      in one Cluster slot)
    cpgw:v2:<ns>:e:events:{<id>}:<query hash>   a charging-events answer (cache entry)
    cpgw:v2:<ns>:lock:<fill>                    a cross-replica fetch lock
    cpgw:v2:{<ns>}:bucket, cpgw:v2:{<ns>}:pause the shared rate budget and Retry-After pause
                                                (one slot, for their Lua script)
    cpgw:v2:{<ns>:changes}:stream / :etags      the change feed: events, each site's recorded
    cpgw:v2:{<ns>:changes}:ages / :floor        ETag and fetch time, its floor (one slot,
                                                for its Lua scripts)
    cpgw:v2:<ns>:invalidate                     pub/sub channel: entries replaced or purged
    cpgw:v2:<ns>:lease:refresher, :cursor-key   the refresher lease, the shared cursor key

Only keys under `entries_prefix` are cache entries; purge removes those and nothing else.
Ids are percent-encoded (no `{`, `}` or `:` survive), so no id can forge another key or
another hash tag.  A format change bumps `FORMAT`: new code never reads old bytes.
"""

from __future__ import annotations

from urllib.parse import quote

FORMAT = "v2"


def _id(value: str) -> str:
    quoted = _QUOTED.get(value)
    if quoted is None:
        if len(_QUOTED) >= _QUOTED_MAX:
            _QUOTED.clear()  # ids are few (sites, connectors); a flood only costs recomputing
        quoted = _QUOTED[value] = quote(value, safe="")
    return quoted


# Percent-encoding an id is pure and on every request's path: remember recent ones.
_QUOTED: dict[str, str] = {}
_QUOTED_MAX = 100_000


class Keys:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        base = f"cpgw:{FORMAT}:{namespace}:"
        self.entries_prefix = base + "e:"
        self._lock_prefix = base + "lock:"
        self.channel = base + "invalidate"
        self.refresher_lease = base + "lease:refresher"
        self.cursor_key = base + "cursor-key"
        tagged = f"cpgw:{FORMAT}:{{{namespace}}}:"
        self.bucket = tagged + "bucket"
        self.pause = tagged + "pause"
        changes = f"cpgw:{FORMAT}:{{{namespace}:changes}}:"
        self.changes_stream = changes + "stream"
        self.changes_etags = changes + "etags"
        self.changes_ages = changes + "ages"
        self.changes_floor = changes + "floor"

    def sites(self) -> str:
        return self.entries_prefix + "sites"

    def known(self) -> str:
        return self.entries_prefix + "known"

    def fleet(self) -> str:
        return self.entries_prefix + "fleet"

    def site(self, site_id: str) -> str:
        return f"{self.entries_prefix}site:{{{_id(site_id)}}}"

    def site_connectors(self, site_id: str) -> str:
        return self.site(site_id) + ":connectors"

    def site_nodes(self, site_id: str) -> str:
        return self.site(site_id) + ":nodes"

    def site_family(self, site_id: str) -> list[str]:
        return [self.site(site_id), self.site_connectors(site_id), self.site_nodes(site_id)]

    def site_events(self, site_id: str) -> str:
        """The prefix of every charging-events entry of one site."""
        return f"{self.entries_prefix}events:{{{_id(site_id)}}}:"

    def events(self, site_id: str, query_hash: str) -> str:
        return self.site_events(site_id) + query_hash

    def lock(self, fill: str) -> str:
        return self._lock_prefix + _id(fill)
