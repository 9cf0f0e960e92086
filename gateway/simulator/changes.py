"""Sites changing over time: the mutations the simulator applies to the fleet it serves.

Owns what each kind of change does to the raw site dicts, as pure functions of the fleet
and a ``random.Random`` (no clock, no HTTP): the same fleet, kind and rng state give the same
change. A changed site is replaced by a modified deep copy, never edited in place, so a fleet
list a caller passed in keeps its original content.

=====================  ======================================================================
kind                   what changes (the answer names ``kind``, ``site_id`` and the details)
=====================  ======================================================================
``limit``              one node's ``limit`` (a fuse, group or station) to a neighbouring rating
``connector_added``    a new connector on one charging station (``connector_id``)
``connector_removed``  one connector taken off its station (``connector_id``)
``reorder``            one sibling list delivered in another order, ``order`` values untouched:
                       the normalized site is unchanged (siblings with equal or missing
                       ``order`` keep their relative order, since normalizing sorts stably)
``site_created``       a new synthetic site appended to the fleet (``created-0001``...)
``site_deleted``       one site removed
``renamed``            one site's ``name``
=====================  ======================================================================
"""

from __future__ import annotations

import copy
import itertools
from random import Random
from typing import Any

from gateway.simulator.data import Node, Site, iter_connectors, iter_nodes
from gateway.simulator.sitebuilder import (
    FUSE_RATINGS,
    PLACE_NAMES,
    SITE_KINDS,
    Naming,
    build_site,
    synthetic_spec,
)

KINDS = (
    "limit",
    "connector_added",
    "connector_removed",
    "reorder",
    "site_created",
    "site_deleted",
    "renamed",
)
RATINGS = (6, 10, 16, 20, 25, 32, 40, 50, *FUSE_RATINGS)
Change = dict[str, Any]


class UnknownKind(ValueError):
    """Not one of ``KINDS``."""


class UnknownSite(LookupError):
    """The named site is not in the fleet."""


class NothingToChange(LookupError):
    """The kind has nothing to act on (no site, no connector, no reorderable siblings)."""


