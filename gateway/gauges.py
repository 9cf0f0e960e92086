"""Fleet gauges: facts about each site, computed when a fill stores it (never at scrape
time), exported per site and pruned when the site disappears.

    gateway_site_connectors{site_id}              connectors in the site's fuse tree
    gateway_site_v2g_connectors{site_id}          of those, V2G-capable (discharge capability)
    gateway_site_oversubscription_ratio{site_id}  what the connectors could draw over what the
                                                  top-level fuse allows (see below)

With several accounts each series also carries `account` (an id listed by two accounts is
two sites).  A fleet fill sets every listed site of its account and removes the series of
that account's sites no longer listed; a site fill sets its site, and its 404 removes it.
The fleet fills also set `gateway_sites_cached` and `gateway_connectors_cached`, summed over
the accounts.

Oversubscription ratio: per top-level fuse (a `fuse_tree` root: one grid connection or
feed), the sum of `max_charging_current` (the largest `charging_capability` value) of the
connectors below it, over its `limit`.  One top-level fuse: that ratio.  Several (a site
fed twice): the largest of them, the worst feed, because that fuse trips first however idle
the others are; a sum over all feeds would let an idle feed hide an overloaded one.  A root
without a positive `limit` is left out (its capacity is unknown); a connector without
`charging_capability` adds nothing; no root with a limit: no ratio series for the site.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .metrics import Metrics


@dataclass(frozen=True, slots=True)
class SiteFacts:
    connectors: int
    v2g: int
    ratio: float | None


def site_facts(site: Mapping[str, Any]) -> SiteFacts:
    """The facts of a normalized site (`normalize_site`'s shape).  Iterative: trees may be
    thousands of levels deep."""
    connectors = v2g = 0
    worst: float | None = None
    for root in site["fuse_tree"]:
        demand = 0.0
        pending = [root]
        while pending:
            node = pending.pop()
            for connector in node["parameters"]["connectors"]:
                connectors += 1
                v2g += bool(connector["discharge_capability"])
                charging = [c for c in connector["charging_capability"] if c is not None]
                demand += max(charging) if charging else 0.0
            pending.extend(node["children"])
        limit = root["parameters"]["limit"]
        if isinstance(limit, int | float) and limit > 0:
            ratio = round(demand / limit, 6)
            worst = ratio if worst is None else max(worst, ratio)
    return SiteFacts(connectors, v2g, worst)


class FleetGauges:
    """The per-site gauges of every account of one app (`account` None: one account)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._reported: dict[str | None, set[str]] = {}
        self._totals: dict[str | None, tuple[int, int]] = {}

    def _labels(self, account: str | None, site_id: str) -> tuple[str, ...]:
        return (
            (account, site_id)
            if account is not None and self._metrics.account_label
            else (site_id,)
        )

    def site_stored(self, account: str | None, site_id: str, facts: SiteFacts) -> None:
        metrics, labels = self._metrics, self._labels(account, site_id)
        metrics.site_connectors.labels(*labels).set(facts.connectors)
        metrics.site_v2g_connectors.labels(*labels).set(facts.v2g)
        if facts.ratio is None:
            _remove(metrics.site_oversubscription, labels)
        else:
            metrics.site_oversubscription.labels(*labels).set(facts.ratio)
        self._reported.setdefault(account, set()).add(site_id)

    def site_gone(self, account: str | None, site_id: str) -> None:
        labels = self._labels(account, site_id)
        for gauge in self._gauges():
            _remove(gauge, labels)
        self._reported.get(account, set()).discard(site_id)

    def fleet_stored(
        self, account: str | None, facts: Mapping[str, SiteFacts], connectors: int
    ) -> None:
        """A fleet fill: exactly these sites exist in `account` now."""
        for gone in self._reported.get(account, set()) - facts.keys():
            self.site_gone(account, gone)
        for site_id, site in facts.items():
            self.site_stored(account, site_id, site)
        self._totals[account] = (len(facts), connectors)
        self._metrics.sites_cached.set(sum(sites for sites, _ in self._totals.values()))
        self._metrics.connectors_cached.set(sum(count for _, count in self._totals.values()))

    def _gauges(self) -> tuple[Any, ...]:
        metrics = self._metrics
        return (metrics.site_connectors, metrics.site_v2g_connectors, metrics.site_oversubscription)


def _remove(gauge: Any, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):  # never set (a site without a ratio)
        gauge.remove(*labels)
