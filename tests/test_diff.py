"""The structural diff (`gateway/diff.py`) and the deep-document JSON reader it relies on."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from gateway.diff import MAX_CHANGES, diff_sites
from gateway.jsonutil import dumps, loads
from gateway.normalize import normalize_site
from gateway.simulator import demo_fleet


def node(name: str, fuse_id: str | None = None, **parameters: Any) -> dict[str, Any]:
    return {
        "type": "fuse",
        "parameters": {"name": name, "fuse_id": fuse_id, "limit": 32, "connectors": [],
                       **parameters},
        "children": [],
    }  # fmt: skip


def site(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"id": "s1", "name": "Depot", "fuse_tree": list(nodes)}


def paths(before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    return [(c["path"], c["before"], c["after"]) for c in diff_sites(before, after).changes]


def test_nothing_changed_is_no_change() -> None:
    normalized = normalize_site(demo_fleet()[0])
    assert diff_sites(normalized, copy.deepcopy(normalized)).changes == []


def test_a_limit_deep_in_the_tree() -> None:
    before = site(node("Main", "F1"), node("Second", "F2"))
    before["fuse_tree"][0]["children"] = [node("A", "F1a"), node("B", "F1b")]
    after = copy.deepcopy(before)
    after["fuse_tree"][0]["children"][1]["parameters"]["limit"] = 63
    assert paths(before, after) == [("fuse_tree/0/children/1/parameters/limit", 32, 63)]


def test_children_are_matched_by_identity_so_a_reordering_is_no_change() -> None:
    before = site(node("Main", "F1"), node("Second", "F2"), node("Third", "F3"))
    after = copy.deepcopy(before)
    after["fuse_tree"].reverse()
    assert paths(before, after) == []
    # A change in a moved node is reported at its position in the new document.
    after["fuse_tree"][0]["parameters"]["limit"] = 40  # "Third", first now
    assert paths(before, after) == [("fuse_tree/0/parameters/limit", 32, 40)]


def test_siblings_sharing_a_fuse_id_are_matched_by_name() -> None:
    # Charging stations carry their fuse's fuse_id: it identifies none of them.
    stations = [node(f"CS {n}", "F-0001") for n in range(1, 4)]
    before = site(node("Main", "F-0001"))
    before["fuse_tree"][0]["children"] = stations
    after = copy.deepcopy(before)
    children = after["fuse_tree"][0]["children"]
    children.reverse()
    children[2]["parameters"]["limit"] = 16  # CS 1
    assert paths(before, after) == [("fuse_tree/0/children/2/parameters/limit", 32, 16)]


def test_nodes_without_any_identity_pair_up_in_order() -> None:
    anonymous = {"type": "fuse", "parameters": {"limit": 10}, "children": []}
    before = site(anonymous, copy.deepcopy(anonymous))
    after = copy.deepcopy(before)
    after["fuse_tree"][1]["parameters"]["limit"] = 20
    assert paths(before, after) == [("fuse_tree/1/parameters/limit", 10, 20)]


def test_connectors_added_removed_and_reordered() -> None:
    connectors = [{"id": f"c{n}", "name": f"C{n}", "charging_capability": [32, 32, 32]}
                  for n in range(1, 4)]  # fmt: skip
    before = site(node("CS", "F1", connectors=connectors))
    after = copy.deepcopy(before)
    listed = after["fuse_tree"][0]["parameters"]["connectors"]
    removed = listed.pop(0)  # c1 goes
    listed.reverse()  # c3, c2: no change by itself
    added = {"id": "c4", "name": "C4", "charging_capability": [16]}
    listed.append(added)
    assert paths(before, after) == [
        ("fuse_tree/0/parameters/connectors/2", None, added),
        ("fuse_tree/0/parameters/connectors/0", removed, None),  # its place in the old list
    ]


def test_a_list_of_values_is_one_change() -> None:
    before = site(node("CS", "F1", connectors=[{"id": "c1", "charging_capability": [32] * 3}]))
    after = copy.deepcopy(before)
    after["fuse_tree"][0]["parameters"]["connectors"][0]["charging_capability"] = [16, 16]
    assert paths(before, after) == [
        ("fuse_tree/0/parameters/connectors/0/charging_capability", [32, 32, 32], [16, 16])
    ]


def test_values_differ_as_json_does() -> None:
    for old, new in ((1, 1.0), (1, True), (0, False), (None, 0), ("1", 1), ([], {})):
        assert paths({"v": old}, {"v": new}) == [("v", old, new)]
    assert paths({"v": 1.5}, {"v": 1.5}) == []


def test_fields_added_and_removed_and_keys_escaped() -> None:
    before = {"id": "s", "gone": 1, "a/b": 1, "t~": {"x": 1}}
    after = {"id": "s", "new": [1], "a/b": 2, "t~": {"x": 2}}
    assert paths(before, after) == [
        ("new", None, [1]),
        ("a~1b", 1, 2),
        ("t~0/x", 1, 2),
        ("gone", 1, None),
    ]


def test_at_most_max_changes_then_truncated() -> None:
    before = {f"k{n:03d}": n for n in range(MAX_CHANGES + 5)}
    after = {key: value + 1 for key, value in before.items()}
    diff = diff_sites(before, after)
    assert len(diff.changes) == MAX_CHANGES and diff.truncated
    assert diff.changes[0] == {"path": "k000", "before": 0, "after": 1}
    exact = {key: before[key] for key in list(before)[:MAX_CHANGES]}
    assert not diff_sites(exact, {k: v + 1 for k, v in exact.items()}).truncated


def deep_site(depth: int, limit: int) -> dict[str, Any]:
    top = node("level 0", "F0")
    current = top
    for level in range(1, depth):
        child = node(f"level {level}", f"F{level}")
        current["children"].append(child)
        current = child
    current["parameters"]["limit"] = limit
    return site(top)


def test_a_tree_thousands_deep_needs_no_recursion() -> None:
    depth = 3000
    before, after = deep_site(depth, 10), deep_site(depth, 20)
    (path, old, new), *rest = paths(before, after)
    assert rest == [] and (old, new) == (10, 20)
    assert path == "fuse_tree/0/" + "children/0/" * (depth - 1) + "parameters/limit"
    # Stored bodies of such trees are read back without orjson's depth limit.
    body = dumps(before)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert dumps(loads(body)) == body


@pytest.mark.parametrize(
    "document",
    [b"{}", b"[]", b'"s"', b"-1.5e3", b' {"a" : [true, false, null, {"b": []}], "\\u00e9": 1} '],
)
def test_loads_agrees_with_orjson(document: bytes) -> None:
    from gateway.jsonutil import _loads_iterative

    assert _loads_iterative(document) == orjson.loads(document)


@pytest.mark.parametrize(
    "document",
    [b"", b"{", b"[1,]", b'{"a"}', b'{"a":1 "b":2}', b"[1 2]", b"{1:2}", b"[}", b'{"a":1}x',
     b'{"a":,}', b"{,}", b"[,1]", b'{"a":1,}', b"nul"],
)  # fmt: skip
def test_loads_rejects_what_is_no_json(document: bytes) -> None:
    from gateway.jsonutil import _loads_iterative

    with pytest.raises(ValueError):
        _loads_iterative(document)
