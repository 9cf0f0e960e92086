"""The app factory: `create_app(settings)` wires collaborators and owns their lifetimes.

Everything with a lifetime (the pooled upstream `ClientSession`, the Redis client, the
invalidation listener, the engine's background fetches) is opened in one `cleanup_ctx` and
closed there in reverse order, so a graceful shutdown ends with every connection closed.

Wiring (per account: `wiring.account_stack`):

    routes → Fleetwide → SiteService → FillEngine → Cache → Tier (in process), RedisStore
                                     ↘ Filler → Upstream → Shield (rate, pause) → Circuit
    Invalidations (pub/sub, every account's channel) → every Cache.invalidated
    RedisCoordinator (fetch locks)

The change feed of each account (`changefeed.py`: change log, recorder, /changes,
refresher) hangs off its cache and fills (`wiring.account_stack`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from . import __version__
from .access import AccessLog, Accounting
from .app_keys import CURSORS, FLEET, METRICS, READINESS, SERVICE, SETTINGS, TRACING
from .cache import Cache
from .changefeed import CHANGE_FEEDS, FeedTuning
from .cursors import Cursors
from .errors import CacheUnavailable
from .fleetwide import Fleetwide
from .gauges import FleetGauges
from .invalidation import Invalidations
from .keys import Keys
from .lifecycle import DRAIN, Drain, stop_tasks
from .metrics import Metrics
from .middleware import AUTH, EDGE, Auth, Edge, make_middleware
from .quota import ClientAddress, ClientQuota
from .routes import add_routes
from .settings import Settings, SettingsError
from .store import RedisStore, redis_client
from .tier import Tier
from .wiring import Shared, account_stack, overall

log = logging.getLogger("gateway.app")
TUNING = web.AppKey("feed_tuning", FeedTuning)


class RedisHealth:
    """Tracks Redis up/down from call outcomes: metrics on every call, a log line on change."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.up: bool | None = None

    def __call__(self, operation: str, ok: bool) -> None:
        if not ok:
            self._metrics.redis_errors.labels(operation).inc()
        if ok != self.up:
            self._metrics.redis_up.set(1 if ok else 0)
            if self.up is not None or not ok:
                log.warning("redis back" if ok else "redis lost", extra={"operation": operation})
            self.up = ok


def create_app(
    settings: Settings, *, metrics: Metrics | None = None, tuning: FeedTuning | None = None
) -> web.Application:
    metrics = metrics or Metrics(account_label=settings.multi_account)
    auth = Auth(settings.client_tokens, settings.admin_token)
    drain = Drain()
    tracing = None
    if settings.tracing:
        from .tracing import Tracing  # only then: with tracing off nothing of it is loaded

        try:
            tracing = Tracing()
        except ValueError as error:  # the SDK read a bad OTEL_* variable
            raise SettingsError("OTEL_*", str(error)) from None
    edge = Edge(
        Accounting(metrics, AccessLog()),
        auth,
        ClientQuota(settings.client_rps),
        client_address=ClientAddress(settings.trusted_proxies),
        drain=drain,
        tracing=tracing,
    )
    app = web.Application(middlewares=[make_middleware(edge)])
    app[EDGE] = edge
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[AUTH] = auth
    app[DRAIN] = drain
    app[TRACING] = tracing
    app[TUNING] = tuning or FeedTuning()
    app.cleanup_ctx.append(_resources)
    add_routes(app, with_metrics=settings.metrics_port is None)
    return app