def _number(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _limited_nodes(site: Site) -> list[Node]:
    return [node for node in iter_nodes(site) if _number(node["parameters"].get("limit"))]


def _stations(site: Site) -> list[Node]:
    return [node for node in iter_nodes(site) if node.get("type") == "charging station"]


def _order_key(node: Node) -> float | None:
    return _number(node.get("parameters", {}).get("order"))


def _sibling_lists(site: Site) -> list[list[Node]]:
    """Sibling lists whose delivery order can change without changing the normalized site."""
    lists = [site.get("fuse_tree", []), *(node.get("children", []) for node in iter_nodes(site))]
    return [nodes for nodes in lists if len({_order_key(node) for node in nodes}) > 1]


def _applies(kind: str, site: Site) -> bool:
    if kind == "limit":
        return bool(_limited_nodes(site))
    if kind == "connector_added":
        return bool(_stations(site))
    if kind == "connector_removed":
        return next(iter_connectors(site), None) is not None
    if kind == "reorder":
        return bool(_sibling_lists(site))
    return True


def applicable_kinds(sites: dict[str, Site]) -> list[str]:
    """The kinds that have something to act on in this fleet, in ``KINDS`` order."""
    return [
        kind
        for kind in KINDS
        if kind == "site_created" or any(_applies(kind, site) for site in sites.values())
    ]


def apply_change(
    sites: dict[str, Site], kind: str | None, rng: Random, *, site_id: str | None = None
) -> Change:
    """Apply one change to ``sites`` and describe it; ``kind`` None picks an applicable one.

    ``site_id`` names the site to change (for ``site_created``: the new site's id).
    """
    if kind is None:
        kind = rng.choice(applicable_kinds(sites))
    if kind not in KINDS:
        raise UnknownKind(f"unknown change kind {kind!r}; known: {', '.join(KINDS)}")
    if kind == "site_created":
        return _create(sites, rng, site_id)
    if site_id is None:
        candidates = [sid for sid, site in sites.items() if _applies(kind, site)]
        if not candidates:
            raise NothingToChange(f"no site to apply {kind!r} to")
        site_id = rng.choice(candidates)
    elif site_id not in sites:
        raise UnknownSite(f"no site {site_id!r}")
    elif not _applies(kind, sites[site_id]):
        raise NothingToChange(f"site {site_id!r} has nothing to apply {kind!r} to")
    if kind == "site_deleted":
        return {"kind": kind, "site_id": site_id, "name": sites.pop(site_id).get("name")}
    site = sites[site_id] = copy.deepcopy(sites[site_id])
    details = _CHANGERS[kind](site, rng, sites)
    return {"kind": kind, "site_id": site_id, **details}


def _limit(site: Site, rng: Random, _sites: dict[str, Site]) -> dict[str, Any]:
    params = rng.choice(_limited_nodes(site))["parameters"]
    before = params["limit"]
    amps = _number(before) or 0
    below = [r for r in RATINGS if r < amps][-1:]
    above = [r for r in RATINGS if r > amps][:1]
    params["limit"] = after = rng.choice(below + above)
    return {"node": params.get("name"), "fuse_id": params.get("fuse_id"),
            "before": before, "after": after}  # fmt: skip


def _connector_added(site: Site, rng: Random, sites: dict[str, Site]) -> dict[str, Any]:
    station = rng.choice(_stations(site))
    params = station["parameters"]
    connectors = params.setdefault("connectors", [])
    taken = {c["id"] for other in sites.values() for c in iter_connectors(other)}
    connector_id = next(
        cid for n in itertools.count(1) if (cid := f"{site['id']}-added-c{n}") not in taken
    )
    model = connectors[0] if connectors else {}
    connectors.append({
        "id": connector_id,
        "name": f"{params.get('name', 'CS')} / {len(connectors) + 1}",
        "connector_id": str(len(connectors) + 1),
        "charging_station_id": model.get("charging_station_id", params.get("name")),
        "priority": 0,
        "charging_capability": list(model.get("charging_capability") or [32, 32, 32]),
    })  # fmt: skip
    return {"connector_id": connector_id, "station": params.get("name")}


def _connector_removed(site: Site, rng: Random, _sites: dict[str, Site]) -> dict[str, Any]:
    station = rng.choice([node for node in _stations(site) if node["parameters"].get("connectors")])
    connectors = station["parameters"]["connectors"]
    removed = connectors.pop(rng.randrange(len(connectors)))
    return {"connector_id": removed["id"], "station": station["parameters"].get("name")}


def _reorder(site: Site, rng: Random, _sites: dict[str, Site]) -> dict[str, Any]:
    siblings = rng.choice(_sibling_lists(site))
    before = list(siblings)
    shuffled = list(siblings)
    rng.shuffle(shuffled)
    # Equal keys (missing order included) must keep their relative order: hand each key's
    # slots in the shuffled layout back to that key's nodes in their original order.
    queues: dict[float | None, list[Node]] = {}
    for node in before:
        queues.setdefault(_order_key(node), []).append(node)
    arranged = [queues[_order_key(node)].pop(0) for node in shuffled]
    if arranged == before:  # swap the first neighbours with different keys
        index = next(
            i for i in range(len(before) - 1) if _order_key(before[i]) != _order_key(before[i + 1])
        )
        arranged[index], arranged[index + 1] = arranged[index + 1], arranged[index]
    siblings[:] = arranged
    return {"before": [_name(node) for node in before], "after": [_name(node) for node in arranged]}


def _name(node: Node) -> Any:
    return node.get("parameters", {}).get("name")


def _renamed(site: Site, rng: Random, _sites: dict[str, Site]) -> dict[str, Any]:
    before = site.get("name")
    after = before
    while after == before:
        after = f"{rng.choice(SITE_KINDS)} {rng.choice(PLACE_NAMES)} {rng.randrange(1, 1000)}"
    site["name"] = after
    return {"before": before, "after": after}


def _create(sites: dict[str, Site], rng: Random, site_id: str | None) -> Change:
    number = next(n for n in itertools.count(1) if f"created-{n:04d}" not in sites)
    if site_id is None:
        site_id = f"created-{number:04d}"
    elif site_id in sites:
        raise NothingToChange(f"site {site_id!r} already exists")
    spec = synthetic_spec(rng, number + 1, rng.randrange(2, 13))
    prefix = f"created-{number:04d}"
    taken = {c["id"] for other in sites.values() for c in iter_connectors(other)}
    while any(cid.startswith(f"{prefix}-cs-") for cid in taken):
        prefix += "x"
    site = build_site(rng, number + 1, spec, Naming(site_id, f"NEW-{number:04d}", prefix))
    sites[site_id] = site
    connectors = sum(1 for _ in iter_connectors(site))
    return {"kind": "site_created", "site_id": site_id, "name": site["name"],
            "connectors": connectors}  # fmt: skip


_CHANGERS = {
    "limit": _limit,
    "connector_added": _connector_added,
    "connector_removed": _connector_removed,
    "reorder": _reorder,
    "renamed": _renamed,
}
