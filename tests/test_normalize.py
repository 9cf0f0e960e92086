"""normalize_site / normalize_sites: one test (or parametrized case) per repair rule."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from gateway.normalize import ISSUE_FIELDS, SiteShapeError, normalize_site, normalize_sites

PARAMETER_KEYS = [
    "name",
    "limit",
    "inbound_limit",
    "outbound_limit",
    "fallback",
    "pending_fallback_value",
    "fallback_status",
    "order",
    "depth",
    "fuse_id",
    "firmware_version",
    "additional_comments",
    "meter",
    "connectors",
]
EMPTY_PARAMETERS: dict[str, Any] = {
    key: ([] if key == "connectors" else None) for key in PARAMETER_KEYS
}


class Issues(list[str]):
    """An on_issue handler that records every label it gets."""

    def __call__(self, field: str) -> None:
        self.append(field)


def site_with(**fields: Any) -> dict[str, Any]:
    return {"id": "site-1", **fields}


def node_with(parameters: object = None, **fields: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "fuse", **fields}
    if parameters is not None:
        node["parameters"] = parameters
    return node


def read_parameter(name: str, value: object) -> tuple[Any, list[str]]:
    issues = Issues()
    site = normalize_site(site_with(fuse_tree=[node_with({name: value})]), issues)
    return site["fuse_tree"][0]["parameters"][name], issues


def read_meter(name: str, value: object) -> tuple[Any, list[str]]:
    issues = Issues()
    site = normalize_site(site_with(fuse_tree=[node_with({"meter": {name: value}})]), issues)
    return site["fuse_tree"][0]["parameters"]["meter"][name], issues


def read_connector(name: str, value: object) -> tuple[Any, list[str]]:
    issues = Issues()
    raw = site_with(fuse_tree=[node_with({"connectors": [{name: value}]})])
    site = normalize_site(raw, issues)
    return site["fuse_tree"][0]["parameters"]["connectors"][0][name], issues


def chain(depth: int) -> dict[str, Any]:
    """A raw site whose fuse tree is one path `depth` nodes long, built without recursion."""
    top: dict[str, Any] = {"type": "Fuse", "parameters": {"name": "n0", "depth": "0"}}
    node = top
    for level in range(1, depth):
        child = {"type": "Fuse", "parameters": {"name": f"n{level}", "depth": str(level)}}
        node["children"] = [child]
        node = child
    return site_with(fuse_tree=[top])


# --- the site as a whole ---------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, [], "site", 7, True])
def test_a_site_that_is_not_an_object_is_unusable(raw: object) -> None:
    with pytest.raises(SiteShapeError):
        normalize_site(raw)


@pytest.mark.parametrize("site_id", [None, "", True, {}, ["a"], math.nan, math.inf])
def test_a_site_without_a_usable_id_is_unusable(site_id: object) -> None:
    with pytest.raises(SiteShapeError):
        normalize_site({"id": site_id, "name": "x"})


def test_whitespace_is_an_id_like_any_other() -> None:
    assert normalize_site({"id": " ", "name": "x"})["id"] == " "


def test_a_site_without_an_id_key_is_unusable() -> None:
    with pytest.raises(SiteShapeError):
        normalize_site({"name": "x"})


def test_site_shape_error_is_a_value_error() -> None:
    assert issubclass(SiteShapeError, ValueError)


@pytest.mark.parametrize(("site_id", "expected"), [("abc", "abc"), (7, "7"), (7.5, "7.5")])
def test_site_id_is_a_string(site_id: object, expected: str) -> None:
    issues = Issues()
    assert normalize_site({"id": site_id}, issues)["id"] == expected
    assert issues == []


def test_absent_fields_are_null_or_empty_and_not_issues() -> None:
    issues = Issues()
    assert normalize_site({"id": "s"}, issues) == {
        "id": "s",
        "name": None,
        "timezone": None,
        "local_controller": None,
        "fuse_tree": [],
    }
    assert issues == []


def test_explicit_nulls_are_not_issues() -> None:
    issues = Issues()
    raw = {
        "id": "s",
        "name": None,
        "timezone": None,
        "local_controller": {"id": None, "name": None, "serial_no": None, "device_id": None},
        "fuse_tree": [
            {
                "type": None,
                "parameters": {
                    **{key: None for key in PARAMETER_KEYS},
                    "connectors": [{"id": None, "charging_capability": None}],
                },
                "children": None,
            },
            {"type": "fuse", "parameters": {"meter": {"is_producer": None}}},
        ],
    }
    site = normalize_site(raw, issues)
    assert issues == []
    assert site["fuse_tree"][0]["children"] == []
    assert site["fuse_tree"][0]["parameters"]["connectors"][0]["charging_capability"] == []


def test_a_full_site_normalizes_field_by_field_in_documented_order() -> None:
    raw = {
        "fuse_tree": [
            {
                "children": [],
                "parameters": {
                    "connectors": [
                        {
                            "discharge_capability": ["-16"],
                            "charging_capability": [6, "32"],
                            "priority": "1",
                            "charging_station_id": 99,
                            "connector_id": 1,
                            "name": "Left",
                            "id": "c-1",
                        }
                    ],
                    "meter": {
                        "secondary_transformer_ratio": "5",
                        "primary_transformer_ratio": "100",
                        "fallback_value": "0",
                        "max_possible_current": "400",
                        "consumer_name": "grid",
                        "is_consumer": "TRUE",
                        "producer_current": "12.5",
                        "producer_name": "pv",
                        "is_producer": 0,
                    },
                    "additional_comments": "",
                    "firmware_version": "1.2.3",
                    "fuse_id": 17,
                    "depth": "1",
                    "order": "0",
                    "fallback_status": "active",
                    "pending_fallback_value": "6",
                    "fallback": "6.0",
                    "outbound_limit": 100,
                    "inbound_limit": " 250 ",
                    "limit": "400",
                    "name": "Main",
                },
                "type": "Main Fuse",
            }
        ],
        "local_controller": {"device_id": 5, "serial_no": "SN-1", "name": "LC", "id": "lc-1"},
        "timezone": "Europe/Berlin",
        "name": "Depot",
        "id": "site-1",
    }
    issues = Issues()
    site = normalize_site(raw, issues)
    assert issues == []
    expected: dict[str, Any] = {
        "id": "site-1",
        "name": "Depot",
        "timezone": "Europe/Berlin",
        "local_controller": {"id": "lc-1", "name": "LC", "serial_no": "SN-1", "device_id": "5"},
        "fuse_tree": [
            {
                "type": "main_fuse",
                "parameters": {
                    "name": "Main",
                    "limit": 400,
                    "inbound_limit": 250,
                    "outbound_limit": 100,
                    "fallback": 6.0,
                    "pending_fallback_value": 6,
                    "fallback_status": "active",
                    "order": 0,
                    "depth": 1,
                    "fuse_id": "17",
                    "firmware_version": "1.2.3",
                    "additional_comments": "",
                    "meter": {
                        "is_producer": False,
                        "producer_name": "pv",
                        "producer_current": 12.5,
                        "is_consumer": True,
                        "consumer_name": "grid",
                        "max_possible_current": 400,
                        "fallback_value": 0,
                        "primary_transformer_ratio": 100,
                        "secondary_transformer_ratio": 5,
                    },
                    "connectors": [
                        {
                            "id": "c-1",
                            "name": "Left",
                            "connector_id": "1",
                            "charging_station_id": "99",
                            "priority": 1,
                            "charging_capability": [6, 32],
                            "discharge_capability": [-16],
                        }
                    ],
                },
                "children": [],
            }
        ],
    }
    assert site == expected
    # Equality ignores key order; the contract doesn't.
    assert list(site) == list(expected)
    node = site["fuse_tree"][0]
    assert list(node) == ["type", "parameters", "children"]
    assert list(node["parameters"]) == PARAMETER_KEYS
    assert list(node["parameters"]["meter"]) == list(
        expected["fuse_tree"][0]["parameters"]["meter"]
    )
    assert list(node["parameters"]["connectors"][0]) == [
        "id",
        "name",
        "connector_id",
        "charging_station_id",
        "priority",
        "charging_capability",
        "discharge_capability",
    ]
    assert list(site["local_controller"]) == ["id", "name", "serial_no", "device_id"]


def test_unicode_is_kept_as_is() -> None:
    raw = site_with(
        name="Ladepark Straße 5 \u2013 Süd ⚡",
        timezone="Asia/Tōkyō",
        local_controller={"name": "控制器"},
        fuse_tree=[node_with({"name": "Sicherung Ø", "connectors": [{"id": "ç-1", "name": "é"}]})],
    )
    site = normalize_site({**raw, "id": "sité-ü"})
    assert site["id"] == "sité-ü"
    assert site["name"] == "Ladepark Straße 5 \u2013 Süd ⚡"
    assert site["timezone"] == "Asia/Tōkyō"
    assert site["local_controller"]["name"] == "控制器"
    parameters = site["fuse_tree"][0]["parameters"]
    assert parameters["name"] == "Sicherung Ø"
    assert parameters["connectors"][0]["id"] == "ç-1"
    assert parameters["connectors"][0]["name"] == "é"


# --- scalar rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "issues"),
    [
        ("Depot", "Depot", []),
        ("", "", []),
        (7, "7", []),
        (-3, "-3", []),
        (7.5, "7.5", []),
        (True, None, ["site.name"]),
        ({"a": 1}, None, ["site.name"]),
        (["a"], None, ["site.name"]),
        (math.nan, None, ["site.name"]),
    ],
)
def test_string_rule(value: object, expected: str | None, issues: list[str]) -> None:
    seen = Issues()
    assert normalize_site(site_with(name=value), seen)["name"] == expected
    assert seen == issues


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (32, 32),
        (63.5, 63.5),
        (0, 0),
        (-1, -1),
        ("32", 32),
        (" 63.5 ", 63.5),
        ("-1", -1),
        ("+5", 5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("7.", 7.0),
        (10**30, 10**30),
    ],
)
def test_number_rule_reads_numbers_and_numeric_strings(value: object, expected: float) -> None:
    result, issues = read_parameter("limit", value)
    assert result == expected
    assert type(result) is type(expected)
    assert issues == []


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        "nan",
        "inf",
        "Infinity",
        "1e999",
        "abc",
        "",
        "  ",
        "1_000",
        "٣",
        "32 A",
        "9" * 5000,  # beyond Python's int-from-string digit limit
        True,
        False,
        {"value": 32},
        [32],
    ],
)
def test_number_rule_repairs_unreadable_values_to_null(value: object) -> None:
    assert read_parameter("limit", value) == (None, ["parameters.limit"])


@pytest.mark.parametrize(
    "name",
    ["limit", "inbound_limit", "outbound_limit", "fallback", "pending_fallback_value", "order"],
)
def test_every_numeric_parameter_follows_the_number_rule(name: str) -> None:
    assert read_parameter(name, "16") == (16, [])
    assert read_parameter(name, "x") == (None, [f"parameters.{name}"])


@pytest.mark.parametrize(
    ("value", "expected"), [(2, 2), ("2", 2), ("2.0", 2), (2.0, 2), (" -1 ", -1), ("1e1", 10)]
)
def test_depth_is_an_integer(value: object, expected: int) -> None:
    result, issues = read_parameter("depth", value)
    assert result == expected
    assert type(result) is int
    assert issues == []


@pytest.mark.parametrize("value", ["2.5", 2.5, "abc", True, math.nan, [2]])
def test_a_fractional_or_unreadable_depth_is_null(value: object) -> None:
    assert read_parameter("depth", value) == (None, ["parameters.depth"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("FALSE", False),
        (" True ", True),
        (1, True),
        (0, False),
    ],
)
def test_bool_rule_reads_bools(value: object, expected: bool) -> None:
    assert read_meter("is_producer", value) == (expected, [])


@pytest.mark.parametrize("value", [2, -1, 1.0, "yes", "1", "", {}, []])
def test_bool_rule_repairs_unreadable_values_to_null(value: object) -> None:
    assert read_meter("is_consumer", value) == (None, ["meter.is_consumer"])


@pytest.mark.parametrize(
    ("name", "value", "expected", "issues"),
    [
        ("producer_name", 3, "3", []),
        ("producer_current", "12.5", 12.5, []),
        ("max_possible_current", "x", None, ["meter.max_possible_current"]),
        ("fallback_value", True, None, ["meter.fallback_value"]),
        ("primary_transformer_ratio", "100", 100, []),
        ("secondary_transformer_ratio", [], None, ["meter.secondary_transformer_ratio"]),
        ("consumer_name", {}, None, ["meter.consumer_name"]),
    ],
)
def test_meter_fields(name: str, value: object, expected: object, issues: list[str]) -> None:
    assert read_meter(name, value) == (expected, issues)


@pytest.mark.parametrize(
    ("name", "value", "expected", "issues"),
    [
        ("id", 12, "12", []),
        ("name", ["x"], None, ["connector.name"]),
        ("connector_id", 1, "1", []),
        ("charging_station_id", False, None, ["connector.charging_station_id"]),
        ("priority", "2", 2, []),
        ("priority", "high", None, ["connector.priority"]),
    ],
)
def test_connector_scalar_fields(
    name: str, value: object, expected: object, issues: list[str]
) -> None:
    assert read_connector(name, value) == (expected, issues)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("id", {}, None), ("serial_no", True, None), ("device_id", 42, "42"), ("name", "LC", "LC")],
)
def test_local_controller_fields(name: str, value: object, expected: object) -> None:
    issues = Issues()
    site = normalize_site(site_with(local_controller={name: value}), issues)
    assert site["local_controller"][name] == expected
    assert issues == ([] if expected is not None else [f"local_controller.{name}"])


# --- lists of numbers ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["charging_capability", "discharge_capability"])
def test_number_list_reads_each_element(name: str) -> None:
    assert read_connector(name, [32, "16", " 6.5 ", -1]) == ([32, 16, 6.5, -1], [])


@pytest.mark.parametrize("name", ["charging_capability", "discharge_capability"])
def test_number_list_drops_each_unreadable_element(name: str) -> None:
    value, issues = read_connector(name, [1, "x", None, True, math.nan, 2])
    assert value == [1, 2]
    assert issues == [f"connector.{name}"] * 4


@pytest.mark.parametrize("value", ["32", 32, {"a": 1}, True])
def test_a_number_list_that_is_not_a_list_is_empty(value: object) -> None:
    assert read_connector("charging_capability", value) == ([], ["connector.charging_capability"])


# --- objects -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["meter", 1, [], True])
def test_a_meter_that_is_not_an_object_is_null(value: object) -> None:
    assert read_parameter("meter", value) == (None, ["parameters.meter"])


@pytest.mark.parametrize("value", ["lc", 1, [{}], False])
def test_a_local_controller_that_is_not_an_object_is_null(value: object) -> None:
    issues = Issues()
    assert normalize_site(site_with(local_controller=value), issues)["local_controller"] is None
    assert issues == ["site.local_controller"]


@pytest.mark.parametrize("value", ["p", 3, [{"name": "x"}]])
def test_parameters_that_are_not_an_object_are_all_null(value: object) -> None:
    issues = Issues()
    site = normalize_site(site_with(fuse_tree=[{"type": "fuse", "parameters": value}]), issues)
    assert site["fuse_tree"][0]["parameters"] == EMPTY_PARAMETERS
    assert list(site["fuse_tree"][0]["parameters"]) == PARAMETER_KEYS
    assert issues == ["node.parameters"]


def test_absent_parameters_are_all_null_without_issue() -> None:
    issues = Issues()
    site = normalize_site(site_with(fuse_tree=[{"type": "fuse"}]), issues)
    assert site["fuse_tree"][0] == {"type": "fuse", "parameters": EMPTY_PARAMETERS, "children": []}
    assert issues == []


# --- lists of objects ----------------------------------------------------------------------


def test_children_that_are_not_a_list_are_empty() -> None:
    issues = Issues()
    site = normalize_site(site_with(fuse_tree=[node_with(children={"type": "fuse"})]), issues)
    assert site["fuse_tree"][0]["children"] == []
    assert issues == ["node.children"]


def test_a_child_that_is_not_an_object_is_dropped() -> None:
    issues = Issues()
    raw = site_with(fuse_tree=[node_with(children=["x", node_with({"name": "kept"}), None])])
    children = normalize_site(raw, issues)["fuse_tree"][0]["children"]
    assert [child["parameters"]["name"] for child in children] == ["kept"]
    assert issues == ["node.children", "node.children"]


@pytest.mark.parametrize("value", ["tree", 1, {"type": "fuse"}])
def test_a_fuse_tree_that_is_not_a_list_is_empty(value: object) -> None:
    issues = Issues()
    assert normalize_site(site_with(fuse_tree=value), issues)["fuse_tree"] == []
    assert issues == ["site.fuse_tree"]


def test_a_top_level_node_that_is_not_an_object_is_dropped() -> None:
    issues = Issues()
    site = normalize_site(site_with(fuse_tree=[1, node_with(), "x"]), issues)
    assert len(site["fuse_tree"]) == 1
    assert issues == ["site.fuse_tree", "site.fuse_tree"]


def test_connectors_that_are_not_a_list_are_empty() -> None:
    assert read_parameter("connectors", {"id": "c"}) == ([], ["parameters.connectors"])


def test_a_connector_that_is_not_an_object_is_dropped() -> None:
    value, issues = read_parameter("connectors", ["c-1", {"id": "c-2"}, 3])
    assert [connector["id"] for connector in value] == ["c-2"]
    assert issues == ["parameters.connectors", "parameters.connectors"]


# --- node type ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fuse", "fuse"),
        ("charging station", "charging_station"),
        ("Connector Group", "connector_group"),
        ("chargingStation", "charging_station"),
        ("ChargingStation", "charging_station"),
        ("charging-station", "charging_station"),
        ("  charging   station  ", "charging_station"),
        ("charging__station", "charging_station"),
        ("charging - station", "charging_station"),
        ("CHARGING_STATION", "charging_station"),
        ("DCFastCharger", "dc_fast_charger"),
        ("meter2Fuse", "meter2_fuse"),
        ("_fuse_", "fuse"),
        ("Zähler Gruppe", "zähler_gruppe"),
        (7, "7"),
    ],
)
def test_node_type_is_lower_snake_case(value: object, expected: str) -> None:
    issues = Issues()
    assert (
        normalize_site(site_with(fuse_tree=[{"type": value}]), issues)["fuse_tree"][0]["type"]
        == expected
    )
    assert issues == []


@pytest.mark.parametrize("value", ["", "  ", "--", {}, ["fuse"], True])
def test_a_node_type_that_cannot_be_read_is_null(value: object) -> None:
    issues = Issues()
    assert (
        normalize_site(site_with(fuse_tree=[{"type": value}]), issues)["fuse_tree"][0]["type"]
        is None
    )
    assert issues == ["node.type"]


def test_an_absent_node_type_is_null_without_issue() -> None:
    issues = Issues()
    assert normalize_site(site_with(fuse_tree=[{}]), issues)["fuse_tree"][0]["type"] is None
    assert issues == []


# --- unknown fields ------------------------------------------------------------------------


def test_unknown_fields_are_kept_after_documented_ones_at_every_level() -> None:
    extra = {"nested": {"deep": [1, "two", None]}}
    raw = {
        "x_site": extra,
        "id": "s",
        "local_controller": {"x_lc": "v", "id": 1},
        "fuse_tree": [
            {
                "x_node": [1, 2],
                "type": "fuse",
                "parameters": {
                    "x_param": "p",
                    "limit": "16",
                    "meter": {"x_meter": 1.5, "is_producer": True},
                    "connectors": [{"x_connector": None, "id": "c"}],
                },
                "children": [{"x_child": True}],
            }
        ],
        "x_last": "kept",
    }
    site = normalize_site(raw)
    assert list(site) == [
        "id",
        "name",
        "timezone",
        "local_controller",
        "fuse_tree",
        "x_site",
        "x_last",
    ]
    assert site["x_site"] is extra
    assert site["x_last"] == "kept"
    assert list(site["local_controller"])[-1] == "x_lc"
    node = site["fuse_tree"][0]
    assert list(node) == ["type", "parameters", "children", "x_node"]
    assert node["x_node"] == [1, 2]
    assert list(node["parameters"]) == [*PARAMETER_KEYS, "x_param"]
    assert list(node["parameters"]["meter"])[-1] == "x_meter"
    assert node["parameters"]["meter"]["x_meter"] == 1.5
    assert list(node["parameters"]["connectors"][0])[-1] == "x_connector"
    assert node["parameters"]["connectors"][0]["x_connector"] is None
    assert node["children"][0]["x_child"] is True


def test_unknown_values_are_not_repaired_or_reported() -> None:
    issues = Issues()
    site = normalize_site(site_with(x_limit=math.nan, x_type={"a": [True]}), issues)
    assert math.isnan(site["x_limit"])
    assert site["x_type"] == {"a": [True]}
    assert issues == []


# --- input is left alone -----------------------------------------------------------------


def test_the_input_is_not_mutated() -> None:
    raw = {
        "id": 5,
        "name": 3,
        "local_controller": {"serial_no": 7, "x": [1]},
        "fuse_tree": [
            node_with({"order": "2", "limit": "x", "depth": "1"}, children="bad"),
            node_with(
                {"order": "1", "connectors": [{"charging_capability": ["1", "x"]}, "bad"]},
                children=[node_with({"order": 2}), node_with({"order": 1}), 9],
                type="Charging Station",
            ),
        ],
    }
    before = copy.deepcopy(raw)
    normalize_site(raw, Issues())
    assert raw == before


# --- ordering ------------------------------------------------------------------------------


def names(nodes: list[dict[str, Any]]) -> list[str]:
    return [node["parameters"]["name"] for node in nodes]


def test_children_are_sorted_by_order_stably_with_missing_order_last() -> None:
    children = [
        node_with({"name": "none-1"}),
        node_with({"name": "ten", "order": "10"}),
        node_with({"name": "bad", "order": "x"}),
        node_with({"name": "nine", "order": 9}),
        node_with({"name": "one-a", "order": 1}),
        node_with({"name": "none-2", "order": None}),
        node_with({"name": "one-b", "order": "1.0"}),
        node_with({"name": "minus", "order": -1.5}),
        node_with({"name": "one-c", "order": 1}),
    ]
    site = normalize_site(site_with(fuse_tree=[node_with(children=children)]))
    assert names(site["fuse_tree"][0]["children"]) == [
        "minus",
        "one-a",
        "one-b",
        "one-c",
        "nine",
        "ten",
        "none-1",
        "bad",
        "none-2",
    ]


def test_top_level_nodes_are_sorted_by_order() -> None:
    tree = [
        node_with({"name": "b", "order": "2"}),
        node_with({"name": "none"}),
        node_with({"name": "a", "order": "1"}),
    ]
    assert names(normalize_site(site_with(fuse_tree=tree))["fuse_tree"]) == ["a", "b", "none"]


def test_grandchildren_are_sorted_too() -> None:
    grandchildren = [node_with({"name": "y", "order": 2}), node_with({"name": "x", "order": 1})]
    raw = site_with(fuse_tree=[node_with(children=[node_with(children=grandchildren)])])
    site = normalize_site(raw)
    assert names(site["fuse_tree"][0]["children"][0]["children"]) == ["x", "y"]


# --- deep trees ----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [500, 2000])
def test_deep_trees_normalize_without_recursion(depth: int) -> None:
    issues = Issues()
    site = normalize_site(chain(depth), issues)
    assert issues == []
    # Walked by hand: `==` on a 2000-deep structure would itself recurse too deep.
    level = 0
    nodes = site["fuse_tree"]
    while nodes:
        assert len(nodes) == 1
        (node,) = nodes
        assert node["type"] == "fuse"
        assert node["parameters"]["name"] == f"n{level}"
        assert node["parameters"]["depth"] == level
        assert list(node["parameters"]) == PARAMETER_KEYS
        nodes = node["children"]
        level += 1
    assert level == depth


# --- issue labels ----------------------------------------------------------------------------


def test_issue_labels_are_exact_bounded_and_name_no_ids_or_values() -> None:
    raw = {
        "id": "secret-site-id",
        "name": {},
        "timezone": [],
        "local_controller": {"id": {}, "name": {}, "serial_no": {}, "device_id": {}},
        "fuse_tree": [
            "not-a-node",
            {
                "type": {},
                "parameters": {
                    "name": {},
                    "limit": "abc",
                    "inbound_limit": "abc",
                    "outbound_limit": "abc",
                    "fallback": "abc",
                    "pending_fallback_value": "abc",
                    "fallback_status": {},
                    "order": "abc",
                    "depth": "2.5",
                    "fuse_id": {},
                    "firmware_version": {},
                    "additional_comments": {},
                    "meter": {
                        "is_producer": "maybe",
                        "producer_name": {},
                        "producer_current": "abc",
                        "is_consumer": "maybe",
                        "consumer_name": {},
                        "max_possible_current": "abc",
                        "fallback_value": "abc",
                        "primary_transformer_ratio": "abc",
                        "secondary_transformer_ratio": "abc",
                    },
                    "connectors": [
                        "not-a-connector",
                        {
                            "id": {},
                            "name": {},
                            "connector_id": {},
                            "charging_station_id": {},
                            "priority": "abc",
                            "charging_capability": ["abc"],
                            "discharge_capability": "abc",
                        },
                    ],
                },
                "children": [7, {"parameters": "abc"}],
            },
            {"type": "fuse", "parameters": {"meter": "abc"}},
        ],
    }
    issues = Issues()
    normalize_site(raw, issues)
    assert sorted(issues) == sorted(ISSUE_FIELDS - {"site", "site.local_controller"})
    issues.clear()
    normalize_site(site_with(local_controller="abc"), issues)
    assert issues == ["site.local_controller"]
    assert all("secret" not in label and "abc" not in label for label in ISSUE_FIELDS)


def test_issue_fields_is_the_documented_label_set() -> None:
    documented = {
        "site",
        "site.name",
        "site.timezone",
        "site.local_controller",
        "site.fuse_tree",
        "local_controller.id",
        "local_controller.name",
        "local_controller.serial_no",
        "local_controller.device_id",
        "node.type",
        "node.parameters",
        "node.children",
        *(f"parameters.{key}" for key in PARAMETER_KEYS),
        "meter.is_producer",
        "meter.producer_name",
        "meter.producer_current",
        "meter.is_consumer",
        "meter.consumer_name",
        "meter.max_possible_current",
        "meter.fallback_value",
        "meter.primary_transformer_ratio",
        "meter.secondary_transformer_ratio",
        "connector.id",
        "connector.name",
        "connector.connector_id",
        "connector.charging_station_id",
        "connector.priority",
        "connector.charging_capability",
        "connector.discharge_capability",
    }
    assert documented == ISSUE_FIELDS


def test_issues_default_to_being_ignored() -> None:
    assert normalize_site(site_with(name={}))["name"] is None


# --- normalize_sites -------------------------------------------------------------------------


def test_normalize_sites_sorts_by_id_and_drops_unusable_sites() -> None:
    issues = Issues()
    sites = normalize_sites(
        [{"id": "b"}, "junk", {"id": 10, "name": {}}, {"name": "no id"}, {"id": "a"}], issues
    )
    assert [site["id"] for site in sites] == ["10", "a", "b"]
    assert sorted(issues) == ["site", "site", "site.name"]


def test_normalize_sites_of_nothing_is_empty() -> None:
    assert normalize_sites([]) == []