def create_metrics_app(main: web.Application) -> web.Application:
    """`/metrics` alone, for `GATEWAY_METRICS_PORT`; reads the main app's collaborators."""
    from .routes import metrics_view

    app = web.Application()
    app[METRICS] = main[METRICS]

    async def view(request: web.Request) -> web.StreamResponse:
        return await metrics_view(main, request)

    app.router.add_get("/metrics", view, allow_head=True)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings, metrics, tracing = app[SETTINGS], app[METRICS], app[TRACING]
    health = RedisHealth(metrics)
    tier = Tier(max_entries=settings.memory_cache_entries, max_bytes=settings.memory_cache_mb << 20)
    redis: RedisStore | None = None
    if settings.redis_url:
        redis = RedisStore(
            redis_client(settings.redis_url, timeout=settings.redis_timeout),
            on_result=health,
            tracing=tracing,
        )
        try:
            await redis.ping()
        except CacheUnavailable:
            log.warning("redis unreachable at start; serving degraded until it answers")
    else:
        log.warning(
            "REDIS_URL is not set: using the embedded in-process cache "
            "(not shared between replicas or workers)"
        )
        metrics.redis_up.set(1)  # the embedded cache is always reachable
    caches: list[Cache] = []
    invalidations = None
    if redis is not None:

        def dispatch(changed: list[str]) -> None:
            for each in caches:
                each.invalidated(changed)

        channels = [Keys(account.namespace).channel for account in settings.accounts]
        invalidations = Invalidations(redis, channels, dispatch)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
        # The upstream client enforces its total deadline itself (asyncio.timeout);
        # aiohttp's would round it up to whole seconds.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.upstream_timeout),
        headers={"User-Agent": f"chargepilot-gateway/{__version__}", "Accept": "application/json"},
        raise_for_status=False,
        auto_decompress=True,
    )
    shared = Shared(
        settings,
        metrics,
        tier,
        redis,
        invalidations,
        session,
        FleetGauges(metrics),
        tracing,
        app[TUNING],
    )
    stacks = [account_stack(shared, account) for account in settings.accounts]
    caches.extend(stack.service.cache for stack in stacks)
    metrics.rate_limit.set(sum(account.rps for account in settings.accounts))
    fleet = Fleetwide({stack.name: stack.service for stack in stacks})
    app[FLEET] = fleet
    app[SERVICE] = stacks[0].service
    keys = stacks[0].service.keys
    app[CHANGE_FEEDS] = {stack.name: stack.feed for stack in stacks}
    app[CURSORS] = Cursors(await _cursor_key(settings, redis, keys))
    listener = asyncio.create_task(invalidations.run()) if invalidations is not None else None
    drain = app[DRAIN]

    async def readiness() -> dict[str, Any]:
        redis_state = "absent"
        if redis is not None:
            try:
                await redis.ping()
                redis_state = "up"
            except CacheUnavailable:
                redis_state = "down"
        upstreams = {stack.name: stack.health() for stack in stacks}
        report: dict[str, Any] = {
            "ready": not drain.active,
            "cache": "redis" if redis is not None else "memory",
            "redis": redis_state,
            "upstream": stacks[0].health() if not fleet.multi else overall(upstreams),
            "degraded": redis_state == "down",
        }
        if fleet.multi:
            report["accounts"] = upstreams
        return report

    app[READINESS] = readiness

    async def on_shutdown(_: web.Application) -> None:
        drain.begin()
        for stack in stacks:  # change feed: open streams end, the server need not wait
            stack.feed.end_streams()

    app.on_shutdown.append(on_shutdown)
    try:
        yield
    finally:
        drain.begin()
        if listener is not None:  # a shutdown never waits on Redis
            await stop_tasks([listener], "invalidation listener")
        for stack in stacks:
            await stack.feed.close()
        await fleet.close()
        await session.close()
        if redis is not None:
            await redis.close()
        if tracing is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await tracing.close()


async def _cursor_key(settings: Settings, redis: RedisStore | None, keys: Keys) -> bytes:
    """`GATEWAY_CURSOR_SECRET`, else one key generated once and shared through Redis (every
    replica then accepts every replica's cursors), else one for this process alone."""
    if settings.cursor_secret is not None:
        return settings.cursor_secret.reveal().encode()
    candidate = secrets.token_hex(32)
    if redis is not None:
        try:
            await redis.call(
                "cursor_key", lambda: redis.client.set(keys.cursor_key, candidate, nx=True)
            )
            shared = await redis.get(keys.cursor_key)
            if shared:
                return bytes(shared)
        except CacheUnavailable:
            log.warning("cursor key not shared (Redis unreachable): cursors work per process")
    return candidate.encode()
