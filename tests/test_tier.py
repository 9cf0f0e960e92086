"""The ready-to-send tier with real Redis and two gateway instances: hits that never touch
Redis, purges and replacements seen by the other instance within 1 s, never fresh past the
fresh TTL, and revalidated (not trusted) after the invalidation channel reconnects."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import SimpleNamespace
from typing import Any

import redis

from gateway.app_keys import SERVICE
from gateway.invalidation import Invalidations
from gateway.metrics import Metrics
from gateway.settings import Secret
from tests.conftest import (
    GatewayFactory,
    RedisProcess,
    Simulator,
    eventually,
    settings_for,
)

ADMIN = "admin-token-for-tier-tests"


def _reads(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("get", "getrange")
    )


async def _healthy(gw: object) -> bool:
    invalidations = gw.app[SERVICE].cache._invalidations  # type: ignore[attr-defined]
    return bool(invalidations is not None and invalidations.healthy)


async def test_hits_are_answered_from_the_process_without_redis(
    simulator: Simulator, make_gateway: GatewayFactory, redis_url: str, redis_server: RedisProcess
) -> None:
    gw = await make_gateway(settings_for(simulator, redis_url=redis_url))
    await eventually(lambda: _healthy(gw))
    assert (await gw.get("/sites/site-0002")).status == 200
    client = redis_server.client()
    before = _reads(client)
    for _ in range(50):
        response = await gw.get("/sites/site-0002")
        assert response.headers["Cache-Status"].startswith("chargepilot-gateway; hit; ttl=")
    assert _reads(client) == before
    client.close()


async def test_purge_and_replacement_reach_the_other_instance_within_a_second(
    simulator: Simulator, make_gateway: GatewayFactory, redis_url: str
) -> None:
    settings = settings_for(simulator, redis_url=redis_url, cache_ttl=0.5, cache_stale=60)
    a = await make_gateway(settings)
    b = await make_gateway(dataclasses.replace(settings, admin_token=Secret(ADMIN)))
    await eventually(lambda: _healthy(a))
    await eventually(lambda: _healthy(b))
    first = await (await a.get("/sites/site-0003")).json()
    served_b = await b.get("/sites/site-0003")
    assert served_b.headers["Cache-Status"].startswith("chargepilot-gateway; hit")
    # Replacement: upstream changes, A refreshes it (stale → background refresh); B sees the
    # new content within 1 s although its own copy was still in its tier.
    simulator.state.sites["site-0003"]["name"] = "Renamed depot"
    await asyncio.sleep(0.6)  # real time: past the 0.5 s TTL
    await a.get("/sites/site-0003")  # stale: starts the refresh on A
    started = time.monotonic()

    async def b_sees_rename() -> bool:
        body = await (await b.get("/sites/site-0003")).json()
        return bool(body["name"] == "Renamed depot")

    await eventually(b_sees_rename, timeout=1.0)
    assert time.monotonic() - started < 1.0 and first["name"] != "Renamed depot"
    # Purge on B: A's tier drops its copy within 1 s (A's next answer is a miss).
    purged = await b.post(
        "/admin/purge", json={"site_id": "site-0003"}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert purged.status == 200
    started = time.monotonic()

    async def a_misses() -> bool:
        status = (await a.get("/sites/site-0003")).headers["Cache-Status"]
        return "fwd=miss" in status

    await eventually(a_misses, timeout=1.0)
    assert time.monotonic() - started < 1.0


async def test_the_tier_is_never_fresh_past_the_fresh_ttl(
    simulator: Simulator, make_gateway: GatewayFactory, redis_url: str
) -> None:
    gw = await make_gateway(settings_for(simulator, redis_url=redis_url, cache_ttl=0.3))
    stored = time.time()
    await gw.get("/sites/site-0004")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        response = await gw.get("/sites/site-0004")
        status = response.headers["Cache-Status"]
        fresh = "; hit; ttl=" in status and "ttl=-" not in status
        if time.time() - stored > 0.35:
            assert not fresh or int(response.headers["Age"]) == 0, status
        await asyncio.sleep(0.02)


async def test_after_the_channel_reconnects_the_tier_is_revalidated(
    simulator: Simulator, make_gateway: GatewayFactory, own_redis: RedisProcess
) -> None:
    metrics = Metrics()
    gw = await make_gateway(
        settings_for(simulator, redis_url=own_redis.url, redis_timeout=0.2), metrics=metrics
    )
    await eventually(lambda: _healthy(gw))
    assert (await gw.get("/sites/site-0005")).status == 200
    calls = simulator.data_calls()
    own_redis.kill()
    # Redis down: the process still answers from what it holds.
    down = await gw.get("/sites/site-0005")
    assert down.status == 200 and "; hit" in down.headers["Cache-Status"]
    own_redis.start()  # a new, empty Redis: nothing the tier holds is there any more
    await eventually(lambda: _healthy(gw), timeout=5)

    async def refetched() -> bool:
        # Not trusted: once the store's breaker lets it ask Redis again, revalidation finds
        # the entry gone and fetches it again (a trusted tier would keep answering hits).
        again = await gw.get("/sites/site-0005")
        assert again.status == 200
        return "fwd=miss" in again.headers["Cache-Status"]

    await eventually(refetched, timeout=5)
    assert simulator.data_calls() > calls


class SwallowingPubSub:
    """A subscription whose read swallows the task's cancellation and answers a PONG, as
    redis-py does to a few cancellations (`tests/test_store.py`): a listener that only
    waits for CancelledError would keep listening."""

    def __init__(self) -> None:
        self.connection = SimpleNamespace(register_connect_callback=lambda callback: None)
        self.listening = asyncio.Event()
        self.swallowing = True

    async def subscribe(self, *channels: str) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def get_message(self, timeout: float) -> dict[str, Any]:
        self.listening.set()
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            if not self.swallowing:
                raise
        return {"type": "pong", "data": b""}

    async def aclose(self) -> None:
        return None


async def test_the_listener_stops_when_redis_swallows_its_cancellation() -> None:
    pubsub = SwallowingPubSub()
    store: Any = SimpleNamespace(client=SimpleNamespace(pubsub=lambda: pubsub))
    listener = asyncio.create_task(Invalidations(store, ["channel"], lambda keys: None).run())
    await pubsub.listening.wait()
    listener.cancel()
    await asyncio.wait([listener], timeout=1)
    pubsub.swallowing = False  # so that the test can end either way
    try:
        assert listener.cancelled(), "the listener outlived its cancellation"
    finally:
        listener.cancel()
        await asyncio.wait([listener], timeout=1)
