"""How one site is assembled: the blueprint (``SiteSpec``), the fuse-tree builder and the
id scheme (``Naming``).

Owns the mechanics behind every fleet in ``data.py``: pure functions of a
``random.Random`` and a spec, so the same rng state always yields the same site. The quirks
the builder places (numeric strings, missing ``order``, missing capabilities...) are listed
in ``data.py``'s docstring, which is where fleets are described.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

Site = dict[str, Any]
Node = dict[str, Any]

# Standard fuse ratings (A); sizes are picked from here so trees look like real installs.
FUSE_RATINGS = (63, 80, 100, 125, 160, 200, 250, 315, 400, 500, 630, 800, 1000, 1250, 1600,
                2000, 2500, 3150, 4000)  # fmt: skip
FIRMWARE = ("1.8.3", "1.9.0", "2.0.1", "2.1.0-rc2")
FALLBACK_STATUSES = ("inactive", "inactive", "inactive", "active", "pending")
TIMEZONES = ("Europe/Berlin", "Europe/Oslo", "America/Chicago", "Europe/Amsterdam",
             "Europe/Vienna", "Europe/Stockholm", "America/New_York",
             "Europe/Copenhagen")  # fmt: skip
PLACE_NAMES = ("Nord", "Südstadt", "Ærø", "Hafen", "Flughafen", "Østbanen", "Lakeside",
               "Zürichsee", "Main Street", "Gare de l'Est")  # fmt: skip
SITE_KINDS = ("Depot", "Parkhaus", "Ladepark", "Fleet Yard", "Office", "Hotel")


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """Blueprint of one site; ``connectors`` is exact, stations = ceil(connectors / per)."""

    name: str
    timezone: str
    main_fuse: int
    connectors: int
    connectors_per_station: int = 1
    sub_fuses: int = 0  # per top-level fuse; 0 = stations (or groups) hang off the main fuse
    group_size: int = 0  # stations per connector group; 0 = no groups
    feeds: int = 1  # number of top-level (main) fuses
    dc: bool = False
    phases: int = 3
    station_amps: int = 32
    v2g_every: int = 0  # every Nth station is V2G-capable; 0 = none
    pv_meter: bool = False
    sub_meters: bool = False
    controller: bool = True
    vendor_meta: bool = False


@dataclass(frozen=True, slots=True)
class Naming:
    """The ids one site's objects get.

    ``site_id`` is the site's own id, ``code`` goes into station, fuse and controller ids
    (``CS-{code}-001``, ``F-{code}-01``, ``lc-{code}``) and ``connector_prefix`` starts every
    connector id (``{connector_prefix}-cs-001-c1``). ``Naming.numbered(3)`` is the demo
    scheme: ``site-0003``, ``CS-0003-001``, ``site-0003-cs-001-c1``.
    """

    site_id: str
    code: str
    connector_prefix: str

    @classmethod
    def numbered(cls, number: int, prefix: str = "site", code_prefix: str = "") -> Naming:
        site_id = f"{prefix}-{number:04d}"
        return cls(site_id, f"{code_prefix}{number:04d}", site_id)


def synthetic_spec(rng: random.Random, number: int, connectors: int) -> SiteSpec:
    per_station = 2 if connectors >= 8 else 1
    stations = math.ceil(connectors / per_station)
    dc = number % 4 == 1
    station_amps = 125 if dc else 32
    # Load-managed installs are oversubscribed: size the main fuse for ~40 % of nameplate.
    main_fuse = rating_at_least(stations * station_amps * 0.4, cap=4000)
    place = PLACE_NAMES[rng.randrange(len(PLACE_NAMES))]
    kind = SITE_KINDS[rng.randrange(len(SITE_KINDS))]
    return SiteSpec(
        name=f"{kind} {place} {number}",
        timezone=TIMEZONES[rng.randrange(len(TIMEZONES))],
        main_fuse=main_fuse,
        connectors=connectors,
        connectors_per_station=per_station,
        sub_fuses=0 if stations <= 8 else min(8, stations // 12 + 1),
        group_size=5 if stations > 20 else 0,
        dc=dc,
        station_amps=station_amps,
        v2g_every=5 if number % 3 == 2 else 0,
        pv_meter=number % 3 == 0,
        controller=number % 50 != 7,
        vendor_meta=number % 10 == 3,
    )


def rating_at_least(amps: float, *, cap: int) -> int:
    return min(next((r for r in FUSE_RATINGS if r >= amps), FUSE_RATINGS[-1]), cap)


def split_evenly(items: list[int], parts: int) -> list[list[int]]:
    """Split into ``parts`` nearly equal consecutive chunks, dropping empty ones."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        chunks.append(items[start:end])
        start = end
    return [chunk for chunk in chunks if chunk]


