"""Checks every Redis deployment must pass (run by test_redis_sentinel.py and
test_redis_cluster.py against real Sentinel and Cluster processes from redis_ha.py).

Store level: the gateway's own client (`redis_client` + `RedisStore`) and the Lua scripts of
`shield.py` and `locks.py`, two stores standing in for two gateway instances.  App level:
gateway apps (`make_gateway`) against the simulator.  A Redis failure may never hide behind
the gateway's fallbacks: the stores record every failed call, the apps'
`gateway_redis_errors_total` must stay 0, and the shared-state checks fail on local fallbacks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
import orjson
import pytest

from gateway.app_keys import SERVICE
from gateway.changelog import EventId
from gateway.circuit import Circuit
from gateway.errors import UpstreamUnavailable
from gateway.keys import Keys
from gateway.locks import RedisCoordinator
from gateway.metrics import Metrics
from gateway.settings import Secret
from gateway.shield import Shield
from gateway.store import RedisStore, redis_client
from tests.conftest import GatewayFactory, Simulator, eventually, metric_value, settings_for

MakeSim = Callable[..., Awaitable[Simulator]]
KEYS = Keys("ha")
HIT = "chargepilot-gateway; hit; ttl="


class Deployment(Protocol):
    @property
    def url(self) -> str: ...
    def stored_keys(self, pattern: str = "*") -> set[str]: ...


class Instance:
    """One gateway instance's store: the gateway's own client for `url`, recording failed calls."""

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.failures: list[str] = []
        self.store = RedisStore(
            redis_client(url, timeout=timeout),
            on_result=lambda operation, ok: None if ok else self.failures.append(operation),
        )


@asynccontextmanager
async def instances(
    url: str, count: int = 2, *, timeout: float = 1.0
) -> AsyncIterator[list[Instance]]:
    made = [Instance(url, timeout) for _ in range(count)]
    try:
        yield made
    finally:
        for instance in made:
            await instance.store.close()
    assert [instance.failures for instance in made] == [[]] * count, "a Redis call failed"


# Store level ------------------------------------------------------------------------------


async def check_store(deployment: Deployment, prefix: str = "t:v1:") -> list[str]:
    """get/get_range/set_many/delete/keys_with_prefix/ping; returns the keys it wrote."""
    items = [(f"{prefix}site:{n:04d}", f"body-{n}".encode()) for n in range(30)]
    items.append((f"{prefix}other", b"kept"))
    async with instances(deployment.url, 1) as (instance,):
        store = instance.store
        await store.ping()
        await store.set_many(items, ttl=30)
        assert deployment.stored_keys(prefix + "*") == {key for key, _ in items}
        for key, value in items:
            assert await store.get(key) == value
        assert await store.get_range(items[0][0], 3) == b"body"
        assert await store.get(prefix + "missing") is None
        assert await store.get_range(prefix + "missing", 3) is None
        await store.delete(key for key, _ in items[:10])
        assert await store.get(items[0][0]) is None
        swept = await store.keys_with_prefix(prefix + "site:")
        assert len(swept) == 20
        await store.delete(swept)
        assert deployment.stored_keys(prefix + "*") == {prefix + "other"}
    return [key for key, _ in items]


async def check_shield(deployment: Deployment) -> None:
    """The token bucket and the Retry-After pause are shared by two instances' shields."""
    async with instances(deployment.url) as (a, b):

        def shield(instance: Instance) -> Shield:
            circuit = Circuit(failures=5, cooldown=1)
            return Shield(
                rate=1.0, circuit=circuit, metrics=Metrics(), keys=KEYS, redis=instance.store
            )

        shield_a, shield_b = shield(a), shield(b)
        loop = asyncio.get_running_loop()
        await shield_a.admit(loop.time())  # the bucket's one token (burst = 1 s of rate 1)
        # B's own local bucket is full: only the shared bucket can refuse it.
        with pytest.raises(UpstreamUnavailable, match="rate budget") as spent:
            await shield_b.admit(loop.time() + 0.05)
        assert 0 < (spent.value.retry_after or 0) <= 1
        await shield_a.pause(2.0)
        with pytest.raises(UpstreamUnavailable, match="pause") as paused:
            await shield_b.admit(loop.time() + 5)
        assert 1 < (paused.value.retry_after or 0) <= 2
        assert not shield_b.available()
    assert deployment.stored_keys("cpgw:v2:{ha}:*") == {KEYS.bucket, KEYS.pause}


