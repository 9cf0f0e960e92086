"""HTTP views: parse and validate input, call the fleet-wide facade, shape the answer.

Knows HTTP and nothing of caching decisions; `responses.py` renders what the cache did.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from .app_keys import CURSORS, FLEET, METRICS, READINESS, SETTINGS
from .changefeed import CHANGE_FEEDS, report_feeds
from .cursors import parse_query
from .errors import BadRequest, CacheUnavailable, StoreUnavailable
from .events import parse_events_query
from .ids import validate_id
from .openapi import document
from .params import single_values
from .responses import respond


def _site_id(request: web.Request) -> str:
    return validate_id(request.match_info["id"], "site id")


def _account(request: web.Request) -> str | None:
    """The one parameter of the id and list routes: `?account=` (a configured name)."""
    if not request.query_string:
        return None  # the hit path: nothing to parse
    params = single_values(request.query, ("account",))
    return request.app[FLEET].account(params.get("account"))


async def list_sites(request: web.Request) -> web.Response:
    account = _account(request)
    return respond(request, await request.app[FLEET].sites(account))


async def get_site(request: web.Request) -> web.Response:
    site_id, account = _site_id(request), _account(request)
    return respond(request, await request.app[FLEET].site(site_id, "site", account))


async def site_connectors(request: web.Request) -> web.Response:
    site_id, account = _site_id(request), _account(request)
    return respond(request, await request.app[FLEET].site(site_id, "connectors", account))


async def site_nodes(request: web.Request) -> web.Response:
    site_id, account = _site_id(request), _account(request)
    return respond(request, await request.app[FLEET].site(site_id, "nodes", account))


async def site_events(request: web.Request) -> web.Response:
    site_id = _site_id(request)
    query = parse_events_query(request.query, extra=("account",))
    fleet = request.app[FLEET]
    account = fleet.account(request.query.get("account"))
    return respond(request, await fleet.events(site_id, query, account))


async def list_connectors(request: web.Request) -> web.Response:
    cursors = request.app[CURSORS]
    query = parse_query(request.query, cursors)
    fleet = request.app[FLEET]
    fleet.account(query.account)
    return respond(request, await fleet.connectors(query, cursors))


async def get_connector(request: web.Request) -> web.Response:
    connector_id = validate_id(request.match_info["id"], "connector id")
    account = _account(request)
    return respond(request, await request.app[FLEET].connector(connector_id, account))


async def list_changes(request: web.Request) -> web.StreamResponse:
    """The change feed; with several accounts each has its own, named by `?account=`."""
    feeds = request.app[CHANGE_FEEDS]
    name = request.query.get("account")
    if name is None:
        if len(feeds) > 1:
            raise BadRequest(
                "several accounts: name one with ?account= (" + ", ".join(sorted(feeds)) + ")"
            )
        return await next(iter(feeds.values())).handle(request)
    feed = feeds.get(name)
    if feed is None:
        raise BadRequest(f"unknown account {name!r}; accounts: " + ", ".join(sorted(feeds)))
    return await feed.handle(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, dumps=_dumps)


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[READINESS]()
    return web.json_response(report, status=200 if report["ready"] else 503, dumps=_dumps)


async def metrics(request: web.Request) -> web.Response:
    return await metrics_view(request.app, request)


async def metrics_view(app: web.Application, request: web.Request) -> web.Response:
    app_metrics = app[METRICS]
    app_metrics.report_site_ages(await app[FLEET].listed_ages(), time.time())
    feeds = app.get(CHANGE_FEEDS)
    if feeds:
        await report_feeds(feeds.values(), app_metrics)
    return web.Response(
        body=app_metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[SETTINGS]), dumps=_dumps)


async def purge(request: web.Request) -> web.Response:
    raw = await request.read()
    try:
        # orjson reads the bytes itself: a body that is not UTF-8 is a JSON error too.
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise BadRequest('body must be JSON: {} or {"site_id": "…"}') from None
    if not isinstance(body, dict) or set(body) - {"site_id"}:
        raise BadRequest('body must be {} or {"site_id": "…"}')
    site_id = body.get("site_id")
    if "site_id" in body and not isinstance(site_id, str):
        raise BadRequest("site_id must be a string")
    fleet = request.app[FLEET]
    if site_id is not None:
        validate_id(site_id, "site_id")
    try:
        if site_id is None:
            dropped = await fleet.purge_all()
        else:
            dropped = await fleet.purge_site(site_id)
    except CacheUnavailable:
        raise StoreUnavailable("Redis did not answer; nothing was purged", retry_after=1) from None
    return web.json_response({"purged": site_id or "all", "keys": dropped}, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def add_routes(app: web.Application, *, with_metrics: bool = True) -> None:
    # `{id:[^/]+}`: one raw path segment; aiohttp matches on the path with %2F still
    # encoded, so an id holding '/' (sent as %2F) or braces is one segment like any other.
    router = app.router
    # The router tries the routes under one prefix in this order, one regex each: the hottest
    # first (an id cannot hold '/', so `/sites/{id}` never shadows the longer paths).
    router.add_get("/sites", list_sites, allow_head=True)
    router.add_get("/sites/{id:[^/]+}", get_site, allow_head=True)
    router.add_get("/sites/{id:[^/]+}/connectors", site_connectors, allow_head=True)
    router.add_get("/sites/{id:[^/]+}/nodes", site_nodes, allow_head=True)
    router.add_get("/sites/{id:[^/]+}/charging-events", site_events, allow_head=True)
    router.add_get("/connectors", list_connectors, allow_head=True)
    router.add_get("/connectors/{id:[^/]+}", get_connector, allow_head=True)
    router.add_get("/changes", list_changes, allow_head=True)
    router.add_get("/healthz", healthz, allow_head=True)
    router.add_get("/readyz", readyz, allow_head=True)
    if with_metrics:
        router.add_get("/metrics", metrics, allow_head=True)
    router.add_get("/openapi.json", openapi, allow_head=True)
    router.add_post("/admin/purge", purge)
