"""Hostile clients and faults: no client input may switch the shield off for others.

Ids of every printable character reach upstream signed over the exact bytes sent; unknown
ids cannot spend the upstream budget; upstream 4xx never open the circuit; accounts sharing
one Redis stay apart; purge drops cache entries only; a stalled Redis costs a bounded number
of slow requests; a burst queues on the pool instead of failing."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from gateway.app_keys import SERVICE
from gateway.metrics import Metrics
from gateway.settings import Secret
from gateway.simulator import odd_id_fleet
from gateway.simulator.data import eu_fleet, us_fleet
from tests.conftest import (
    SIM_KEY,
    SIM_SECRET,
    GatewayFactory,
    RedisProcess,
    Simulator,
    eventually,
    metric_value,
    settings_for,
)

MakeSim = Callable[..., Awaitable[Simulator]]
ADMIN = "hostile-admin-token"
SITES_PATH = "/rest/v1/sites"


def _path(site_id: str, view: str = "") -> URL:
    segment = "%2E" * len(site_id) if site_id in (".", "..") else quote(site_id, safe="")
    return URL(f"/sites/{segment}{view}", encoded=True)


async def test_every_printable_and_non_ascii_id_is_200_or_404_never_5xx(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator(sites=odd_id_fleet())
    gw = await make_gateway(settings_for(sim))
    assert (await gw.get("/sites")).status == 200
    service = gw.app[SERVICE]
    ids = list(sim.state.sites)
    # Keep the known-id list, drop the sites: every id below is fetched on its own, signed
    # over the exact path the upstream receives.
    for site_id in ids:
        await service.cache.delete(service.keys.site_family(site_id))
    before = sim.data_calls()
    for site_id in ids:
        response = await gw.get(_path(site_id))
        assert response.status == 200, (site_id, await response.text())
        assert (await response.json())["id"] == site_id
        for view in ("/connectors", "/nodes"):
            assert (await gw.get(_path(site_id, view))).status == 200, (site_id, view)
    assert sim.data_calls() - before == len(ids)
    assert {call.outcome for call in sim.state.calls} == {200}  # not one 401
    connector_ids = [c["id"] for c in (await (await gw.get("/connectors")).json())["data"]]
    for connector_id in [c for c in connector_ids if len(c) <= 200][::7]:
        path = URL("/connectors/" + quote(connector_id, safe=""), encoded=True)
        response = await gw.get(path)
        assert response.status == 200 and (await response.json())["id"] == connector_id
    # Odd ids nobody has: 404 from the fresh list, never 5xx, never upstream.
    calls = sim.data_calls()
    for junk in ("nope/../x", "%00", "\u00a0", "🚫", "b" * 200, "{x}:y"):
        assert (await gw.get(_path(junk))).status == 404
    assert sim.data_calls() == calls
    for bad in ("a\x00b", "\x1f", "\x7f", "\u0085", "a" * 201):
        assert (await gw.get(_path(bad))).status == 400


async def test_unknown_ids_cost_at_most_one_list_refresh(
    simulator: Simulator, make_gateway: GatewayFactory, redis_url: str
) -> None:
    gw = await make_gateway(settings_for(simulator, redis_url=redis_url, negative_ttl=30))
    assert (await gw.get("/sites")).status == 200
    calls = simulator.data_calls()
    statuses = await asyncio.gather(*(gw.get(f"/sites/junk-{n}") for n in range(200)))
    assert {response.status for response in statuses} == {404}
    assert simulator.data_calls() - calls <= 1
    service = gw.app[SERVICE]
    assert len(service.cache.tier) < 60  # nothing was stored per junk id


async def test_an_old_list_is_refreshed_once_for_a_flood_of_unknown_ids(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator, negative_ttl=0.2))
    assert (await gw.get("/sites")).status == 200
    await asyncio.sleep(0.3)  # the list is now too old to prove absence
    calls = simulator.data_calls()
    statuses = await asyncio.gather(*(gw.get(f"/sites/junk-{n}") for n in range(100)))
    assert {response.status for response in statuses} == {404}
    assert simulator.data_calls() - calls == 1  # one shared list refresh, not 100 calls


async def test_junk_clients_do_not_starve_legitimate_cold_requests(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator(latency=0.02)
    gw = await make_gateway(
        settings_for(sim, upstream_rps=5.0, upstream_timeout=3.0, negative_ttl=1.0)
    )
    stop = asyncio.Event()

    async def junk(worker: int) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            response = await gw.get(f"/sites/junk-{worker}-{number}")
            assert response.status in (404, 503)

    flood = [asyncio.create_task(junk(n)) for n in range(20)]
    try:
        failures = 0
        service = gw.app[SERVICE]
        for site_id in sorted(sim.state.sites)[:6]:
            await service.cache.delete(service.keys.site_family(site_id))
            response = await gw.get(f"/sites/{site_id}")
            failures += response.status != 200
            await asyncio.sleep(0.2)  # pacing: the flood runs across several negative TTLs
        assert failures == 0
    finally:
        stop.set()
        await asyncio.gather(*flood)
    # Junk cost list refreshes (about one per negative TTL), never one call per id.
    assert sim.data_calls(SITES_PATH) <= 4


async def test_upstream_4xx_never_open_the_circuit(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator(fail_mode="401")
    metrics = Metrics()
    gw = await make_gateway(
        settings_for(sim, circuit_failures=2, negative_ttl=0.05), metrics=metrics
    )
    for _ in range(8):
        assert (await gw.get("/sites/site-0001")).status == 502
        await asyncio.sleep(0.06)  # real time: past the 0.05 s negative TTL of the failure
    assert sim.data_calls() == 8  # each was tried: the circuit never opened
    assert metric_value(metrics.render().decode(), "gateway_upstream_circuit_open") == 0
    assert (await (await gw.get("/readyz")).json())["upstream"]["circuit"] == "closed"


async def test_two_accounts_on_one_redis_never_see_each_other(
    make_simulator: MakeSim, make_gateway: GatewayFactory, redis_url: str
) -> None:
    eu = await make_simulator(sites=eu_fleet())
    us = await make_simulator(sites=us_fleet(), api_key="us-key", api_secret="us-secret")
    admin = Secret(ADMIN)
    gw_eu = await make_gateway(settings_for(eu, redis_url=redis_url, admin_token=admin))
    gw_us = await make_gateway(
        dataclasses.replace(
            settings_for(us, redis_url=redis_url),
            api_key=Secret("us-key"),
            api_secret=Secret("us-secret"),
        )
    )
    eu_view = await (await gw_eu.get("/sites/shared-site-0001")).json()
    us_view = await (await gw_us.get("/sites/shared-site-0001")).json()
    assert eu_view["name"] != us_view["name"]
    assert (await gw_eu.get("/sites/us-site-0001")).status == 404
    assert {c.api_key for c in eu.state.calls} == {SIM_KEY}
    assert {c.api_key for c in us.state.calls} == {"us-key"}
    # A purge and a pause of one account leave the other alone.
    purged = await gw_eu.post("/admin/purge", json={}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert purged.status == 200
    us.config.fail_mode = "429"
    us.config.retry_after = 5
    await gw_us.get("/sites/us-site-0002/../us-site-0001")  # normalized path: a hit anyway
    await gw_us.post("/admin/purge", json={})  # no admin token there: 404, nothing happens
    hit = await gw_us.get("/sites/shared-site-0001")
    assert hit.status == 200 and "; hit" in hit.headers["Cache-Status"]
    eu_namespace = gw_eu.app[SERVICE].keys.namespace
    us_namespace = gw_us.app[SERVICE].keys.namespace
    assert eu_namespace != us_namespace and SIM_SECRET not in eu_namespace


async def test_purge_inside_a_pause_keeps_the_pause(
    make_simulator: MakeSim,
    make_gateway: GatewayFactory,
    redis_url: str,
    redis_server: RedisProcess,
) -> None:
    sim = await make_simulator()
    gw = await make_gateway(
        settings_for(sim, redis_url=redis_url, admin_token=Secret(ADMIN), cache_ttl=0.2)
    )
    assert (await gw.get("/sites/site-0001")).status == 200
    await asyncio.sleep(0.3)  # real time: past the 0.2 s TTL
    sim.config.fail_mode = "429"
    sim.config.retry_after = 4
    await gw.get("/sites/site-0001")  # stale; its refresh meets the 429 and stores a pause
    await eventually(lambda: _pause_stored(gw, redis_server))
    lock_key = gw.app[SERVICE].keys.lock("anything")
    client = redis_server.client()
    client.set(lock_key, "held", px=10_000)
    purged = await gw.post("/admin/purge", json={}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert purged.status == 200 and (await purged.json())["keys"] > 0
    assert client.exists(gw.app[SERVICE].keys.pause) and client.exists(lock_key)
    client.close()
    calls = sim.data_calls()
    held = await gw.get("/sites/site-0002")
    assert held.status == 503 and int(held.headers["Retry-After"]) >= 1
    assert sim.data_calls() == calls  # the pause held: nothing went upstream


async def _pause_stored(gw: object, redis_server: RedisProcess) -> bool:
    client = redis_server.client()
    try:
        return bool(client.exists(gw.app[SERVICE].keys.pause))  # type: ignore[attr-defined]
    finally:
        client.close()


async def test_purge_with_redis_down_is_a_503_problem(
    simulator: Simulator, make_gateway: GatewayFactory, own_redis: RedisProcess
) -> None:
    gw = await make_gateway(
        settings_for(
            simulator, redis_url=own_redis.url, redis_timeout=0.2, admin_token=Secret(ADMIN)
        )
    )
    assert (await gw.get("/sites/site-0001")).status == 200
    own_redis.kill()
    for body in ({}, {"site_id": "site-0001"}):
        response = await gw.post(
            "/admin/purge", json=body, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert response.status == 503
        assert response.content_type == "application/problem+json"
        problem = await response.json()
        assert problem["type"] == "/problems/cache-unavailable" and "Traceback" not in str(problem)


async def test_a_stalled_redis_costs_a_bounded_number_of_slow_requests(
    simulator: Simulator, make_gateway: GatewayFactory, own_redis: RedisProcess
) -> None:
    gw = await make_gateway(settings_for(simulator, redis_url=own_redis.url, redis_timeout=0.3))
    assert (await gw.get("/sites")).status == 200
    service = gw.app[SERVICE]
    process = own_redis.process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        # Wait until the invalidation channel has noticed the silence (the tier is then no
        # longer trusted, so every request would ask Redis).
        await eventually(lambda: _untrusted(service), timeout=5)
        slow = 0
        for number in range(30):
            started = time.monotonic()
            response = await gw.get(f"/sites/site-{number % 12 + 1:04d}")
            assert response.status == 200
            slow += time.monotonic() - started > 0.2
        assert slow <= 4, f"{slow} of 30 requests waited for the stalled Redis"
    finally:
        os.kill(process.pid, signal.SIGCONT)
    await eventually(lambda: _trusted_again(gw), timeout=10)


async def _untrusted(service: object) -> bool:
    invalidations = service.cache._invalidations  # type: ignore[attr-defined]
    return not invalidations.healthy


async def _trusted_again(gw: object) -> bool:
    response = await gw.get("/readyz")  # type: ignore[attr-defined]
    return bool((await response.json())["redis"] == "up")


async def test_a_burst_queues_on_the_pool_without_a_redis_error(
    make_simulator: MakeSim,
    make_gateway: GatewayFactory,
    redis_url: str,
    redis_server: RedisProcess,
) -> None:
    sim = await make_simulator(latency=0.1)
    metrics = Metrics()
    gw = await make_gateway(settings_for(sim, redis_url=redis_url), metrics=metrics)
    assert (await gw.get("/sites")).status == 200
    service = gw.app[SERVICE]
    service.cache.tier.clear()  # every request below must read Redis
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(number: int) -> int:
            url = gw.make_url(f"/sites/site-{number % 12 + 1:04d}/connectors")
            async with session.get(url) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one(n) for n in range(400)))
    assert set(statuses) == {200}
    assert metric_value(metrics.render().decode(), "gateway_redis_errors_total") == 0
    client = redis_server.client()
    assert len(client.client_list()) <= 64 + 3  # the pool, the listener, this client
    client.close()


async def test_the_upstream_timeout_is_honoured(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator(fail_mode="hang")
    gw = await make_gateway(settings_for(sim, upstream_timeout=1.2))
    started = time.monotonic()
    response = await gw.get("/sites/site-0001")
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert 1.1 < elapsed < 1.7, elapsed


async def test_cursors_are_keyed_apart_from_the_api_secret_and_shared_through_redis(
    simulator: Simulator, make_gateway: GatewayFactory, redis_url: str
) -> None:
    a = await make_gateway(settings_for(simulator, redis_url=redis_url))
    b = await make_gateway(settings_for(simulator, redis_url=redis_url))
    page = await (await a.get("/connectors", params={"limit": "5"})).json()
    cursor = page["next_cursor"]
    assert (await b.get("/connectors", params={"limit": "5", "cursor": cursor})).status == 200
    # Same API secret, another cursor secret: the cursor is not accepted.
    other = await make_gateway(settings_for(simulator, cursor_secret=Secret("another-cursor-key")))
    assert (await other.get("/connectors", params={"limit": "5", "cursor": cursor})).status == 400
    assert SIM_SECRET.encode() not in cursor.encode()


@pytest.mark.parametrize("count", [2000])
async def test_a_junk_flood_leaves_the_embedded_cache_small(
    simulator: Simulator, make_gateway: GatewayFactory, count: int
) -> None:
    gw = await make_gateway(settings_for(simulator))
    assert (await gw.get("/sites")).status == 200
    size = len(gw.app[SERVICE].cache.tier)
    for number in range(count):
        assert (await gw.get(f"/sites/flood-{number}")).status == 404
    assert len(gw.app[SERVICE].cache.tier) == size