async def check_locks(deployment: Deployment) -> None:
    """SET NX PX locks and the compare-and-delete script, for names in many slots."""
    async with instances(deployment.url) as (a, b):
        holder = RedisCoordinator(a.store, KEYS, lock_ttl=5)
        other = RedisCoordinator(b.store, KEYS, lock_ttl=5, poll=0.01)
        names = [f"site:site-{n:04d}" for n in range(8)]
        tokens = {name: await holder.try_lock(name) for name in names}
        assert all(token not in (None, "local") for token in tokens.values())
        for name in names:
            assert await other.try_lock(name) is None
        await other.unlock(names[0], "not-the-owner")
        assert await other.try_lock(names[0]) is None
        waiter = asyncio.create_task(other.wait_unlocked(names[0]))
        await asyncio.sleep(0.1)  # a while to show it does NOT end: nothing to await
        assert not waiter.done()
        await holder.unlock(names[0], tokens[names[0]] or "")
        await asyncio.wait_for(waiter, 2)
        assert await other.try_lock(names[0]) not in (None, "local")
        for name in names[1:]:
            await holder.unlock(name, tokens[name] or "")
        assert deployment.stored_keys("cpgw:v2:ha:lock:*") == {KEYS.lock(names[0])}


# App level --------------------------------------------------------------------------------


async def _gateway(make_gateway: GatewayFactory, sim: Simulator, url: str, **overrides: Any) -> Any:
    """A gateway app and its metrics.  Its Redis timeout is generous: these checks count
    Redis errors to catch wrong commands (CROSSSLOT, a wrong node), not a busy machine."""
    metrics = Metrics()
    settings = settings_for(sim, redis_url=url, **{"redis_timeout": 2.0, **overrides})
    client = await make_gateway(settings, metrics=metrics)
    return client, metrics


def redis_errors(metrics: Metrics) -> float:
    return metric_value(metrics.render().decode(), "gateway_redis_errors_total")


async def check_every_endpoint_is_cached(
    make_simulator: MakeSim, make_gateway: GatewayFactory, deployment: Deployment
) -> None:
    """A fills the cache; a second app B, which never fetched, gets every answer as a hit."""
    sim = await make_simulator()
    a, metrics_a = await _gateway(make_gateway, sim, deployment.url)
    connectors = await (await a.get("/sites/site-0001/connectors")).json()
    connector_id = connectors["data"][0]["id"]
    paths = [
        "/sites/site-0002",
        "/sites/site-0002/connectors",
        "/sites/site-0002/nodes",
        "/sites",
        "/connectors?limit=50",
        f"/connectors/{connector_id}",
        "/sites/site-0001",
        "/sites/site-0002/charging-events?from=2025-01-02T00:00:00%2B01:00&take=20",
    ]
    bodies = {}
    for path in paths:
        first = await a.get(path)
        assert first.status == 200, path
        second = await a.get(path)
        assert second.status == 200 and second.headers["Cache-Status"].startswith(HIT), path
        bodies[path] = await first.read()
        assert await second.read() == bodies[path]
    calls = sim.data_calls()
    b, metrics_b = await _gateway(make_gateway, sim, deployment.url)
    for path in paths:
        response = await b.get(path)
        assert response.status == 200, path
        assert response.headers["Cache-Status"].startswith(HIT), path
        assert await response.read() == bodies[path]
    assert sim.data_calls() == calls
    assert redis_errors(metrics_a) == redis_errors(metrics_b) == 0
    keys = a.app[SERVICE].keys
    expected = {keys.sites(), keys.known(), keys.fleet(), *keys.site_family("site-0002")}
    assert expected <= deployment.stored_keys(keys.entries_prefix + "*")


