"""The OpenAPI 3.1 description of the gateway, built from plain data: every route with its
`operationId`, tag, parameters, answers and headers (a test checks it against the real
router, and schemathesis runs against it in the suite).

Security is declared where it applies: bearer client tokens on the data endpoints when
`GATEWAY_CLIENT_TOKENS` is set, the admin token on `/admin/*`, nothing on the operational
endpoints.  `HEAD` is described beside every `GET`: the same answers, no body.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .fleet import DEFAULT_LIMIT, MAX_LIMIT
from .ids import MAX_ID_LENGTH
from .openapi_changes import CHANGE_EVENT, changes_path
from .openapi_schemas import events_parameters, limit_parameter, schemas
from .settings import Settings

_PROBLEM = {"$ref": "#/components/responses/Problem"}
# One path segment: any character but the control characters (the contract's id rule).
ID_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
_ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": ID_PATTERN}
_ID = {"name": "id", "in": "path", "required": True, "schema": _ID_SCHEMA, "example": "site-0002"}
_CONNECTOR_ID = {**_ID, "example": "site-0002-cs-001-c1"}
_DATA_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "strong validator, one per coding"},
    "Age": {"schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "Cache-Status": {"schema": {"type": "string"}, "description": "RFC 9211"},
    "Vary": {"schema": {"type": "string"}},
    "X-Request-ID": {"schema": {"type": "string"}},
}
_DATA_ERRORS = ("400", "401", "406", "429", "502", "503", "504")


def _account(settings: Settings) -> dict[str, Any]:
    return {
        "name": "account",
        "in": "query",
        "schema": {"type": "string", "enum": [account.name for account in settings.accounts]},
        "description": "only this upstream account's data (a name from the accounts file)",
    }


_UNAVAILABLE = {
    "type": "array",
    "items": {"type": "string"},
    "description": "several accounts: those whose upstream failed with nothing stale held; "
    "the list holds the others' data",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _DATA_HEADERS,
        "content": {"application/json": {"schema": schema}},
    }


def _list_of(ref: str, paged: bool = False, merged: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"data": {"type": "array", "items": {"$ref": ref}}}
    if paged:
        properties["next_cursor"] = {"type": ["string", "null"]}
    required = list(properties)
    if merged:
        properties["unavailable_accounts"] = _UNAVAILABLE
    return {"type": "object", "required": required, "properties": properties}


def _operations(
    operation_id: str,
    tag: str,
    summary: str,
    responses: dict[str, Any],
    *,
    params: list[Any] | None = None,
    security: list[Any] | None = None,
) -> dict[str, Any]:
    """GET and HEAD of one route."""
    get: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "parameters": params or [],
        "responses": responses,
    }
    if security is not None:
        get["security"] = security
    head_responses = {
        code: {"description": answer.get("description", "as GET, without a body")}
        if isinstance(answer, dict) and "content" in answer
        else answer
        for code, answer in responses.items()
    }
    head = {**get, "operationId": f"{operation_id}Head", "responses": head_responses}
    head["summary"] = f"{summary} (headers only)"
    return {"get": get, "head": head}


def _data(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[Any] | None = None,
    not_found: bool = False,
    tag: str = "sites",
    security: list[Any] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok, "304": {"description": "Not Modified (If-None-Match)"}}
    codes = [*_DATA_ERRORS, *(["404", "409"] if not_found else [])]
    responses.update({code: _PROBLEM for code in sorted(codes)})
    return _operations(operation_id, tag, summary, responses, params=params, security=security)


def document(settings: Settings) -> dict[str, Any]:
    site, connector, node = (
        "#/components/schemas/Site",
        "#/components/schemas/Connector",
        "#/components/schemas/Node",
    )
    clients: list[Any] | None = [{"client": []}] if settings.client_tokens else None
    text = {"type": "string", "maxLength": 256, "pattern": ID_PATTERN}
    account = _account(settings)
    by_id = [_ID, account]
    connector_filters = [
        account,
        {"name": "site_id", "in": "query", "schema": _ID_SCHEMA, "example": "site-0003"},
        {
            "name": "charging_station_id",
            "in": "query",
            "schema": text,
            "example": "CS-0003-002",
        },
        {
            "name": "v2g",
            "in": "query",
            "schema": {"type": "string", "enum": ["true", "false"]},
            "example": "true",
        },
        limit_parameter(MAX_LIMIT, DEFAULT_LIMIT),
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "string", "minLength": 1, "maxLength": 4096},
            "description": "opaque; from next_cursor of the previous page, same filters",
        },
    ]
    paths: dict[str, Any] = {
        "/sites": _data(
            "listSites",
            "All sites, normalized (every account's, merged by id)",
            _json(_list_of(site, merged=True), "sites"),
            params=[account],
            security=clients,
        ),
        "/sites/{id}": _data(
            "getSite",
            "One site",
            _json({"$ref": site}, "the site"),
            params=by_id,
            not_found=True,
            security=clients,
        ),
        "/sites/{id}/connectors": _data(
            "listSiteConnectors",
            "The site's connectors, flattened",
            _json(_list_of(connector), "connectors"),
            params=by_id,
            not_found=True,
            tag="connectors",
            security=clients,
        ),
        "/sites/{id}/nodes": _data(
            "listSiteNodes",
            "The site's fuse tree, flattened",
            _json(_list_of(node), "nodes"),
            params=by_id,
            not_found=True,
            security=clients,
        ),
        "/sites/{id}/charging-events": _data(
            "listSiteChargingEvents",
            "The site's charging events (upstream GET /charging-events/site/{id}), cached for "
            f"{settings.events_ttl:g} s per normalized query",
            _json({"$ref": "#/components/schemas/ChargingEvents"}, "charging events"),
            params=[*by_id, *events_parameters()],
            not_found=True,
            tag="events",
            security=clients,
        ),
        "/connectors": _data(
            "listConnectors",
            "Every connector of every site, filtered and paged",
            _json(_list_of(connector, paged=True, merged=True), "a page"),
            params=connector_filters,
            tag="connectors",
            security=clients,
        ),
        "/connectors/{id}": _data(
            "getConnector",
            "One connector",
            _json({"$ref": connector}, "connector"),
            params=[_CONNECTOR_ID, account],
            not_found=True,
            tag="connectors",
            security=clients,
        ),
        "/healthz": _operations(
            "health",
            "operations",
            "Liveness",
            {"200": _plain_json({"type": "object"}, "the process runs")},
            security=[],
        ),
        "/readyz": _operations(
            "readiness",
            "operations",
            "Readiness and which parts are up",
            {
                "200": _plain_json({"$ref": "#/components/schemas/Readiness"}, "can serve"),
                "503": _plain_json({"$ref": "#/components/schemas/Readiness"}, "cannot serve"),
            },
            security=[],
        ),
        "/openapi.json": _operations(
            "openapi",
            "operations",
            "This document",
            {"200": _plain_json({"type": "object"}, "OpenAPI 3.1")},
            security=[],
        ),
        "/changes": _changes(changes_path(_PROBLEM), account, clients),
        "/admin/purge": {
            "post": {
                "operationId": "purge",
                "tags": ["admin"],
                "summary": "Drop cached entries (all, or one site's)",
                "security": [{"admin": []}],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"site_id": _ID_SCHEMA},
                            }
                        }
                    }
                },
                "responses": {
                    "200": _plain_json({"$ref": "#/components/schemas/Purged"}, "purged"),
                    **{code: _PROBLEM for code in ("400", "401", "403", "404", "503")},
                },
            }
        },
    }
    if settings.metrics_port is None:
        paths["/metrics"] = _operations(
            "metrics",
            "operations",
            "Prometheus text exposition",
            {
                "200": {
                    "description": "metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
            security=[],
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chargepilot-gateway",
            "version": __version__,
            "description": (
                "Caching gateway for ChargePilot's Sites API. Data is fresh for "
                f"{settings.cache_ttl:g} s and may be served stale for {settings.cache_stale:g} s "
                f"more; upstream 404s are remembered {settings.negative_ttl:g} s; upstream calls "
                f"are capped at {settings.upstream_rps:g}/s across all replicas."
            ),
        },
        "tags": [
            {"name": "sites", "description": "Sites and their fuse trees"},
            {"name": "connectors", "description": "Connectors, flattened"},
            {"name": "events", "description": "Charging events, passed through and cached"},
            {"name": "changes", "description": "What changed upstream, site by site"},
            {"name": "operations", "description": "Health, readiness, metrics, this document"},
            {"name": "admin", "description": "Cache administration"},
        ],
        "paths": paths,
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
            "schemas": {**schemas(), "ChangeEvent": CHANGE_EVENT},
        },
    }


def _plain_json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _changes(item: dict[str, Any], account: dict[str, Any], security: list[Any] | None) -> Any:
    """/changes as `_operations` describes every route.  Only the JSON pages are described
    as content: the event stream (`Accept: text/event-stream`) never ends, so no schema
    checker could read it; its format is in the description."""
    get = item["get"]
    ok = get["responses"]["200"]
    ok["content"] = {"application/json": ok["content"]["application/json"]}
    ok["description"] += (
        "; with Accept: text/event-stream, Server-Sent Events instead: id (the event id), "
        "event (site.created, site.updated, site.deleted, or reset first when the position is "
        "older than what is kept), data (the ChangeEvent); a comment line every 15 s"
    )
    responses = {**get["responses"], "406": _PROBLEM}
    return _operations(
        "listChanges",
        "changes",
        get["summary"],
        responses,
        params=[*get["parameters"], account],
        security=security,
    )