class _SiteBuilder:
    """Holds the per-site counters and rng while one site's tree is assembled."""

    def __init__(self, rng: random.Random, naming: Naming, spec: SiteSpec) -> None:
        self.rng, self.naming, self.spec = rng, naming, spec
        self.fuse_count = 0
        self.group_count = 0

    def number_value(self, value: float, *, force_string: bool = False) -> float | str:
        """Upstream sometimes sends numbers as numeric strings; imitate that."""
        if force_string or self.rng.random() < 0.05:
            return f"{value:g}"
        return value

    def fuse(self, name: str, limit: int, depth: int, order: int, children: list[Node]) -> Node:
        self.fuse_count += 1
        fuse_id = f"F-{self.naming.code}-{self.fuse_count:02d}"
        params: dict[str, Any] = {
            "name": name, "limit": limit, "inbound_limit": limit, "outbound_limit": limit,
            "order": order, "depth": str(depth), "fuse_id": fuse_id, "additional_comments": "",
        }  # fmt: skip
        return {"type": "fuse", "parameters": params, "children": children}

    def group(self, stations: list[int], depth: int, order: int, fuse_id: str) -> Node:
        self.group_count += 1
        name = f"Group {self.group_count}"
        params: dict[str, Any] = {
            "name": name,
            "order": order,
            "depth": str(depth),
            "fuse_id": fuse_id,
        }
        if self.group_count > 1:  # quirk: the first group of a site has no limit
            demand = len(stations) * self.spec.station_amps * 0.6
            params["limit"] = rating_at_least(demand, cap=self.spec.main_fuse)
        children = [self.station(n, depth + 1, i, fuse_id) for i, n in enumerate(stations, 1)]
        return {"type": "connector group", "parameters": params, "children": children}

    def station(self, station: int, depth: int, order: int, fuse_id: str) -> Node:
        spec, rng = self.spec, self.rng
        v2g = spec.v2g_every > 0 and station % spec.v2g_every == 0
        amps = spec.station_amps
        status = FALLBACK_STATUSES[rng.randrange(len(FALLBACK_STATUSES))]
        params: dict[str, Any] = {
            "name": f"CS {station:03d}",
            "limit": self.number_value(amps, force_string=station == 1),
            "inbound_limit": self.number_value(amps),
            "outbound_limit": self.number_value(amps if v2g else 0),
            "fallback": self.number_value(32 if spec.dc else 6),
            "fallback_status": status,
            "order": order,
            "depth": str(depth),
            "fuse_id": fuse_id,
            "firmware_version": FIRMWARE[rng.randrange(len(FIRMWARE))],
            "additional_comments": "V2G pilot" if v2g else "",
            "connectors": self.connectors(station, v2g),
        }
        if status == "pending":
            params["pending_fallback_value"] = 16 if spec.dc else 10
        if station % 7 == 0:  # quirk: a node without order
            del params["order"]
        return {"type": "charging station", "parameters": params, "children": []}

    def connectors(self, station: int, v2g: bool) -> list[dict[str, Any]]:
        spec = self.spec
        first = (station - 1) * spec.connectors_per_station
        count = min(spec.connectors_per_station, spec.connectors - first)
        capability = [spec.station_amps] * spec.phases
        result = []
        for k in range(1, count + 1):
            connector: dict[str, Any] = {
                "id": f"{self.naming.connector_prefix}-cs-{station:03d}-c{k}",
                "name": f"CS {station:03d} / {k}",
                "connector_id": str(k),
                "charging_station_id": f"CS-{self.naming.code}-{station:03d}",
                "priority": self.rng.choice((0, 0, 1, 2)),
                "charging_capability": list(capability),
            }
            if v2g:
                connector["discharge_capability"] = [amps // 2 for amps in capability]
            if k == 1 and station % 11 == 0:  # quirk: capability missing
                del connector["charging_capability"]
            result.append(connector)
        return result

    def meter(self, *, producer: bool, max_current: int) -> dict[str, Any]:
        big = max_current >= 400
        return {
            "is_producer": producer,
            "producer_name": "PV Carport" if producer else "",
            "producer_current": f"{self.rng.randrange(40, 200) + 0.5:g}" if producer else 0,
            "is_consumer": True,
            "consumer_name": "Building load" if producer else "Chargers",
            "max_possible_current": max_current,
            "fallback_value": max_current // 4,
            "primary_transformer_ratio": 2000 if big else 1,
            "secondary_transformer_ratio": 5 if big else 1,
        }

    def branch(self, stations: list[int], depth: int, fuse_id: str) -> list[Node]:
        """Stations directly, or wrapped in connector groups if the spec asks for them."""
        if not self.spec.group_size:
            return [self.station(n, depth, i, fuse_id) for i, n in enumerate(stations, 1)]
        groups = [
            stations[i : i + self.spec.group_size]
            for i in range(0, len(stations), self.spec.group_size)
        ]
        return [self.group(g, depth, i, fuse_id) for i, g in enumerate(groups, 1)]

    def shuffle(self, children: list[Node], *, force: bool = False) -> None:
        if len(children) < 2:
            return
        if force:  # rotation guarantees the delivery order differs from ``order``
            children.append(children.pop(0))
        elif self.rng.random() < 0.5:
            self.rng.shuffle(children)

    def tree(self) -> list[Node]:
        spec = self.spec
        stations = list(range(1, math.ceil(spec.connectors / spec.connectors_per_station) + 1))
        roots = []
        for feed_index, feed in enumerate(split_evenly(stations, spec.feeds), start=1):
            main = self.fuse(f"Main fuse {feed_index}", spec.main_fuse, 1, feed_index, [])
            main_id = main["parameters"]["fuse_id"]
            if spec.sub_fuses:
                for sub_index, chunk in enumerate(split_evenly(feed, spec.sub_fuses), start=1):
                    limit = rating_at_least(
                        len(chunk) * spec.station_amps * 0.5, cap=spec.main_fuse
                    )
                    sub = self.fuse(f"Sub-fuse {feed_index}.{sub_index}", limit, 2, sub_index, [])
                    sub["children"] = self.branch(chunk, 3, sub["parameters"]["fuse_id"])
                    if spec.sub_meters:
                        sub["parameters"]["meter"] = self.meter(producer=False, max_current=limit)
                    self.shuffle(sub["children"])
                    main["children"].append(sub)
            else:
                main["children"] = self.branch(feed, 2, main_id)
            if spec.pv_meter:
                main["parameters"]["meter"] = self.meter(producer=True, max_current=spec.main_fuse)
            self.shuffle(main["children"], force=feed_index == 1)
            roots.append(main)
        return roots


def build_site(
    rng: random.Random, number: int, spec: SiteSpec, naming: Naming | None = None
) -> Site:
    """One site from its spec; ``number`` drives the placed quirks, ``naming`` its ids."""
    naming = naming or Naming.numbered(number)
    builder = _SiteBuilder(rng, naming, spec)
    fuse_tree = builder.tree()
    if number == 1:  # quirk: the smallest site's main fuse limit is a numeric string
        fuse_tree[0]["parameters"]["limit"] = str(spec.main_fuse)
    site: Site = {"id": naming.site_id, "name": spec.name, "timezone": spec.timezone}
    if spec.controller:
        site["local_controller"] = {
            "id": f"lc-{naming.code}",
            "name": f"Controller {spec.name}",
            "serial_no": f"SN{rng.randrange(10**7, 10**8)}",
            "device_id": f"dev-{rng.getrandbits(48):012x}",
        }
    site["fuse_tree"] = fuse_tree
    if spec.vendor_meta:
        site["vendor_meta"] = {"tenant": f"t-{naming.code}", "beta_features": ["dlm2"]}
    return site