async def storm(urls: list[str]) -> list[tuple[int, str]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(url: str) -> tuple[int, str]:
            async with session.get(url) as response:
                await response.read()
                return response.status, response.headers["Cache-Status"]

        return await asyncio.gather(*(one(url) for url in urls))


async def check_two_gateways_collapse(
    make_simulator: MakeSim, make_gateway: GatewayFactory, deployment: Deployment
) -> None:
    sim = await make_simulator(latency=0.3)
    (a, metrics_a), (b, metrics_b) = [
        await _gateway(make_gateway, sim, deployment.url) for _ in range(2)
    ]
    urls = [
        str(gw.make_url(f"/sites/{site}"))
        for gw in (a, b)
        for site in ("site-0003", "site-0004")
        for _ in range(20)
    ]
    responses = await storm(urls)
    assert [status for status, _ in responses] == [200] * 80
    # Cold: the known-id gate's one list fetch stores both sites, for both gateways.
    assert sim.data_calls("/rest/v1/sites") == sim.data_calls() == 1
    assert sum("collapsed" in cache_status for _, cache_status in responses) > 40
    assert redis_errors(metrics_a) == redis_errors(metrics_b) == 0


async def check_shared_budget(
    make_simulator: MakeSim, make_gateway: GatewayFactory, deployment: Deployment
) -> None:
    """Rate 1 per 4 s (burst 1) shared: A spends the token, B has to wait longer than it
    may.  Only B's budget is short: A's fetch must succeed on a loaded machine, and the
    slow refill leaves B seconds of margin before the bucket could hold a token again."""
    sim = await make_simulator()
    a, _ = await _gateway(make_gateway, sim, deployment.url, upstream_rps=0.25)
    b, _ = await _gateway(
        make_gateway, sim, deployment.url, upstream_rps=0.25, upstream_timeout=0.3
    )
    assert (await a.get("/sites/site-0005")).status == 200  # the list: A spends the token
    await a.app[SERVICE].cache.delete(a.app[SERVICE].keys.site_family("site-0006"))
    held = await b.get("/sites/site-0006")  # known, not cached: B needs a token
    assert held.status == 503 and 1 <= int(held.headers["Retry-After"]) <= 4
    assert sim.data_calls() == 1


async def check_shared_pause(
    make_simulator: MakeSim, make_gateway: GatewayFactory, deployment: Deployment
) -> None:
    """Upstream's 429 to A (Retry-After: 2) holds B back too, until the pause ends."""
    sim = await make_simulator(fail_mode="429", retry_after=2)
    a, _ = await _gateway(make_gateway, sim, deployment.url)
    b, _ = await _gateway(make_gateway, sim, deployment.url)
    started = time.monotonic()
    first = await a.get("/sites/site-0007")
    assert first.status == 503 and first.headers["Retry-After"] == "2"
    sim.config.fail_mode = None
    held = await b.get("/sites/site-0008")
    assert held.status == 503 and 1 <= int(held.headers["Retry-After"]) <= 2
    assert sim.data_calls() == 1

    async def b_fetches() -> bool:
        return (await b.get("/sites/site-0008")).status == 200

    await eventually(b_fetches, timeout=4)
    assert time.monotonic() - started >= 2.0
    assert sim.data_calls() == 2


async def check_purge(
    make_simulator: MakeSim, make_gateway: GatewayFactory, deployment: Deployment
) -> None:
    sim = await make_simulator()
    admin_token = Secret("admin-secret")
    gw, metrics = await _gateway(make_gateway, sim, deployment.url, admin_token=admin_token)
    assert (await gw.get("/sites")).status == 200
    keys = gw.app[SERVICE].keys
    entries = keys.entries_prefix + "*"
    site_keys = set(keys.site_family("site-0002"))
    before = deployment.stored_keys(entries)
    assert site_keys <= before
    admin = {"Authorization": "Bearer admin-secret"}
    one = await gw.post("/admin/purge", json={"site_id": "site-0002"}, headers=admin)
    assert one.status == 200
    after_one = deployment.stored_keys(entries)
    assert not site_keys & after_one
    assert keys.sites() not in after_one and keys.site("site-0003") in after_one
    everything = await gw.post("/admin/purge", data=b"{}", headers=admin)
    assert everything.status == 200
    assert orjson.loads(await everything.read())["keys"] == len(after_one)
    assert deployment.stored_keys(entries) == set()
    assert deployment.stored_keys(keys.cursor_key)  # not a cache entry: purge keeps it
    again = await gw.get("/sites/site-0003")
    assert again.status == 200 and "fwd=miss" in again.headers["Cache-Status"]
    assert redis_errors(metrics) == 0


async def check_invalidation(
    make_simulator: MakeSim, make_gateway: GatewayFactory, deployment: Deployment
) -> None:
    """A purge on A reaches B's in-process tier (pub/sub) within 1 s."""
    sim = await make_simulator()
    admin_token = Secret("admin-secret")
    a, _ = await _gateway(make_gateway, sim, deployment.url, admin_token=admin_token)
    b, metrics_b = await _gateway(make_gateway, sim, deployment.url)
    for gw in (a, b):
        await eventually(lambda gw=gw: _listening(gw), timeout=5)
    assert (await a.get("/sites/site-0009")).status == 200
    assert (await b.get("/sites/site-0009")).headers["Cache-Status"].startswith(HIT)
    purged = await a.post(
        "/admin/purge",
        json={"site_id": "site-0009"},
        headers={"Authorization": "Bearer admin-secret"},
    )
    assert purged.status == 200
    started = time.monotonic()

    async def b_misses() -> bool:
        return "fwd=miss" in (await b.get("/sites/site-0009")).headers["Cache-Status"]

    await eventually(b_misses, timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert redis_errors(metrics_b) == 0


async def _listening(gw: Any) -> bool:
    invalidations = gw.app[SERVICE].cache._invalidations
    return bool(invalidations is not None and invalidations.healthy)


async def check_change_feed(
    make_simulator: MakeSim, make_gateway: GatewayFactory, deployment: Deployment
) -> list[str]:
    """Two gateways racing to store a changed site append one event (the compare-and-append
    script), both serve it with the same id, and a stream on B sees an event A appends (the
    blocking follower).  Returns the feed's keys."""
    from tests.feedkit import SSE, events, frames

    sim = await make_simulator()
    a, metrics_a = await _gateway(make_gateway, sim, deployment.url)
    b, metrics_b = await _gateway(make_gateway, sim, deployment.url)
    assert (await a.get("/sites")).status == 200  # the baseline
    sim.state.mutate("limit", site_id="site-0003")
    fillers = [gw.app[SERVICE].filler for gw in (a, b)]
    await asyncio.gather(*(filler.fill_site("site-0003") for filler in fillers))
    pages = [await (await gw.get("/changes?after=0")).json() for gw in (a, b)]
    assert pages[0] == pages[1] and len(pages[0]["data"]) == 1
    (event,) = pages[0]["data"]
    assert event["kind"] == "site.updated" and event["changes"][0]["path"].endswith("/limit")
    async with b.get("/changes", headers={**SSE, "Last-Event-ID": event["id"]}) as stream:
        (opening,) = await frames(stream, 1)  # written just before B's follower waits
        assert opening.comment == "stream open"
        sim.state.mutate("renamed", site_id="site-0004")
        await fillers[0].fill_site("site-0004")
        (pushed,) = await events(stream, 1, timeout=3)
    assert pushed.event == "site.updated" and pushed.json["site_id"] == "site-0004"
    assert pushed.id is not None and EventId.parse(pushed.id) > EventId.parse(event["id"])
    assert redis_errors(metrics_a) == redis_errors(metrics_b) == 0
    keys = a.app[SERVICE].keys
    feed_keys = [keys.changes_stream, keys.changes_etags, keys.changes_ages, keys.changes_floor]
    assert set(feed_keys) <= deployment.stored_keys("cpgw:v2:{*")
    return feed_keys
