"""The app factory: `create_app(settings)` wires collaborators and owns their lifetimes.

Everything with a lifetime (the pooled upstream `ClientSession`, the Redis client, the
invalidation listener, the engine's background fetches) is opened in one `cleanup_ctx` and
closed there in reverse order, so a graceful shutdown ends with every connection closed.

Wiring (one account):

    routes → SiteService → FillEngine → Cache → Tier (in process) and RedisStore (shared)
                         ↘ Filler → Upstream → Shield (rate, pause) → Circuit
    Invalidations (pub/sub) → Cache.invalidated      RedisCoordinator (fetch locks)
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
from .app_keys import CURSORS, METRICS, READINESS, SERVICE, SETTINGS, TRACING
from .cache import Cache
from .circuit import Circuit
from .cursors import Cursors
from .engine import FillEngine
from .errors import CacheUnavailable
from .fills import Filler, SiteAges
from .invalidation import Invalidations
from .keys import Keys
from .lifecycle import DRAIN, Drain
from .locks import Coordinator, LocalCoordinator, RedisCoordinator
from .metrics import Metrics
from .middleware import AUTH, Auth, make_middleware
from .quota import ClientAddress, ClientQuota
from .routes import add_routes
from .service import SiteService
from .settings import Settings, SettingsError
from .shield import Shield
from .store import RedisStore, redis_client
from .tier import Tier
from .upstream import Upstream

log = logging.getLogger("gateway.app")
LOCK_MARGIN = 5.0


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


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> web.Application:
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
    edge = make_middleware(
        Accounting(metrics, AccessLog()),
        auth,
        ClientQuota(settings.client_rps),
        client_address=ClientAddress(settings.trusted_proxies),
        drain=drain,
        tracing=tracing,
    )
    app = web.Application(middlewares=[edge])
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[AUTH] = auth
    app[DRAIN] = drain
    app[TRACING] = tracing
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
    account = settings.accounts[0]
    keys = Keys(account.namespace)
    caches: list[Cache] = []
    invalidations = None
    if redis is not None:

        def dispatch(changed: list[str]) -> None:
            for each in caches:
                each.invalidated(changed)

        invalidations = Invalidations(redis, [keys.channel], dispatch)
    cache = Cache(
        keys,
        tier,
        fresh_ttl=settings.cache_ttl,
        stale_ttl=settings.cache_stale,
        negative_ttl=settings.negative_ttl,
        shared=redis,
        invalidations=invalidations,
    )
    caches.append(cache)
    labels = (account.name,) if metrics.account_label else ()
    metrics.prime_account(labels)
    circuit = Circuit(
        failures=settings.circuit_failures,
        cooldown=settings.circuit_cooldown,
        on_change=lambda state: _circuit_changed(metrics, labels, state),
    )
    shield = Shield(rate=account.rps, circuit=circuit, metrics=metrics, keys=keys, redis=redis)
    coordinator: Coordinator = LocalCoordinator()
    if redis is not None:
        coordinator = RedisCoordinator(
            redis, keys, lock_ttl=settings.upstream_timeout + LOCK_MARGIN
        )
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
        # The upstream client enforces its total deadline itself (asyncio.timeout);
        # aiohttp's would round it up to whole seconds.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.upstream_timeout),
        headers={"User-Agent": f"chargepilot-gateway/{__version__}", "Accept": "application/json"},
        raise_for_status=False,
        auto_decompress=True,
    )
    upstream = Upstream(
        session,
        account,
        timeout=settings.upstream_timeout,
        retries=settings.upstream_retries,
        metrics=metrics,
        admission=shield,
        labels=labels,
        tracing=tracing,
    )
    engine = FillEngine(
        cache,
        coordinator=coordinator,
        upstream_available=shield.available,
        refresh_ahead=settings.refresh_ahead,
    )
    filler = Filler(cache, upstream, metrics, SiteAges())
    service = SiteService(engine, filler, negative_ttl=settings.negative_ttl)
    app[SERVICE] = service
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
        report: dict[str, Any] = {
            "ready": not drain.active,
            "cache": "redis" if redis is not None else "memory",
            "redis": redis_state,
            "upstream": {"circuit": circuit.state, "available": shield.available()},
            "degraded": redis_state == "down",
        }
        return report

    app[READINESS] = readiness

    async def on_shutdown(_: web.Application) -> None:
        drain.begin()

    app.on_shutdown.append(on_shutdown)
    try:
        yield
    finally:
        drain.begin()
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener], timeout=2)  # a shutdown never waits on Redis
        await service.close()
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


def _circuit_changed(metrics: Metrics, labels: tuple[str, ...], state: str) -> None:
    metrics.circuit_open.labels(*labels).set(1 if state == "open" else 0) if labels else (
        metrics.circuit_open.set(1 if state == "open" else 0)
    )
    log.warning("upstream circuit %s", state, extra={"state": state})
