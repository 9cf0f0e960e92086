"""The OpenAPI 3.1 description of the gateway, built from plain data (checked against the
real router by a test, so the two cannot drift apart)."""

from __future__ import annotations

from typing import Any

from .fleet import DEFAULT_LIMIT, MAX_LIMIT
from .openapi_schemas import events_parameters, schemas
from .settings import Settings

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^/\\\\]+$"},
}
_CACHED_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "strong validator"},
    "Age": {"schema": {"type": "integer"}},
    "Cache-Status": {"schema": {"type": "string"}, "description": "RFC 9211"},
    "X-Request-ID": {"schema": {"type": "string"}},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _CACHED_HEADERS,
        "content": {"application/json": {"schema": schema}},
    }


_ACCOUNT = {
    "name": "account",
    "in": "query",
    "schema": {"type": "string"},
    "description": "only this upstream account's data (a name from the accounts file)",
}
_UNAVAILABLE = {
    "type": "array",
    "items": {"type": "string"},
    "description": "several accounts: those whose upstream failed with nothing stale held; "
    "the list holds the others' data",
}


def _list_of(ref: str, paged: bool = False, merged: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"data": {"type": "array", "items": {"$ref": ref}}}
    if paged:
        properties["next_cursor"] = {"type": ["string", "null"]}
    required = list(properties)
    if merged:
        properties["unavailable_accounts"] = _UNAVAILABLE
    return {"type": "object", "required": required, "properties": properties}


def _data_get(
    summary: str, ok: dict[str, Any], *, params: list[Any] | None = None, not_found: bool = False
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok, "304": {"description": "Not Modified (If-None-Match)"}}
    codes = ["400", "401", "429", "502", "503", "504"] + (["404", "409"] if not_found else [])
    responses.update({code: _PROBLEM for code in sorted(codes)})
    return {"get": {"summary": summary, "parameters": params or [], "responses": responses}}


def document(settings: Settings) -> dict[str, Any]:
    site, connector, node = (
        "#/components/schemas/Site",
        "#/components/schemas/Connector",
        "#/components/schemas/Node",
    )
    by_id = [_ID, _ACCOUNT]
    connector_filters = [
        _ACCOUNT,
        {"name": "site_id", "in": "query", "schema": {"type": "string"}},
        {"name": "charging_station_id", "in": "query", "schema": {"type": "string"}},
        {"name": "v2g", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}},
        {
            "name": "limit",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
            },
        },
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "string"},
            "description": "opaque; from next_cursor of the previous page, same filters",
        },
    ]
    paths: dict[str, Any] = {
        "/sites": _data_get(
            "All sites, normalized (every account's, merged by id)",
            _json(_list_of(site, merged=True), "sites"),
            params=[_ACCOUNT],
        ),
        "/sites/{id}": _data_get(
            "One site", _json({"$ref": site}, "the site"), params=by_id, not_found=True
        ),
        "/sites/{id}/connectors": _data_get(
            "The site's connectors, flattened",
            _json(_list_of(connector), "connectors"),
            params=by_id,
            not_found=True,
        ),
        "/sites/{id}/nodes": _data_get(
            "The site's fuse tree, flattened",
            _json(_list_of(node), "nodes"),
            params=by_id,
            not_found=True,
        ),
        "/sites/{id}/charging-events": _data_get(
            "The site's charging events (upstream GET /charging-events/site/{id}), cached for "
            f"{settings.events_ttl:g} s per normalized query",
            _json({"$ref": "#/components/schemas/ChargingEvents"}, "charging events"),
            params=[*by_id, *events_parameters()],
            not_found=True,
        ),
        "/connectors": _data_get(
            "Every connector of every site, filtered and paged",
            _json(_list_of(connector, paged=True, merged=True), "a page"),
            params=connector_filters,
        ),
        "/connectors/{id}": _data_get(
            "One connector", _json({"$ref": connector}, "connector"), params=by_id, not_found=True
        ),
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "up"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness and which parts are up",
                "responses": {
                    "200": {"description": "can serve"},
                    "503": {"description": "cannot serve"},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
        "/admin/purge": {
            "post": {
                "summary": "Drop cached entries (all, or one site's)",
                "security": [{"admin": []}],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"site_id": {"type": "string"}},
                            }
                        }
                    }
                },
                "responses": {
                    "200": {"description": "purged"},
                    **{code: _PROBLEM for code in ("400", "401", "403", "404")},
                },
            }
        },
    }
    if settings.metrics_port is None:
        paths["/metrics"] = {
            "get": {
                "summary": "Prometheus text exposition",
                "responses": {"200": {"description": "metrics"}},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chargepilot-gateway",
            "version": "1.0.0",
            "description": (
                "Caching gateway for ChargePilot's Sites API. Data is fresh for "
                f"{settings.cache_ttl:g} s and may be served stale for {settings.cache_stale:g} s "
                f"more; upstream 404s are remembered {settings.negative_ttl:g} s; upstream calls "
                f"are capped at {settings.upstream_rps:g}/s across all replicas."
            ),
        },
        "paths": paths,
        "security": [{"client": []}] if settings.client_tokens else [],
        "components": {
            "securitySchemes": {
                "client": {"type": "http", "scheme": "bearer"},
                "admin": {"type": "http", "scheme": "bearer"},
            },
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
            "schemas": schemas(),
        },
    }
