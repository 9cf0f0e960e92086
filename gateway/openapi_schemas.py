"""The JSON Schemas of the gateway's answers (components of the OpenAPI document)."""

from __future__ import annotations

from typing import Any


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


def schemas() -> dict[str, Any]:
    number, string = _nullable("number"), _nullable("string")
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
        "Site": {
            "type": "object",
            "required": ["id", "name", "timezone", "local_controller", "fuse_tree"],
            "properties": {
                "id": {"type": "string"},
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
