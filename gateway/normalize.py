"""Normalization of raw upstream sites into the CONTRACT's Site shape.

This module owns the read of one untrusted upstream site: which fields exist, what type each
has, how a wrong-typed value is repaired, and the fixed set of labels (`ISSUE_FIELDS`) under
which repairs are reported. Only a site without a usable `id` is rejected as a whole
(`SiteShapeError`); every other problem is repaired field by field, so one bad value never
costs a customer a whole site.

Rules, applied the same way at every level:

- every documented field is present: an absent or null scalar is `None`, an absent list `[]`,
  an absent object (`meter`, `local_controller`) `None`; absent or null is not an issue;
- a value that can't be read as its type becomes `None` (lists: `[]`, list elements: dropped)
  and `on_issue(label)` is called once for that value, with `label` from `ISSUE_FIELDS`;
- keys the documentation doesn't know are kept, after the documented ones, with their values
  as they came. Those values are shared with the input, not copied: callers serialize the
  result, they don't mutate it;
- the input is never mutated; fuse trees are walked with an explicit stack, so depth is
  bounded by memory, not by the interpreter's recursion limit.

Pure functions: no I/O, no clock, no logging, no mutable module state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

IssueHandler = Callable[[str], None]
# A reader turns one raw value into its normalized form, reporting repairs under `label`.
Reader = Callable[[object, str, IssueHandler], Any]


class SiteShapeError(ValueError):
    """The raw site is unusable as a whole: not an object, or without a usable id."""


def _ignore(field: str) -> None:
    """Default issue handler: callers that don't count repairs needn't pass one."""


# Strict literals: `int()`/`float()` would also accept "1_000", "nan", "infinity" and
# non-ASCII digits, none of which an upstream number should be read from.
_INT_LITERAL = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_LITERAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_CAMEL_LOWER_UPPER = re.compile(r"([a-z0-9])([A-Z])")
_CAMEL_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_SEPARATORS = re.compile(r"[\W_]+")


def _read_string(value: object, label: str, on_issue: IssueHandler) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # Upstream ids sometimes arrive as JSON numbers; their decimal text is the id.
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    on_issue(label)
    return None


def _parse_number(value: object) -> int | float | None:
    """The number `value` denotes, or None when it denotes none (no issue reported here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        if _INT_LITERAL.fullmatch(text):
            try:
                return int(text)
            except ValueError:  # beyond Python's int-from-string digit limit
                return None
        if _FLOAT_LITERAL.fullmatch(text):
            number = float(text)
            return number if math.isfinite(number) else None
    return None


def _read_number(value: object, label: str, on_issue: IssueHandler) -> int | float | None:
    if value is None:
        return None
    number = _parse_number(value)
    if number is None:
        on_issue(label)
    return number


def _read_integer(value: object, label: str, on_issue: IssueHandler) -> int | None:
    if value is None:
        return None
    number = _parse_number(value)
    if isinstance(number, float):
        number = int(number) if number.is_integer() else None
    if number is None:
        on_issue(label)
    return number


def _read_bool(value: object, label: str, on_issue: IssueHandler) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    on_issue(label)
    return None


def _read_number_list(value: object, label: str, on_issue: IssueHandler) -> list[int | float]:
    if value is None:
        return []
    if not isinstance(value, list):
        on_issue(label)
        return []
    numbers: list[int | float] = []
    for element in value:
        number = _parse_number(element)
        if number is None:
            on_issue(label)
        else:
            numbers.append(number)
    return numbers


def _read_dicts(value: object, label: str, on_issue: IssueHandler) -> list[dict[str, Any]]:
    """The object elements of a list; a non-list or a non-object element is an issue."""
    if value is None:
        return []
    if not isinstance(value, list):
        on_issue(label)
        return []
    dicts: list[dict[str, Any]] = []
    for element in value:
        if isinstance(element, dict):
            dicts.append(element)
        else:
            on_issue(label)
    return dicts


def _read_object(
    raw: dict[str, Any], fields: tuple[tuple[str, Reader], ...], kind: str, on_issue: IssueHandler
) -> dict[str, Any]:
    """Documented fields in documented order, then unknown keys as they came."""
    out = {name: read(raw.get(name), f"{kind}.{name}", on_issue) for name, read in fields}
    out.update((key, value) for key, value in raw.items() if key not in out)
    return out


def _object_reader(fields: tuple[tuple[str, Reader], ...], kind: str) -> Reader:
    def read(value: object, label: str, on_issue: IssueHandler) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            on_issue(label)
            return None
        return _read_object(value, fields, kind, on_issue)

    return read


def _list_reader(fields: tuple[tuple[str, Reader], ...], kind: str) -> Reader:
    def read(value: object, label: str, on_issue: IssueHandler) -> list[dict[str, Any]]:
        raw_objects = _read_dicts(value, label, on_issue)
        return [_read_object(raw, fields, kind, on_issue) for raw in raw_objects]

    return read


def _snake_case(text: str) -> str:
    """Lower snake case: "charging station", "chargingStation", "Charging-Station" all
    become "charging_station"."""
    text = _CAMEL_ACRONYM.sub(r"\1_\2", _CAMEL_LOWER_UPPER.sub(r"\1_\2", text.strip()))
    return _SEPARATORS.sub("_", text).strip("_").lower()


def _read_type(value: object, label: str, on_issue: IssueHandler) -> str | None:
    text = _read_string(value, label, on_issue)
    if text is None:
        return None
    normalized = _snake_case(text)
    if not normalized:
        # Nothing of the type survives ("", "  ", "--"); an empty type would look meaningful.
        on_issue(label)
        return None
    return normalized


_LOCAL_CONTROLLER_FIELDS: tuple[tuple[str, Reader], ...] = (
    ("id", _read_string),
    ("name", _read_string),
    ("serial_no", _read_string),
    ("device_id", _read_string),
)
_METER_FIELDS: tuple[tuple[str, Reader], ...] = (
    ("is_producer", _read_bool),
    ("producer_name", _read_string),
    ("producer_current", _read_number),
    ("is_consumer", _read_bool),
    ("consumer_name", _read_string),
    ("max_possible_current", _read_number),
    ("fallback_value", _read_number),
    ("primary_transformer_ratio", _read_number),
    ("secondary_transformer_ratio", _read_number),
)
_CONNECTOR_FIELDS: tuple[tuple[str, Reader], ...] = (
    ("id", _read_string),
    ("name", _read_string),
    ("connector_id", _read_string),
    ("charging_station_id", _read_string),
    ("priority", _read_number),
    ("charging_capability", _read_number_list),
    ("discharge_capability", _read_number_list),
)
_PARAMETER_FIELDS: tuple[tuple[str, Reader], ...] = (
    ("name", _read_string),
    ("limit", _read_number),
    ("inbound_limit", _read_number),
    ("outbound_limit", _read_number),
    ("fallback", _read_number),
    ("pending_fallback_value", _read_number),
    ("fallback_status", _read_string),
    ("order", _read_number),
    ("depth", _read_integer),
    ("fuse_id", _read_string),
    ("firmware_version", _read_string),
    ("additional_comments", _read_string),
    ("meter", _object_reader(_METER_FIELDS, "meter")),
    ("connectors", _list_reader(_CONNECTOR_FIELDS, "connector")),
)
_SITE_FIELDS: tuple[tuple[str, Reader], ...] = (
    ("name", _read_string),
    ("timezone", _read_string),
    ("local_controller", _object_reader(_LOCAL_CONTROLLER_FIELDS, "local_controller")),
)
_NODE_KEYS = ("type", "parameters", "children")

# Every label `on_issue` can receive: the bounded value set of the `field` metric label.
ISSUE_FIELDS: frozenset[str] = frozenset(
    {"site", "site.fuse_tree", "node.type", "node.parameters", "node.children"}
    | {
        f"{kind}.{name}"
        for kind, fields in (
            ("site", _SITE_FIELDS),
            ("local_controller", _LOCAL_CONTROLLER_FIELDS),
            ("parameters", _PARAMETER_FIELDS),
            ("meter", _METER_FIELDS),
            ("connector", _CONNECTOR_FIELDS),
        )
        for name, _ in fields
    }
)


def _order_key(node: dict[str, Any]) -> tuple[bool, int | float]:
    order = node["parameters"]["order"]
    return (order is None, 0 if order is None else order)


def _node_shell(raw: dict[str, Any], on_issue: IssueHandler) -> dict[str, Any]:
    """One node with every field but its children, which the caller's stack fills in."""
    parameters = raw.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        on_issue("node.parameters")
        parameters = None
    node: dict[str, Any] = {
        "type": _read_type(raw.get("type"), "node.type", on_issue),
        "parameters": _read_object(parameters or {}, _PARAMETER_FIELDS, "parameters", on_issue),
        "children": [],
    }
    node.update((key, value) for key, value in raw.items() if key not in _NODE_KEYS)
    return node


def _read_fuse_tree(value: object, on_issue: IssueHandler) -> list[dict[str, Any]]:
    top_level: list[dict[str, Any]] = []
    # (raw list of nodes, output list to fill, label for a bad list or element)
    pending: list[tuple[object, list[dict[str, Any]], str]] = [(value, top_level, "site.fuse_tree")]
    while pending:
        raw_nodes, siblings, label = pending.pop()
        for raw in _read_dicts(raw_nodes, label, on_issue):
            node = _node_shell(raw, on_issue)
            siblings.append(node)
            pending.append((raw.get("children"), node["children"], "node.children"))
        # Every sibling's parameters are read by now, so the order is known; sort is stable.
        siblings.sort(key=_order_key)
    return top_level


def normalize_site(raw: object, on_issue: IssueHandler = _ignore) -> dict[str, Any]:
    """The CONTRACT's Site for one raw upstream site.

    Raises SiteShapeError when `raw` is not an object or has no id readable as a non-empty
    string; `on_issue` gets one call per repaired value otherwise.
    """
    if not isinstance(raw, dict):
        raise SiteShapeError(f"site is a {type(raw).__name__}, not an object")
    site_id = _read_string(raw.get("id"), "site.id", _ignore)
    if not site_id:  # any non-empty string is an id (the contract: " " is one too)
        raise SiteShapeError("site has no usable id")
    site: dict[str, Any] = {"id": site_id}
    site.update(
        (name, read(raw.get(name), f"site.{name}", on_issue)) for name, read in _SITE_FIELDS
    )
    site["fuse_tree"] = _read_fuse_tree(raw.get("fuse_tree"), on_issue)
    site.update((key, value) for key, value in raw.items() if key not in site)
    return site


def normalize_sites(
    raw_list: list[object], on_issue: IssueHandler = _ignore
) -> list[dict[str, Any]]:
    """Every usable site, sorted by id; an unusable one is dropped and reported as "site"."""
    sites: list[dict[str, Any]] = []
    for raw in raw_list:
        try:
            sites.append(normalize_site(raw, on_issue))
        except SiteShapeError:
            on_issue("site")
    sites.sort(key=lambda site: site["id"])
    return sites
