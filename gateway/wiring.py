"""One upstream account's stack, wired: what `app.py` builds once per account.

    SiteService → FillEngine → Cache (the shared Tier and RedisStore, its own Keys)
                ↘ Filler → Upstream → Shield (its own budget and pause) → Circuit (its own)

Every account has its own namespace (`Keys`), so its entries, locks, rate budget, pause and
invalidation channel are its own; the tier, the Redis client, the invalidation listener,
the HTTP session and the fleet gauges are shared (`Shared`).  With several accounts the
upstream metrics and the circuit gauge carry the account's name, and fills put it on every
site and connector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from .accounts import Account
from .cache import Cache
from .changefeed import ChangeFeed, FeedTuning, open_change_feed
from .circuit import Circuit
from .engine import FillEngine
from .fills import Filler, SiteAges
from .gauges import FleetGauges
from .invalidation import Invalidations
from .keys import Keys
from .locks import Coordinator, LocalCoordinator, RedisCoordinator
from .metrics import Metrics
from .service import SiteService
from .settings import Settings
from .shield import Shield
from .store import RedisStore
from .tier import Tier
from .upstream import Upstream

if TYPE_CHECKING:
    from .tracing import Tracing

log = logging.getLogger("gateway.app")
LOCK_MARGIN = 5.0


@dataclass(frozen=True, slots=True)
class Shared:
    """What every account's stack shares: one tier, one Redis, one invalidation listener,
    one HTTP session, one set of fleet gauges."""

    settings: Settings
    metrics: Metrics
    tier: Tier
    redis: RedisStore | None
    invalidations: Invalidations | None
    session: aiohttp.ClientSession
    gauges: FleetGauges
    tracing: Tracing | None = None
    tuning: FeedTuning = field(default_factory=FeedTuning)


@dataclass(frozen=True, slots=True)
class Stack:
    name: str
    service: SiteService
    circuit: Circuit
    shield: Shield
    feed: ChangeFeed

    def health(self) -> dict[str, Any]:
        return {"circuit": self.circuit.state, "available": self.shield.available()}


def account_stack(shared: Shared, account: Account) -> Stack:
    """One account's own namespace, cache, circuit, shield (budget, pause), upstream client,
    engine, filler and site service."""
    settings, metrics, redis = shared.settings, shared.metrics, shared.redis
    keys = Keys(account.namespace)
    cache = Cache(
        keys,
        shared.tier,
        fresh_ttl=settings.cache_ttl,
        stale_ttl=settings.cache_stale,
        negative_ttl=settings.negative_ttl,
        shared=redis,
        invalidations=shared.invalidations,
    )
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
    upstream = Upstream(
        shared.session,
        account,
        timeout=settings.upstream_timeout,
        retries=settings.upstream_retries,
        metrics=metrics,
        admission=shield,
        labels=labels,
        tracing=shared.tracing,
    )
    engine = FillEngine(
        cache,
        coordinator=coordinator,
        upstream_available=shield.available,
        refresh_ahead=settings.refresh_ahead,
    )
    # The account's change feed: its recorder hooks into the fills; it starts with the service.
    feed = open_change_feed(settings, account, cache, redis, metrics, tuning=shared.tuning)
    filler = Filler(
        cache,
        upstream,
        metrics,
        SiteAges(),
        account=account.name if settings.multi_account else None,
        gauges=shared.gauges,
        events_ttl=settings.events_ttl,
        changes=feed.recorder,
    )
    service = SiteService(
        engine,
        filler,
        negative_ttl=settings.negative_ttl,
        events_ttl=settings.events_ttl,
        account=account.name,
    )
    feed.start(service, shield)
    return Stack(account.name, service, circuit, shield, feed)


def overall(upstreams: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Several accounts: the most broken circuit, available while every account is."""
    states = [upstream["circuit"] for upstream in upstreams.values()]
    circuit = next((s for s in ("open", "half_open") if s in states), "closed")
    return {"circuit": circuit, "available": all(u["available"] for u in upstreams.values())}


def _circuit_changed(metrics: Metrics, labels: tuple[str, ...], state: str) -> None:
    metrics.circuit_open.labels(*labels).set(1 if state == "open" else 0) if labels else (
        metrics.circuit_open.set(1 if state == "open" else 0)
    )
    log.warning("upstream circuit %s", state, extra={"state": state})
