"""The JSON Schemas of the gateway's answers and the charging-events parameters (parts of
the OpenAPI document, `openapi.py`), as plain data."""

from __future__ import annotations

from typing import Any

from .events import MAX_SKIP, MAX_TAKE, SORT_FIELDS, SORT_ORDERS


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


def events_parameters() -> list[dict[str, Any]]:
    instant = {
        "type": "string",
        "description": "ISO 8601 date or date-time, offset optional (Z, +01:00)",
        "examples": ["2025-01-01", "2025-01-01T08:00:00+01:00", "2025-01-01T07:00:00Z"],
    }
    return [
        {"name": "from", "in": "query", "schema": instant},
        {"name": "to", "in": "query", "schema": instant},
        {
            "name": "take",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TAKE},
        },
        {
            "name": "skip",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SKIP},
        },
        {"name": "sort_field", "in": "query", "schema": {"type": "string", "enum": SORT_FIELDS}},
        {"name": "sort_order", "in": "query", "schema": {"type": "string", "enum": SORT_ORDERS}},
    ]


def schemas() -> dict[str, Any]:
    number, string = _nullable("number"), _nullable("string")
    account = {"type": "string", "description": "its upstream account (several accounts only)"}
    path_step = {
        "type": "object",
        "properties": {"type": string, "name": string, "fuse_id": string},
    }
    return {
        "Readiness": {
            "type": "object",
            "required": ["ready", "cache", "redis", "upstream", "degraded"],
            "properties": {
                "ready": {"type": "boolean"},
                "cache": {"enum": ["redis", "memory"]},
                "redis": {"enum": ["up", "down", "absent"]},
                "upstream": {"type": "object"},
                "degraded": {"type": "boolean"},
            },
        },
        "Purged": {
            "type": "object",
            "required": ["purged", "keys"],
            "properties": {"purged": {"type": "string"}, "keys": {"type": "integer"}},
        },
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail", "request_id"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "request_id": {"type": "string"},
            },
        },
        "ChargingEvents": {
            "type": "object",
            "required": ["data", "count", "truncated"],
            "properties": {
                "data": {"type": "array", "items": {"type": "object"}},
                "count": {"type": "integer", "description": "events in this answer"},
                "truncated": {"type": "boolean", "description": "more events match"},
            },
        },
        "Site": {
            "type": "object",
            "required": ["id", "name", "timezone", "local_controller", "fuse_tree"],
            "properties": {
                "id": {"type": "string"},
                "account": account,
                "name": string,
                "timezone": string,
                "local_controller": _nullable("object"),
                "fuse_tree": {"type": "array", "items": {"$ref": "#/components/schemas/FuseNode"}},
            },
        },
        "FuseNode": {
            "type": "object",
            "required": ["type", "parameters", "children"],
            "properties": {
                "type": string,
                "parameters": {"type": "object"},
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/FuseNode"}},
            },
        },
        "Connector": {
            "type": "object",
            "required": [
                "id",
                "site_id",
                "site_name",
                "node_name",
                "path",
                "effective_limit",
                "max_charging_current",
                "v2g",
            ],
            "properties": {
                "id": string,
                "name": string,
                "connector_id": string,
                "charging_station_id": string,
                "priority": number,
                "charging_capability": {"type": "array", "items": {"type": "number"}},
                "discharge_capability": {"type": "array", "items": {"type": "number"}},
                "site_id": {"type": "string"},
                "account": account,
                "site_name": string,
                "node_name": string,
                "path": {"type": "array", "items": path_step},
                "effective_limit": number,
                "max_charging_current": number,
                "v2g": {"type": "boolean"},
            },
        },
        "Node": {
            "type": "object",
            "required": [
                "node_id",
                "parent_id",
                "depth",
                "type",
                "name",
                "limit",
                "effective_limit",
                "connector_count",
            ],
            "properties": {
                "node_id": {"type": "string"},
                "parent_id": string,
                "depth": {"type": "integer"},
                "type": string,
                "name": string,
                "fuse_id": string,
                "limit": number,
                "effective_limit": number,
                "connector_count": {"type": "integer"},
                "connector_count_total": {"type": "integer"},
            },
        },
    }


def limit_parameter(maximum: int, default: int) -> dict[str, Any]:
    """The `limit` query parameter of a paged list."""
    schema = {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}
    return {"name": "limit", "in": "query", "schema": schema}
