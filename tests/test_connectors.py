"""Flattened connectors over real sockets: `/sites/{id}/connectors`, `/sites/{id}/nodes`,
`/connectors` (paging, cursors, filters), `/connectors/{id}`, their caching and their 400s.

Expectations for the demo fleet are computed from `demo_fleet()` itself, never hard-coded.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.simulator import demo_fleet, iter_connectors
from tests.conftest import GatewayFactory, Simulator, metric_value, settings_for

MakeSimulator = Callable[..., Awaitable[Simulator]]
SITES_PATH = "/rest/v1/sites"
PROBLEM = "application/problem+json"


def station(name: Any, fuse_id: str, depth: int, connectors: list[dict[str, Any]], **extra: Any):
    parameters = {"name": name, "fuse_id": fuse_id, "depth": str(depth), **extra}
    return {
        "type": "charging station",
        "parameters": {**parameters, "connectors": connectors},
        "children": [],
    }


# One site as ChargePilot would send it, quirks included: numeric strings, a station named
# "32", a group without limit, a station whose limit exceeds its fuse, a connector without
# charging_capability, top-level fuses and siblings delivered out of `order`.
HAND_SITE: dict[str, Any] = {
    "id": "site-hand",
    "name": "Depot Handmade",
    "timezone": "Europe/Berlin",
    "fuse_tree": [
        {
            "type": "fuse",
            "parameters": {"name": "Annex", "fuse_id": "F-3", "depth": "1", "order": 2},
            "children": [
                station(
                    "CS Solo",
                    "F-3",
                    2,
                    [
                        {
                            "id": "hx-solo",
                            "name": "Solo / 1",
                            "connector_id": "1",
                            "charging_station_id": "CS-SOLO",
                            "priority": 1,
                            "charging_capability": [10],
                            "discharge_capability": [],
                        }
                    ],
                )
            ],
        },
        {
            "type": "fuse",
            "parameters": {
                "name": "Main",
                "fuse_id": "F-1",
                "limit": 400,
                "depth": "1",
                "order": 1,
            },
            "children": [
                {
                    "type": "fuse",
                    "parameters": {
                        "name": "Sub",
                        "fuse_id": "F-2",
                        "limit": "250",
                        "depth": "2",
                        "order": 2,
                    },
                    "children": [
                        {
                            "type": "connector group",
                            "parameters": {"name": "Group A", "fuse_id": "F-2", "depth": "3"},
                            "children": [
                                station(
                                    "32",
                                    "F-2",
                                    4,
                                    [
                                        {
                                            "id": "hx-2",
                                            "name": "32 / 2",
                                            "connector_id": "2",
                                            "charging_station_id": "CS-32",
                                            "priority": "1",
                                            "charging_capability": [32, 32, 32],
                                            "discharge_capability": [16, 16, 16],
                                        },
                                        {
                                            "id": "hx-10",
                                            "name": "32 / 1",
                                            "connector_id": "1",
                                            "charging_station_id": "CS-32",
                                            "priority": 0,
                                            "charging_capability": ["16", 22, 11],
                                            "x_vendor": {"slot": 7},
                                        },
                                    ],
                                    limit="32",
                                    order=1,
                                )
                            ],
                        }
                    ],
                },
                station(
                    "CS Big",
                    "F-1",
                    2,
                    [
                        {
                            "id": "hx-big",
                            "name": "Big / 1",
                            "connector_id": "1",
                            "charging_station_id": "CS-BIG",
                            "priority": 2,
                        }
                    ],
                    limit=500,
                    order=1,
                ),
            ],
        },
    ],
}

MAIN = {"type": "fuse", "name": "Main", "fuse_id": "F-1"}
SUB = {"type": "fuse", "name": "Sub", "fuse_id": "F-2"}
GROUP = {"type": "connector_group", "name": "Group A", "fuse_id": "F-2"}
CS_32 = {"type": "charging_station", "name": "32", "fuse_id": "F-2"}
SITE_FIELDS = {"site_id": "site-hand", "site_name": "Depot Handmade"}

# Sorted by connector id in string order: "hx-10" < "hx-2" < "hx-big" < "hx-solo".
HAND_CONNECTORS: list[dict[str, Any]] = [
    {
        "id": "hx-10",
        "name": "32 / 1",
        "connector_id": "1",
        "charging_station_id": "CS-32",
        "priority": 0,
        "charging_capability": [16, 22, 11],
        "discharge_capability": [],
        "x_vendor": {"slot": 7},
        **SITE_FIELDS,
        "node_name": "32",
        "path": [MAIN, SUB, GROUP, CS_32],
        "effective_limit": 32,
        "max_charging_current": 22,
        "v2g": False,
    },
    {
        "id": "hx-2",
        "name": "32 / 2",
        "connector_id": "2",
        "charging_station_id": "CS-32",
        "priority": 1,
        "charging_capability": [32, 32, 32],
        "discharge_capability": [16, 16, 16],
        **SITE_FIELDS,
        "node_name": "32",
        "path": [MAIN, SUB, GROUP, CS_32],
        "effective_limit": 32,
        "max_charging_current": 32,
        "v2g": True,
    },
    {
        "id": "hx-big",
        "name": "Big / 1",
        "connector_id": "1",
        "charging_station_id": "CS-BIG",
        "priority": 2,
        "charging_capability": [],
        "discharge_capability": [],
        **SITE_FIELDS,
        "node_name": "CS Big",
        "path": [MAIN, {"type": "charging_station", "name": "CS Big", "fuse_id": "F-1"}],
        "effective_limit": 400,  # the station's 500 A can't exceed its 400 A fuse
        "max_charging_current": None,
        "v2g": False,
    },
    {
        "id": "hx-solo",
        "name": "Solo / 1",
        "connector_id": "1",
        "charging_station_id": "CS-SOLO",
        "priority": 1,
        "charging_capability": [10],
        "discharge_capability": [],
        **SITE_FIELDS,
        "node_name": "CS Solo",
        "path": [
            {"type": "fuse", "name": "Annex", "fuse_id": "F-3"},
            {"type": "charging_station", "name": "CS Solo", "fuse_id": "F-3"},
        ],
        "effective_limit": None,  # no limit anywhere on its path
        "max_charging_current": 10,
        "v2g": False,
    },
]

NODE_FIELDS = (
    "node_id",
    "parent_id",
    "depth",
    "type",
    "name",
    "limit",
    "effective_limit",
    "connector_count",
)
# Pre-order over the tree as normalized (siblings sorted by `order`).
HAND_NODES = [
    ("0", None, 0, "fuse", "Main", 400, 400, 0),
    ("0.0", "0", 1, "charging_station", "CS Big", 500, 400, 1),
    ("0.1", "0", 1, "fuse", "Sub", 250, 250, 0),
    ("0.1.0", "0.1", 2, "connector_group", "Group A", None, 250, 0),
    ("0.1.0.0", "0.1.0", 3, "charging_station", "32", 32, 32, 2),
    ("1", None, 0, "fuse", "Annex", None, None, 0),
    ("1.0", "1", 1, "charging_station", "CS Solo", None, None, 1),
]


def connector(connector_id: str | None, station_id: str = "CS-X", **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"name": f"n-{connector_id}", "charging_station_id": station_id, **extra}
    if connector_id is not None:
        raw["id"] = connector_id
    return raw


def flat_site(site_id: str, connectors: list[dict[str, Any]]) -> dict[str, Any]:
    """A raw site with one fuse and one station carrying `connectors`."""
    return {
        "id": site_id,
        "name": f"Site {site_id}",
        "fuse_tree": [
            {
                "type": "fuse",
                "parameters": {"name": "Main", "fuse_id": f"F-{site_id}", "limit": 63},
                "children": [station("CS", f"F-{site_id}", 2, connectors)],
            }
        ],
    }


def demo_rows() -> list[tuple[str, str, str, bool]]:
    """(site id, connector id, station id, v2g) of every demo connector, in paging order."""
    return sorted(
        (site["id"], raw["id"], raw["charging_station_id"], bool(raw.get("discharge_capability")))
        for site in demo_fleet()
        for raw in iter_connectors(site)
    )


async def get_json(client: TestClient, path: str, status: int = 200, **params: str) -> Any:
    response = await client.get(path, params=params)
    assert response.status == status, await response.text()
    expected_type = "application/json" if status < 400 else PROBLEM
    assert response.content_type == expected_type
    return await response.json()


async def walk(client: TestClient, limit: int, **filters: str) -> list[dict[str, Any]]:
    """Every connector `/connectors` returns for `filters`, following `next_cursor`."""
    found: list[dict[str, Any]] = []
    params = {**filters, "limit": str(limit)}
    for _ in range(10_000):
        body = await get_json(client, "/connectors", **params)
        assert set(body) == {"data", "next_cursor"}
        assert len(body["data"]) <= limit
        found.extend(body["data"])
        if body["next_cursor"] is None:
            return found
        assert len(body["data"]) == limit, "only the last page may be short"
        params["cursor"] = body["next_cursor"]
    raise AssertionError("paging did not end")


def keys(connectors: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["site_id"], c["id"]) for c in connectors]


@pytest.fixture
async def demo_gateway(simulator: Simulator, make_gateway: GatewayFactory) -> TestClient:
    return await make_gateway(settings_for(simulator))


# -- one hand-built site ---------------------------------------------------------------


async def test_site_connectors_and_nodes_of_a_hand_built_site(
    make_simulator: MakeSimulator, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator(sites=[copy.deepcopy(HAND_SITE)])
    client = await make_gateway(settings_for(sim))

    body = await get_json(client, "/sites/site-hand/connectors")
    assert body == {"data": HAND_CONNECTORS}

    nodes = (await get_json(client, "/sites/site-hand/nodes"))["data"]
    assert [tuple(node[name] for name in NODE_FIELDS) for node in nodes] == HAND_NODES

    # The fleet-wide views agree with the per-site one.
    assert (await get_json(client, "/connectors", site_id="site-hand"))["data"] == HAND_CONNECTORS
    for expected in HAND_CONNECTORS:
        assert await get_json(client, f"/connectors/{expected['id']}") == expected
    v2g = await get_json(client, "/connectors", v2g="true")
    assert v2g == {"data": [HAND_CONNECTORS[1]], "next_cursor": None}


# -- the demo fleet: paging and filters ------------------------------------------------


async def test_paging_returns_every_connector_once_in_order(demo_gateway: TestClient) -> None:
    expected = [(site_id, connector_id) for site_id, connector_id, _, _ in demo_rows()]
    assert len(expected) > 50 * 2, "the demo fleet must need several pages"

    connectors = await walk(demo_gateway, 50)
    assert keys(connectors) == expected

    # A limit that divides the total exactly: the last full page says null, no empty page.
    total = len(expected)
    divisor = next(d for d in range(total // 2, 0, -1) if total % d == 0)
    first = await get_json(demo_gateway, "/connectors", limit=str(divisor))
    assert first["next_cursor"] is not None
    assert keys(await walk(demo_gateway, divisor)) == expected

    everything = await get_json(demo_gateway, "/connectors")  # default limit 1000
    assert keys(everything["data"]) == expected[:1000]
    assert (everything["next_cursor"] is None) is (total <= 1000)


async def test_filters_return_exactly_the_matching_connectors(demo_gateway: TestClient) -> None:
    rows = demo_rows()
    site_id = rows[len(rows) // 2][0]
    v2g_site = next(row[0] for row in rows if row[3])
    station_id = next(row[2] for row in rows if row[0] == v2g_site and row[3])
    cases: list[tuple[dict[str, str], list[tuple[str, str]]]] = [
        ({"site_id": site_id}, [(r[0], r[1]) for r in rows if r[0] == site_id]),
        ({"charging_station_id": station_id}, [(r[0], r[1]) for r in rows if r[2] == station_id]),
        ({"v2g": "true"}, [(r[0], r[1]) for r in rows if r[3]]),
        ({"v2g": "false"}, [(r[0], r[1]) for r in rows if not r[3]]),
        (
            {"site_id": v2g_site, "v2g": "false"},
            [(r[0], r[1]) for r in rows if r[0] == v2g_site and not r[3]],
        ),
        (
            {"site_id": v2g_site, "charging_station_id": station_id, "v2g": "true"},
            [(r[0], r[1]) for r in rows if r[2] == station_id and r[3]],
        ),
        ({"site_id": "site-none"}, []),
        ({"charging_station_id": station_id, "v2g": "false"}, []),
    ]
    for filters, expected in cases:
        body = await get_json(demo_gateway, "/connectors", **filters)
        assert keys(body["data"]) == expected, filters
        assert body["next_cursor"] is None
        for connector in body["data"]:
            assert connector["v2g"] is bool(connector["discharge_capability"])
    assert all(expected for _, expected in cases[:6]), "every positive case must match some"

    # Paging under a filter crosses sites and still returns each match exactly once.
    v2g_rows = cases[2][1]
    assert len({site for site, _ in v2g_rows}) > 1
    assert keys(await walk(demo_gateway, 7, v2g="true")) == v2g_rows
    site_rows = cases[0][1]
    assert keys(await walk(demo_gateway, 3, site_id=site_id)) == site_rows


async def test_filtered_page_of_exact_size_ends_with_null_cursor(demo_gateway: TestClient) -> None:
    rows = demo_rows()
    site_id = rows[0][0]
    count = sum(1 for row in rows if row[0] == site_id)
    exact = await get_json(demo_gateway, "/connectors", site_id=site_id, limit=str(count))
    assert len(exact["data"]) == count and exact["next_cursor"] is None
    short = await get_json(demo_gateway, "/connectors", site_id=site_id, limit=str(count - 1))
    assert short["next_cursor"] is not None
    rest = await get_json(demo_gateway, "/connectors", site_id=site_id, cursor=short["next_cursor"])
    assert keys(short["data"] + rest["data"]) == keys(exact["data"])
    assert rest["next_cursor"] is None


# -- one connector ---------------------------------------------------------------------


async def test_connector_by_id_from_any_site_on_a_cold_gateway(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    rows = demo_rows()
    client = await make_gateway(settings_for(simulator))
    last_site, last_id = rows[-1][0], rows[-1][1]
    found = await get_json(client, f"/connectors/{last_id}")
    assert (found["site_id"], found["id"]) == (last_site, last_id)
    assert simulator.data_calls() == simulator.data_calls(SITES_PATH) == 1

    for site_id, connector_id, station_id, v2g in (rows[0], rows[len(rows) // 2]):
        found = await get_json(client, f"/connectors/{connector_id}")
        assert (found["site_id"], found["charging_station_id"], found["v2g"]) == (
            site_id,
            station_id,
            v2g,
        )
    problem = await get_json(client, "/connectors/no-such-connector", status=404)
    assert problem["status"] == 404 and problem["title"] == "Not Found"
    assert set(problem) >= {"type", "title", "status", "detail", "request_id"}
    assert simulator.data_calls() == 1, "a fresh fleet answers for unknown ids too"


async def test_cold_connector_by_id_reports_a_miss(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    client = await make_gateway(settings_for(simulator))
    response = await client.get(f"/connectors/{demo_rows()[0][1]}")
    assert response.status == 200
    assert "fwd=miss" in response.headers["Cache-Status"]


async def test_second_replica_finds_connectors_in_shared_redis(
    simulator: Simulator, make_gateway: GatewayFactory, redis_url: str
) -> None:
    rows = demo_rows()
    first = await make_gateway(settings_for(simulator, redis_url=redis_url))
    second = await make_gateway(settings_for(simulator, redis_url=redis_url))
    site_id, connector_id = rows[-1][0], rows[-1][1]
    assert (await get_json(first, f"/connectors/{connector_id}"))["site_id"] == site_id
    page = await get_json(first, "/connectors", limit="10")
    calls = simulator.data_calls()
    assert calls == 1

    found = await get_json(second, f"/connectors/{connector_id}")
    assert (found["site_id"], found["id"]) == (site_id, connector_id)
    # Cursors are signed with a key every replica shares, so paging can hop replicas.
    rest = await get_json(second, "/connectors", limit="10", cursor=page["next_cursor"])
    assert keys(page["data"] + rest["data"]) == [(r[0], r[1]) for r in rows[:20]]
    assert simulator.data_calls() == calls


# -- bad input -------------------------------------------------------------------------


def flip(cursor: str) -> str:
    """The cursor with one character in its middle replaced (all its 6 bits are used)."""
    middle = len(cursor) // 2
    replacement = "B" if cursor[middle] == "A" else "A"
    return cursor[:middle] + replacement + cursor[middle + 1 :]


async def test_bad_input_is_a_400_problem(demo_gateway: TestClient) -> None:
    page = await get_json(demo_gateway, "/connectors", limit="5")
    cursor = page["next_cursor"]
    assert cursor is not None
    bad: list[tuple[str, dict[str, str]]] = [
        ("/connectors", {"limit": "5", "cursor": flip(cursor)}),
        ("/connectors", {"limit": "5", "cursor": cursor[:-4]}),
        ("/connectors", {"limit": "5", "cursor": cursor, "v2g": "true"}),
        ("/connectors", {"cursor": cursor, "site_id": "site-0001"}),
        ("/connectors", {"cursor": "not-a-cursor!!"}),
        ("/connectors", {"cursor": "eyJxIjoiMSIsImsiOltdfQ"}),  # unsigned JSON
        ("/connectors", {"limit": "0"}),
        ("/connectors", {"limit": "-1"}),
        ("/connectors", {"limit": "10001"}),
        ("/connectors", {"limit": "abc"}),
        ("/connectors", {"v2g": "yes"}),
        ("/connectors", {"v2g": "True"}),
        ("/connectors", {"colour": "red"}),
        ("/connectors", {"site_id": ""}),
        ("/connectors", {"cursor": ""}),
        ("/connectors", {"site_id": "a\x01b"}),
        ("/connectors", {"site_id": "x" * 201}),
        ("/sites/a%01b/connectors", {}),
        ("/sites/a%7Fb/nodes", {}),
        ("/connectors/a%0Ab", {}),
    ]
    for path, params in bad:
        response = await demo_gateway.get(path, params=params)
        assert response.status == 400, (path, params, await response.text())
        assert response.content_type == PROBLEM
        problem = await response.json()
        assert problem["status"] == 400 and problem["request_id"], problem
    # The same cursor with a different limit but the same filters is still good.
    assert (await get_json(demo_gateway, "/connectors", limit="7", cursor=cursor))["data"]


# -- caching ---------------------------------------------------------------------------


async def test_connectors_are_filled_once_and_then_served_from_cache(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    client = await make_gateway(settings_for(simulator))
    cold = await client.get("/connectors", params={"limit": "100"})
    assert cold.status == 200
    assert cold.headers["Cache-Status"] == "chargepilot-gateway; fwd=miss; stored"
    assert simulator.data_calls() == simulator.data_calls(SITES_PATH) == 1
    etag = cold.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith('W/"')

    cursor = (await cold.json())["next_cursor"]
    for params in ({"limit": "100"}, {"limit": "100", "cursor": cursor}, {"v2g": "true"}):
        warm = await client.get("/connectors", params=params)
        assert warm.status == 200
        assert warm.headers["Cache-Status"].startswith("chargepilot-gateway; hit; ttl=")
        assert "Age" in warm.headers
    assert simulator.data_calls() == 1

    again = await client.get("/connectors", params={"limit": "100"})
    assert again.headers["ETag"] == etag
    not_modified = await client.get(
        "/connectors", params={"limit": "100"}, headers={"If-None-Match": etag}
    )
    assert not_modified.status == 304
    assert await not_modified.read() == b""
    other_page = await client.get(
        "/connectors", params={"limit": "100", "cursor": cursor}, headers={"If-None-Match": etag}
    )
    assert other_page.status == 200, "another page is another representation"
    assert other_page.headers["ETag"] != etag

    one = await client.get(f"/connectors/{demo_rows()[0][1]}")
    revalidated = await client.get(
        f"/connectors/{demo_rows()[0][1]}", headers={"If-None-Match": one.headers["ETag"]}
    )
    assert revalidated.status == 304
    assert simulator.data_calls() == 1


async def test_duplicate_connector_ids_across_sites_are_all_listed(
    make_simulator: MakeSimulator, make_gateway: GatewayFactory
) -> None:
    sites = [
        flat_site("site-b", [connector("dup-x", "CS-B"), connector(None, "CS-B")]),
        flat_site(
            "site-a",
            [
                connector("dup-in", "CS-A1"),
                connector("dup-x", "CS-A"),
                connector("dup-in", "CS-A2"),
            ],
        ),
    ]
    sim = await make_simulator(sites=sites)
    client = await make_gateway(settings_for(sim))
    expected = [
        ("site-a", "dup-in"),
        ("site-a", "dup-in"),
        ("site-a", "dup-x"),
        ("site-b", "dup-x"),
        ("site-b", None),
    ]
    listed = (await get_json(client, "/connectors"))["data"]
    assert keys(listed) == expected
    # Paging one by one passes through duplicates (and a null id) without losing any.
    assert await walk(client, 1) == listed
    assert [c["charging_station_id"] for c in listed[:2]] == ["CS-A1", "CS-A2"]

    metrics = await (await client.get("/metrics")).text()
    assert metric_value(metrics, "gateway_duplicate_connector_ids_total") == 2
    site_b = (await get_json(client, "/sites/site-b/connectors"))["data"]
    assert keys(site_b) == expected[3:]
    # Either site may answer for the shared id, but always the same one.
    assert (await get_json(client, "/connectors/dup-x"))["site_id"] == "site-a"


async def test_paging_survives_two_upstream_sites_sharing_an_id(
    make_simulator: MakeSimulator, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator(sites=[])
    # The simulator keys its sites by id; two keys with one site id imitate an upstream
    # that lists the same site twice.
    sim.state.sites = {
        "first": flat_site("site-s", [connector("c1", "CS-1"), connector("c2", "CS-1")]),
        "second": flat_site("site-s", [connector("c1", "CS-2"), connector("c2", "CS-2")]),
    }
    client = await make_gateway(settings_for(sim))
    listed = (await get_json(client, "/connectors"))["data"]
    assert keys(listed) == [("site-s", "c1"), ("site-s", "c1"), ("site-s", "c2"), ("site-s", "c2")]
    assert await walk(client, 1) == listed
    assert await walk(client, 1, site_id="site-s") == listed


async def test_unknown_site_is_a_404_remembered_as_negative(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    client = await make_gateway(settings_for(simulator))
    for path in ("/sites/site-9999/connectors", "/sites/site-9999/connectors"):
        problem = await get_json(client, path, status=404)
        assert problem["status"] == 404
    # The known-id gate fetched the list once; the id is not in it.
    assert simulator.data_calls() == simulator.data_calls(SITES_PATH) == 1
    problem = await get_json(client, "/sites/site-9999/nodes", status=404)
    assert simulator.data_calls() == 1
    metrics = await (await client.get("/metrics")).text()
    route = "/sites/{id}/connectors"
    assert metric_value(metrics, "gateway_cache_lookups_total", route=route, result="miss") == 1
    assert (
        metric_value(metrics, "gateway_cache_lookups_total", route=route, result="negative_hit")
        == 1
    )
