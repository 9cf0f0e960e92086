"""HTTP views: parse and validate input, call the site service, shape the answer.

Knows HTTP (ETag/If-None-Match, Age, Cache-Status) and nothing of caching decisions.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from .app_keys import CURSORS, METRICS, READINESS, SERVICE, SETTINGS
from .cache import make_etag
from .errors import BadRequest
from .fleet import Rendered, parse_query
from .middleware import RESULT_KEY
from .openapi import document
from .service import Served

MAX_ID_LENGTH = 256
JSON = "application/json"


def validate_id(value: str, what: str) -> str:
    """Ids travel upstream as one path segment: refuse anything that could be more."""
    if not value or len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{what} must be 1 to {MAX_ID_LENGTH} characters")
    if value in (".", "..") or "/" in value or "\\" in value:
        raise BadRequest(f"{what} must not contain '/', '\\\\' or be '.' or '..'")
    if any(ord(char) < 32 or 127 <= ord(char) < 160 for char in value):
        raise BadRequest(f"{what} must not contain control characters")
    return value


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    for candidate in if_none_match.split(","):
        candidate = candidate.strip().removeprefix("W/")
        if candidate == etag:
            return True
    return False


def respond(request: web.Request, served: Served, derived: Rendered | None = None) -> web.Response:
    """200 with the entry (or a body `derived` from it), or 304 when the client has it."""
    payload = served.entry.body if derived is None else derived.body
    etag = f'"{served.entry.etag if derived is None else derived.etag}"'
    request[RESULT_KEY] = served.result
    headers = {
        "ETag": etag,
        "Age": str(int(served.age)),
        "Cache-Status": served.cache_status,
        "Cache-Control": "no-cache",
    }
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and _matches(if_none_match, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=payload, content_type=JSON, headers=headers)


async def list_sites(request: web.Request) -> web.Response:
    served = await request.app[SERVICE].sites("/sites")
    return respond(request, served)


async def get_site(request: web.Request) -> web.Response:
    site_id = validate_id(request.match_info["id"], "site id")
    served = await request.app[SERVICE].site("/sites/{id}", site_id)
    return respond(request, served)


async def site_connectors(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    site_id = validate_id(request.match_info["id"], "site id")
    key = service.keys.site_connectors(site_id)
    return respond(request, await service.site("/sites/{id}/connectors", site_id, key))


async def site_nodes(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    site_id = validate_id(request.match_info["id"], "site id")
    key = service.keys.site_nodes(site_id)
    return respond(request, await service.site("/sites/{id}/nodes", site_id, key))


async def list_connectors(request: web.Request) -> web.Response:
    query = parse_query(request.query, request.app[CURSORS])
    if query.site_id is not None:
        validate_id(query.site_id, "site_id")
    index, served = await request.app[SERVICE].fleet_index("/connectors")
    rendered = index.rendered.get(query)
    if rendered is None:
        page, after = index.page(query)
        cursor = request.app[CURSORS].encode(query, after) if after is not None else None
        body = orjson.dumps({"data": page, "next_cursor": cursor})
        rendered = index.rendered.put(query, Rendered(body, make_etag(body)))
    return respond(request, served, rendered)


async def get_connector(request: web.Request) -> web.Response:
    connector_id = validate_id(request.match_info["id"], "connector id")
    served = await request.app[SERVICE].connector("/connectors/{id}", connector_id)
    return respond(request, served)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, dumps=_dumps)


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[READINESS]()
    return web.json_response(report, status=200 if report["ready"] else 503, dumps=_dumps)


async def metrics(request: web.Request) -> web.Response:
    return await metrics_view(request.app, request)


async def metrics_view(app: web.Application, request: web.Request) -> web.Response:
    app_metrics = app[METRICS]
    service = app[SERVICE]
    now = time.time()
    for site_id, stored_at in service.site_stored_at.items():
        app_metrics.site_data_age.labels(site_id).set(round(now - stored_at, 3))
    return web.Response(
        body=app_metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[SETTINGS]), dumps=_dumps)


async def purge(request: web.Request) -> web.Response:
    try:
        body = await request.json(loads=orjson.loads) if await request.read() else {}
    except orjson.JSONDecodeError:
        raise BadRequest('body must be JSON: {} or {"site_id": "…"}') from None
    if not isinstance(body, dict) or set(body) - {"site_id"}:
        raise BadRequest('body must be {} or {"site_id": "…"}')
    site_id = body.get("site_id")
    if site_id is not None and not isinstance(site_id, str):
        raise BadRequest("site_id must be a string")
    service = request.app[SERVICE]
    if site_id is None:
        dropped = await service.purge_all()
        return web.json_response({"purged": "all", "keys": dropped}, dumps=_dumps)
    dropped = await service.purge_site(validate_id(site_id, "site_id"))
    return web.json_response({"purged": site_id, "keys": dropped}, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def add_routes(app: web.Application, *, with_metrics: bool = True) -> None:
    # Order matters: `{id:.+}` catches ids with '/' (or %2F) so they get a 400, not a 404.
    router = app.router
    router.add_get("/sites", list_sites, allow_head=False)
    router.add_get("/sites/{id}/connectors", site_connectors, allow_head=False)
    router.add_get("/sites/{id}/nodes", site_nodes, allow_head=False)
    router.add_get("/sites/{id:.+}", get_site, allow_head=False)
    router.add_get("/connectors", list_connectors, allow_head=False)
    router.add_get("/connectors/{id:.+}", get_connector, allow_head=False)
    router.add_get("/healthz", healthz, allow_head=False)
    router.add_get("/readyz", readyz, allow_head=False)
    if with_metrics:
        router.add_get("/metrics", metrics, allow_head=False)
    router.add_get("/openapi.json", openapi, allow_head=False)
    router.add_post("/admin/purge", purge)
