"""Seeded, deterministic fleet data in ChargePilot's raw upstream shape, quirks included.

Owns the *content* the simulator serves: plain dicts exactly as the upstream would send
them, built by pure functions from a ``random.Random(seed)`` (no global state), so two
calls with the same seed return equal data. How a site is assembled lives in
``sitebuilder.py``.

Demo fleet (``demo_fleet()``), 12 sites, 398 connectors, in this order:

==========  ==========================  =================  ======  ==========  ================
id          name                        timezone           main A  connectors  notes
==========  ==========================  =================  ======  ==========  ================
site-0001   Parkhaus Am Markt           Europe/Berlin      63      4           4 stations x 1
site-0002   Bus-Depot Südstadt          Europe/Berlin      4000    120         DC, PV meter
site-0003   Ladepark Ærø                Europe/Copenhagen  250     16          V2G
site-0004   Oslo Havn P-hus             Europe/Oslo        400     24
site-0005   Chicago Fleet Yard          America/Chicago    1600    40          DC, no controller
site-0006   Hotel Seeblick              Europe/Zurich      100     6
site-0007   Supermarkt Lindenplatz      Europe/Berlin      160     8           PV meter
site-0008   Office Campus Kista         Europe/Stockholm   630     30          V2G
site-0009   Logistics Hub Rotterdam     Europe/Amsterdam   1250    72          two top-level fuses
site-0010   Ferry Terminal Bergen       Europe/Oslo        800     20          DC, V2G, no ctrl
site-0011   Residential Garage Austin   America/Chicago    200     10          single phase
site-0012   Betriebshof Wien-Simmering  Europe/Vienna      1250    48          V2G
==========  ==========================  =================  ======  ==========  ================

Shape: ``fuse_tree`` holds the main fuse(s) (``depth`` "1"); below them optional sub-fuses,
optional ``"connector group"`` nodes, then ``"charging station"`` nodes whose
``parameters.connectors`` hold the connectors. Only stations carry ``connectors``; fuses and
groups have no ``connectors`` key at all. Ids: connector ``site-0003-cs-012-c1`` (unique
across any fleet built here), station ``CS-0003-012``, fuse ``F-0003-02``, group ``G-0003-01``.

Quirks, placed deterministically (independent of the seed):
- ``depth`` is always a string; node type ``"charging station"`` has a space.
- Numeric strings: site-0001's main fuse ``limit`` is ``"63"``; station 1 of every site has
  its ``limit`` as a string (``"32"``); every PV meter's ``producer_current`` is a decimal
  string (``"63.5"``-like); a seeded ~5 % of other station numbers are strings too.
- Station numbers divisible by 7 lack ``order``; connector 1 of stations divisible by 11
  lacks ``charging_capability``; only V2G connectors have ``discharge_capability``.
- The first connector group of a site has no ``limit``.
- The first main fuse's children are never in ``order``; other siblings are shuffled by seed.
- Sites 0002 and 0008 carry an unknown ``vendor_meta`` object; 0005 and 0010 have no
  ``local_controller``. Meters sit on PV sites' main fuses and on site-0002's sub-fuses.

Use ``iter_nodes``/``iter_connectors`` to compute expectations from the data itself.

Other fleets:

=================  ====================================================================
fleet              sites
=================  ====================================================================
``build_fleet``    ``n`` synthetic sites ``site-0001``... with exactly ``k`` connectors
``eu_fleet``       ``eu-site-0001``..``eu-site-0005`` (Europe/*), then ``shared-site-0001``
``us_fleet``       ``us-site-0001``..``us-site-0004`` (America/*), then ``shared-site-0001``
``odd_id_fleet``   one site per printable ASCII character (``" "``..``"~"``), then
                   ``ODD_MULTI_CHAR_IDS`` (dot segments, ``/``, ``%``, ``?``, ``#``,
                   non-ASCII, 200 characters...)
=================  ====================================================================

EU and US share exactly one site id, ``shared-site-0001``, with different content in each
(EU: "Shared Depot (EU view)", 6 connectors; US: "Shared Depot (US view)", 8 connectors), for
account-conflict tests; every other id (sites, connectors, stations, fuses) is disjoint:
EU connectors are ``eu-site-0001-cs-001-c1``/``eu-shared-site-0001-cs-...``, stations
``CS-EU-0001-001``; US likewise with ``us``/``US``. An odd-id site's connectors start
with its id (``"a/b-cs-001-c1"``), so connector ids are odd too.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from gateway.simulator.sitebuilder import (
    Naming,
    Node,
    Site,
    SiteSpec,
    build_site,
    synthetic_spec,
)

__all__ = [
    "DEMO_SPECS",
    "ODD_MULTI_CHAR_IDS",
    "Node",
    "Site",
    "build_fleet",
    "demo_fleet",
    "eu_fleet",
    "iter_connectors",
    "iter_nodes",
    "odd_id_fleet",
    "us_fleet",
]

DEMO_SPECS: tuple[SiteSpec, ...] = (
    SiteSpec("Parkhaus Am Markt", "Europe/Berlin", 63, 4),
    SiteSpec("Bus-Depot Südstadt", "Europe/Berlin", 4000, 120, 2, sub_fuses=4, group_size=5,
             dc=True, station_amps=200, pv_meter=True, sub_meters=True, vendor_meta=True),
    SiteSpec("Ladepark Ærø", "Europe/Copenhagen", 250, 16, 2, sub_fuses=2, v2g_every=2),
    SiteSpec("Oslo Havn P-hus", "Europe/Oslo", 400, 24, 2, sub_fuses=2),
    SiteSpec("Chicago Fleet Yard", "America/Chicago", 1600, 40, 2, sub_fuses=2, group_size=5,
             dc=True, station_amps=125, controller=False),
    SiteSpec("Hotel Seeblick", "Europe/Zurich", 100, 6, station_amps=16),
    SiteSpec("Supermarkt Lindenplatz", "Europe/Berlin", 160, 8, 2, pv_meter=True),
    SiteSpec("Office Campus Kista", "Europe/Stockholm", 630, 30, sub_fuses=3, v2g_every=5,
             vendor_meta=True),
    SiteSpec("Logistics Hub Rotterdam", "Europe/Amsterdam", 1250, 72, 2, sub_fuses=2,
             group_size=6, feeds=2),
    SiteSpec("Ferry Terminal Bergen", "Europe/Oslo", 800, 20, 2, dc=True, station_amps=125,
             v2g_every=3, controller=False),
    SiteSpec("Residential Garage Austin", "America/Chicago", 200, 10, phases=1, station_amps=48),
    SiteSpec("Betriebshof Wien-Simmering", "Europe/Vienna", 1250, 48, 2, sub_fuses=2,
             group_size=4, v2g_every=4),
)  # fmt: skip


EU_SPECS: tuple[SiteSpec, ...] = (
    SiteSpec("Parkhaus Hauptbahnhof", "Europe/Berlin", 125, 6),
    SiteSpec("Depot Nord", "Europe/Oslo", 400, 12, 2, sub_fuses=2, dc=True, station_amps=125),
    SiteSpec("Ladepark Ærø Havn", "Europe/Copenhagen", 250, 8, 2, v2g_every=2),
    SiteSpec("Office Kista Gård", "Europe/Stockholm", 160, 10, pv_meter=True),
    SiteSpec("Hotel Zürichsee", "Europe/Zurich", 100, 4, station_amps=16),
)
EU_SHARED_SPEC = SiteSpec("Shared Depot (EU view)", "Europe/Amsterdam", 200, 6)
US_SPECS: tuple[SiteSpec, ...] = (
    SiteSpec("Chicago Fleet Yard North", "America/Chicago", 800, 16, 2, dc=True,
             station_amps=125, controller=False),
    SiteSpec("Austin Residential Garage", "America/Chicago", 200, 6, phases=1, station_amps=48),
    SiteSpec("Brooklyn Bus Depot", "America/New_York", 2000, 24, 2, sub_fuses=2, group_size=4),
    SiteSpec("Seattle Office Park", "America/Los_Angeles", 400, 10, v2g_every=3),
)  # fmt: skip
US_SHARED_SPEC = SiteSpec("Shared Depot (US view)", "America/New_York", 400, 8, 2)
SHARED_SITE_ID = "shared-site-0001"

# Ids a gateway must carry as one percent-encoded path segment, beyond single characters.
ODD_MULTI_CHAR_IDS: tuple[str, ...] = (
    "..", "...", "a/b", "../sites", "a b", " lead", "trail ", "100%", "%2F", "%25",
    "a?b=c", "#top", "x+y", "k=v&w=z", "it's", '"q"', "[v6]", "{x}", "a\\b", "~user",
    "Ærø Havn", "東京-1", "charger 🚗", "ß/ü?ä#ö", "a" * 200,
)  # fmt: skip


def demo_fleet(seed: int = 7) -> list[Site]:
    """The 12-site demo fleet described in the module docstring."""
    rng = random.Random(seed)
    return [build_site(rng, number, spec) for number, spec in enumerate(DEMO_SPECS, start=1)]


def build_fleet(n_sites: int, connectors_per_site: int, seed: int = 1) -> list[Site]:
    """A large synthetic fleet (same shape and quirks) with exactly ``connectors_per_site``."""
    if n_sites < 0 or connectors_per_site < 1:
        raise ValueError(
            f"build_fleet needs n_sites >= 0 and connectors_per_site >= 1, "
            f"got {n_sites=} {connectors_per_site=}"
        )
    rng = random.Random(seed)
    return [
        build_site(rng, number, synthetic_spec(rng, number, connectors_per_site))
        for number in range(1, n_sites + 1)
    ]


def _account_fleet(
    seed: int, region: str, specs: tuple[SiteSpec, ...], shared: SiteSpec
) -> list[Site]:
    rng = random.Random(seed)
    code = region.upper()
    sites = [
        build_site(rng, number, spec, Naming.numbered(number, f"{region}-site", f"{code}-"))
        for number, spec in enumerate(specs, start=1)
    ]
    naming = Naming(SHARED_SITE_ID, f"{code}-S-0001", f"{region}-{SHARED_SITE_ID}")
    sites.append(build_site(rng, len(specs) + 1, shared, naming))
    return sites


def eu_fleet(seed: int = 11) -> list[Site]:
    """The EU account: five ``eu-site-*`` sites and ``shared-site-0001`` (EU content)."""
    return _account_fleet(seed, "eu", EU_SPECS, EU_SHARED_SPEC)


def us_fleet(seed: int = 13) -> list[Site]:
    """The US account: four ``us-site-*`` sites and ``shared-site-0001`` (US content)."""
    return _account_fleet(seed, "us", US_SPECS, US_SHARED_SPEC)


def odd_id_fleet(seed: int = 5) -> list[Site]:
    """Small sites whose ids are every printable ASCII character, then the multi-character
    and non-ASCII ``ODD_MULTI_CHAR_IDS``; each site's connector ids start with its id."""
    rng = random.Random(seed)
    ids = [chr(code) for code in range(0x20, 0x7F)] + list(ODD_MULTI_CHAR_IDS)
    sites = []
    for number, site_id in enumerate(ids, start=1):
        spec = SiteSpec(f"Odd id {site_id!r}", "Europe/Berlin", 63, 2)
        naming = Naming(site_id, f"ODD-{number:03d}", site_id)
        sites.append(build_site(rng, number, spec, naming))
    return sites


def iter_nodes(site: Site) -> Iterator[Node]:
    """Every fuse-tree node of a site, depth first, in delivery order."""
    stack: list[Node] = list(reversed(site.get("fuse_tree", [])))
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.get("children", [])))


def iter_connectors(site: Site) -> Iterator[dict[str, Any]]:
    """Every connector of a site, in delivery order."""
    for node in iter_nodes(site):
        yield from node.get("parameters", {}).get("connectors", [])
