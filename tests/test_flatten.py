"""flatten_connectors / flatten_nodes / duplicate_connector_ids over normalized sites."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.flatten import duplicate_connector_ids, flatten_connectors, flatten_nodes
from gateway.normalize import normalize_site


def parameters(**fields: Any) -> dict[str, Any]:
    """Normalized parameters: every documented field present, as normalize_site leaves them."""
    return {
        "name": None,
        "limit": None,
        "inbound_limit": None,
        "outbound_limit": None,
        "fallback": None,
        "pending_fallback_value": None,
        "fallback_status": None,
        "order": None,
        "depth": None,
        "fuse_id": None,
        "firmware_version": None,
        "additional_comments": None,
        "meter": None,
        "connectors": [],
        **fields,
    }


def connector(
    connector_id: str | None,
    charging: list[float] | None = None,
    discharge: list[float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": connector_id,
        "name": f"name-{connector_id}",
        "connector_id": "1",
        "charging_station_id": "cs",
        "priority": None,
        "charging_capability": charging or [],
        "discharge_capability": discharge or [],
        **extra,
    }


C1 = connector("c-1", [6, 32], [-10, -32])
C2 = connector("c-2")
C3 = connector("c-3", [6, 16, 32], x_vendor={"a": 1})
C_DUP_A = connector("c-dup", [11])
C_DUP_B = connector("c-dup", [22])
C_NULL = connector(None, [16])

SITE: dict[str, Any] = {
    "id": "site-1",
    "name": "Bus Depot",
    "timezone": "Europe/Berlin",
    "local_controller": None,
    "fuse_tree": [
        {
            "type": "fuse",
            "parameters": parameters(name="Main", fuse_id="F1", limit=400),
            "children": [
                {
                    "type": "fuse",
                    "parameters": parameters(name="Sub", fuse_id="F2", limit=250),
                    "children": [
                        {
                            "type": "connector_group",
                            "parameters": parameters(name="Group A"),
                            "children": [
                                {
                                    "type": "charging_station",
                                    "parameters": parameters(
                                        name="CS-1", fuse_id="F3", limit=32, connectors=[C3, C1]
                                    ),
                                    "children": [],
                                }
                            ],
                        },
                        {
                            # Its own limit is larger than the fuse above it: the fuse wins.
                            "type": "charging_station",
                            "parameters": parameters(name="CS-2", limit=500, connectors=[C2]),
                            "children": [],
                        },
                    ],
                },
                {
                    "type": "charging_station",
                    "parameters": parameters(name="CS-3", connectors=[C_DUP_A, C_NULL, C_DUP_B]),
                    "children": [],
                },
            ],
        },
        {"type": "meter", "parameters": parameters(name="PV"), "children": []},
    ],
}

MAIN = {"type": "fuse", "name": "Main", "fuse_id": "F1"}
SUB = {"type": "fuse", "name": "Sub", "fuse_id": "F2"}
GROUP = {"type": "connector_group", "name": "Group A", "fuse_id": None}
CS1 = {"type": "charging_station", "name": "CS-1", "fuse_id": "F3"}
CS2 = {"type": "charging_station", "name": "CS-2", "fuse_id": None}
CS3 = {"type": "charging_station", "name": "CS-3", "fuse_id": None}


def placed(
    raw: dict[str, Any],
    node_name: str,
    path: list[dict[str, Any]],
    effective_limit: float | None,
    max_charging_current: float | None,
    v2g: bool,
) -> dict[str, Any]:
    return {
        **raw,
        "site_id": "site-1",
        "site_name": "Bus Depot",
        "node_name": node_name,
        "path": path,
        "effective_limit": effective_limit,
        "max_charging_current": max_charging_current,
        "v2g": v2g,
    }


def test_connectors_are_flattened_with_their_place_in_the_site() -> None:
    assert flatten_connectors(SITE) == [
        placed(C1, "CS-1", [MAIN, SUB, GROUP, CS1], 32, 32, True),
        placed(C2, "CS-2", [MAIN, SUB, CS2], 250, None, False),
        placed(C3, "CS-1", [MAIN, SUB, GROUP, CS1], 32, 32, False),
        placed(C_DUP_A, "CS-3", [MAIN, CS3], 400, 11, False),
        placed(C_DUP_B, "CS-3", [MAIN, CS3], 400, 22, False),
        placed(C_NULL, "CS-3", [MAIN, CS3], 400, 16, False),
    ]


def test_connector_keys_are_its_own_then_the_derived_ones() -> None:
    c3 = next(entry for entry in flatten_connectors(SITE) if entry["id"] == "c-3")
    assert list(c3) == [
        *C3,
        "site_id",
        "site_name",
        "node_name",
        "path",
        "effective_limit",
        "max_charging_current",
        "v2g",
    ]
    assert c3["x_vendor"] == {"a": 1}


def test_no_limit_on_the_path_means_a_null_effective_limit() -> None:
    site = {**SITE, "fuse_tree": [SITE["fuse_tree"][0]["children"][1]]}
    assert [entry["effective_limit"] for entry in flatten_connectors(site)] == [None] * 3


def test_derived_fields_win_over_upstream_keys_of_the_same_name() -> None:
    raw = connector("c", site_id="spoofed", v2g="yes")
    site = {
        **SITE,
        "fuse_tree": [{"type": "fuse", "parameters": parameters(connectors=[raw]), "children": []}],
    }
    (entry,) = flatten_connectors(site)
    assert entry["site_id"] == "site-1"
    assert entry["v2g"] is False


def test_path_entries_are_not_shared_between_connectors() -> None:
    c1, _, c3, *_ = flatten_connectors(SITE)
    assert c1["path"] == c3["path"]
    assert c1["path"] is not c3["path"]
    assert all(a is not b for a, b in zip(c1["path"], c3["path"], strict=True))


def test_nodes_are_flattened_in_pre_order_with_positional_ids() -> None:
    def node(
        node_id: str,
        parent_id: str | None,
        step: dict[str, Any],
        limit: float | None,
        effective_limit: float | None,
        count: int,
        total: int,
    ) -> dict[str, Any]:
        return {
            "node_id": node_id,
            "parent_id": parent_id,
            "depth": node_id.count("."),
            **step,
            "limit": limit,
            "effective_limit": effective_limit,
            "connector_count": count,
            "connector_count_total": total,
        }

    pv = {"type": "meter", "name": "PV", "fuse_id": None}
    assert flatten_nodes(SITE) == [
        node("0", None, MAIN, 400, 400, 0, 6),
        node("0.0", "0", SUB, 250, 250, 0, 3),
        node("0.0.0", "0.0", GROUP, None, 250, 0, 2),
        node("0.0.0.0", "0.0.0", CS1, 32, 32, 2, 2),
        node("0.0.1", "0.0", CS2, 500, 250, 1, 1),
        node("0.1", "0", CS3, None, 400, 3, 3),
        node("1", None, pv, None, None, 0, 0),
    ]
    assert list(flatten_nodes(SITE)[0]) == [
        "node_id",
        "parent_id",
        "depth",
        "type",
        "name",
        "fuse_id",
        "limit",
        "effective_limit",
        "connector_count",
        "connector_count_total",
    ]


def test_node_depth_is_the_position_not_parameters_depth() -> None:
    site = {
        **SITE,
        "fuse_tree": [{"type": "fuse", "parameters": parameters(depth=7), "children": []}],
    }
    assert flatten_nodes(site)[0]["depth"] == 0


def test_an_empty_fuse_tree_flattens_to_nothing() -> None:
    site = {**SITE, "fuse_tree": []}
    assert flatten_connectors(site) == []
    assert flatten_nodes(site) == []


def test_flattening_does_not_mutate_the_site() -> None:
    before = copy.deepcopy(SITE)
    flatten_connectors(SITE)
    flatten_nodes(SITE)
    assert before == SITE


def test_normalize_and_flatten_compose_on_numeric_strings() -> None:
    raw = {
        "id": 42,
        "name": "Yard",
        "fuse_tree": [
            {
                "type": "Main Fuse",
                "parameters": {"name": "Main", "limit": "400", "fuse_id": 9},
                "children": [
                    {
                        "type": "Charging Station",
                        "parameters": {
                            "name": "CS",
                            "limit": " 63.5 ",
                            "order": "2",
                            "connectors": [
                                {"id": 7, "charging_capability": ["16", "32"]},
                                {"id": "8", "discharge_capability": ["-11"]},
                            ],
                        },
                    },
                    {
                        "type": "chargingStation",
                        "parameters": {
                            "name": "Small",
                            "limit": "16",
                            "order": "1",
                            "connectors": [{"id": "6", "charging_capability": [6.0, "10"]}],
                        },
                    },
                ],
            }
        ],
    }
    site = normalize_site(raw)
    connectors = flatten_connectors(site)
    assert [
        (entry["id"], entry["effective_limit"], entry["max_charging_current"], entry["v2g"])
        for entry in connectors
    ] == [("6", 16, 10, False), ("7", 63.5, 32, False), ("8", 63.5, None, True)]
    assert connectors[0]["site_id"] == "42"
    assert connectors[0]["path"] == [
        {"type": "main_fuse", "name": "Main", "fuse_id": "9"},
        {"type": "charging_station", "name": "Small", "fuse_id": None},
    ]
    assert [(node["node_id"], node["name"]) for node in flatten_nodes(site)] == [
        ("0", "Main"),
        ("0.0", "Small"),
        ("0.1", "CS"),
    ]


def test_connectors_sort_by_id_in_string_order_with_null_ids_last_and_stable() -> None:
    first_null = connector(None, x_mark=1)
    second_null = connector(None, x_mark=2)
    site = {
        **SITE,
        "fuse_tree": [
            {
                "type": "charging_station",
                "parameters": parameters(
                    connectors=[first_null, connector("10"), connector("9"), second_null]
                ),
                "children": [],
            }
        ],
    }
    entries = flatten_connectors(site)
    assert [entry["id"] for entry in entries] == ["10", "9", None, None]
    assert [entry.get("x_mark") for entry in entries[2:]] == [1, 2]


def test_duplicate_connector_ids_are_kept_and_reported() -> None:
    connectors = flatten_connectors(SITE)
    assert [entry["id"] for entry in connectors].count("c-dup") == 2
    assert duplicate_connector_ids(connectors) == ["c-dup"]


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([], []),
        (["a", "b"], []),
        (["b", "a", "b", "a", "c", "b"], ["a", "b"]),
        ([None, None, "x"], []),
    ],
)
def test_duplicate_connector_ids(ids: list[str | None], expected: list[str]) -> None:
    assert duplicate_connector_ids(iter({"id": value} for value in ids)) == expected


def test_a_2000_deep_chain_flattens_without_recursion() -> None:
    depth = 2000
    top: dict[str, Any] = {}
    node = top
    for level in range(depth):
        # Limits shrink downwards, so the effective limit is always the node's own.
        node.update(
            type="fuse",
            parameters=parameters(name=f"n{level}", limit=depth - level),
            children=[],
        )
        if level < depth - 1:
            child: dict[str, Any] = {}
            node["children"].append(child)
            node = child
    node["parameters"]["connectors"] = [connector("deep", [32])]
    site = {**SITE, "fuse_tree": [top]}

    (entry,) = flatten_connectors(site)
    assert len(entry["path"]) == depth
    assert entry["path"][0] == {"type": "fuse", "name": "n0", "fuse_id": None}
    assert entry["path"][-1]["name"] == f"n{depth - 1}"
    assert entry["node_name"] == f"n{depth - 1}"
    assert entry["effective_limit"] == 1

    nodes = flatten_nodes(site)
    assert len(nodes) == depth
    assert [node["depth"] for node in nodes] == list(range(depth))
    assert [node["effective_limit"] for node in nodes] == list(range(depth, 0, -1))
    assert nodes[-1]["node_id"] == ".".join(["0"] * depth)
    assert nodes[-1]["parent_id"] == nodes[-2]["node_id"]
    assert all(node["connector_count_total"] == 1 for node in nodes)
    assert nodes[-1]["connector_count"] == 1
    assert nodes[0]["connector_count"] == 0
