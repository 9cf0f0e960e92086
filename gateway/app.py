"""The app factory: `create_app(settings)` wires collaborators and owns their lifetimes.

Everything with a lifetime (the pooled upstream `ClientSession`, the Redis client, the
site service's background fetches) is opened in one `cleanup_ctx` and closed there in
reverse order, so a SIGTERM — which aiohttp turns into a graceful shutdown that first
stops accepting and waits for in-flight requests — ends with every connection closed.

Wiring:  routes → SiteService → (Cache → RedisStore | MemoryStore) and
                               (Filler → Upstream → Shield (rate, pause, circuit))
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from .app_keys import CURSORS, METRICS, READINESS, SERVICE, SETTINGS
from .cache import Cache
from .errors import CacheUnavailable
from .fills import Filler
from .fleet import Cursors
from .lifecycle import DRAIN, Drain
from .locks import Coordinator, LocalCoordinator, RedisCoordinator
from .metrics import Metrics
from .middleware import AUTH, Auth, make_middleware
from .quota import ClientAddress, ClientQuota
from .routes import add_routes
from .service import SiteService
from .settings import Settings
from .shield import Circuit, Shield
from .store import MemoryStore, RedisStore, Store, redis_client
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
    metrics = metrics or Metrics()
    auth = Auth(settings.client_tokens, settings.admin_token)
    drain = Drain()
    edge = make_middleware(
        metrics,
        auth,
        ClientQuota(settings.client_rps),
        client_address=ClientAddress(settings.trusted_proxies),
        drain=drain,
    )
    app = web.Application(middlewares=[edge])
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[AUTH] = auth
    app[DRAIN] = drain
    app[CURSORS] = Cursors(settings.api_secret.reveal().encode())
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

    app.router.add_get("/metrics", view, allow_head=False)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]
    health = RedisHealth(metrics)
    memory_bytes = settings.memory_cache_mb << 20
    redis: RedisStore | None = None
    store: Store
    if settings.redis_url:
        redis = RedisStore(
            redis_client(settings.redis_url, timeout=settings.redis_timeout),
            timeout=settings.redis_timeout,
            on_result=health,
        )
        store = redis
        try:
            await redis.ping()
        except CacheUnavailable:
            log.warning("redis unreachable at start; serving degraded until it answers")
    else:
        log.warning(
            "REDIS_URL is not set: using the embedded in-process cache "
            "(not shared between replicas or workers)"
        )
        store = MemoryStore(max_bytes=memory_bytes)
        metrics.redis_up.set(1)  # the embedded cache is always reachable
    cache = Cache(
        store,
        fresh_ttl=settings.cache_ttl,
        stale_ttl=settings.cache_stale,
        negative_ttl=settings.negative_ttl,
        fallback=MemoryStore(max_bytes=memory_bytes) if redis else None,
    )
    circuit = Circuit(
        failures=settings.circuit_failures,
        cooldown=settings.circuit_cooldown,
        on_change=lambda state: _circuit_changed(metrics, state),
    )
    shield = Shield(rate=settings.upstream_rps, circuit=circuit, metrics=metrics, redis=redis)
    coordinator: Coordinator = LocalCoordinator()
    if redis is not None:
        coordinator = RedisCoordinator(redis, lock_ttl=settings.upstream_timeout + LOCK_MARGIN)
    connector = aiohttp.TCPConnector(limit=100, ttl_dns_cache=300)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.upstream_timeout),
        headers={"User-Agent": "chargepilot-gateway/0.1", "Accept": "application/json"},
        raise_for_status=False,
        auto_decompress=True,
    )
    upstream = Upstream(session, settings, metrics=metrics, admission=shield)
    service = SiteService(
        cache,
        Filler(cache, upstream, metrics),
        metrics,
        coordinator=coordinator,
        upstream_available=shield.available,
        refresh_ahead=settings.refresh_ahead,
    )
    app[SERVICE] = service
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
        await service.close()
        await session.close()
        await store.close()


def _circuit_changed(metrics: Metrics, state: str) -> None:
    metrics.circuit_open.set(1 if state == "open" else 0)
    log.warning("upstream circuit %s", state, extra={"state": state})
