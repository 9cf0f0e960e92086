"""Flat views of a normalized site's fuse tree: its connectors and its nodes.

This module owns where a connector or node sits in its site: the path from the top of the
tree, the effective limit (the smallest `limit` on that path, since every fuse above caps
what flows below it), and the positional node ids. Input is a site as `normalize_site`
returns it, so every documented field is present with its normalized type; nothing here
re-validates. Trees are walked with an explicit stack, so depth is bounded by memory, not
by the interpreter's recursion limit. Duplicate connector ids are never merged: both
entries are kept and `duplicate_connector_ids` reports them.

Pure functions: no I/O, no clock, no logging, no mutable module state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

# One step of a connector's path, linked to its parent's step, so a node's path is shared
# with its ancestors' and only materialized for nodes that carry connectors; copying it at
# every node would cost depth² on a deep chain.
_PathLink = tuple[dict[str, Any], "_PathLink | None"]


def _tighter(limit: int | float | None, node_limit: int | float | None) -> int | float | None:
    """The effective limit below a node: the smaller of the two, ignoring a missing one."""
    if node_limit is None:
        return limit
    if limit is None:
        return node_limit
    return min(limit, node_limit)


def _materialize(link: _PathLink | None) -> list[dict[str, Any]]:
    path: list[dict[str, Any]] = []
    while link is not None:
        step, link = link
        # A fresh dict per connector, so no two output entries alias the same object.
        path.append(dict(step))
    path.reverse()
    return path


def _connector_id_key(connector: dict[str, Any]) -> tuple[bool, str]:
    connector_id = connector.get("id")
    return (connector_id is None, connector_id or "")


def flatten_connectors(site: dict[str, Any]) -> list[dict[str, Any]]:
    """Every connector of the site's fuse tree with its place in the site, sorted by id.

    The order is connector id in string order, null ids last, ties in tree order, because
    the gateway pages over (site_id, connector id). Derived keys (`site_id`, `path`, ...)
    come after the connector's own fields and win over an upstream key of the same name.
    """
    connectors: list[dict[str, Any]] = []
    # (node, path link of its parent, effective limit above it); reversed so pops are in order
    pending: list[tuple[dict[str, Any], _PathLink | None, int | float | None]] = [
        (node, None, None) for node in reversed(site["fuse_tree"])
    ]
    while pending:
        node, parent_link, limit_above = pending.pop()
        parameters = node["parameters"]
        step = {"type": node["type"], "name": parameters["name"], "fuse_id": parameters["fuse_id"]}
        link: _PathLink = (step, parent_link)
        effective_limit = _tighter(limit_above, parameters["limit"])
        for connector in parameters["connectors"]:
            charging = connector["charging_capability"]
            connectors.append(
                {
                    **connector,
                    "site_id": site["id"],
                    "site_name": site["name"],
                    "node_name": parameters["name"],
                    "path": _materialize(link),
                    "effective_limit": effective_limit,
                    "max_charging_current": max(charging) if charging else None,
                    "v2g": len(connector["discharge_capability"]) > 0,
                }
            )
        pending.extend((child, link, effective_limit) for child in reversed(node["children"]))
    connectors.sort(key=_connector_id_key)
    return connectors


def flatten_nodes(site: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of the site's fuse tree, pre-order (a parent before its children).

    `node_id` is positional: the index path from the top ("0", "0.2", "0.2.1"), so it is
    stable while the tree is unchanged and shifts when siblings before it are added or
    removed; upstream nodes carry no id of their own. `depth` is the position (0 at the
    top), not `parameters.depth`. `connector_count` counts the connectors carried by this
    node itself, `connector_count_total` those of its whole subtree.
    """
    nodes: list[dict[str, Any]] = []
    parent_index: list[int | None] = []
    # (node, node_id, index of its parent in `nodes`, depth, effective limit above it)
    pending: list[tuple[dict[str, Any], str, int | None, int, int | float | None]] = [
        (node, str(position), None, 0, None)
        for position, node in reversed(list(enumerate(site["fuse_tree"])))
    ]
    while pending:
        node, node_id, parent, depth, limit_above = pending.pop()
        parameters = node["parameters"]
        effective_limit = _tighter(limit_above, parameters["limit"])
        index = len(nodes)
        nodes.append(
            {
                "node_id": node_id,
                "parent_id": None if parent is None else nodes[parent]["node_id"],
                "depth": depth,
                "type": node["type"],
                "name": parameters["name"],
                "fuse_id": parameters["fuse_id"],
                "limit": parameters["limit"],
                "effective_limit": effective_limit,
                "connector_count": len(parameters["connectors"]),
                "connector_count_total": len(parameters["connectors"]),
            }
        )
        parent_index.append(parent)
        pending.extend(
            (child, f"{node_id}.{position}", index, depth + 1, effective_limit)
            for position, child in reversed(list(enumerate(node["children"])))
        )
    # In reversed pre-order every node comes after all of its descendants, so one pass
    # carries each subtree's total up to its parent without recursion.
    for index in range(len(nodes) - 1, -1, -1):
        parent = parent_index[index]
        if parent is not None:
            nodes[parent]["connector_count_total"] += nodes[index]["connector_count_total"]
    return nodes


def duplicate_connector_ids(connectors: Iterable[dict[str, Any]]) -> list[str]:
    """Connector ids that occur more than once, sorted; null ids are not ids and are ignored."""
    counts = Counter(connector["id"] for connector in connectors if connector.get("id") is not None)
    return sorted(connector_id for connector_id, count in counts.items() if count > 1)
