"""Upstream shielding with real redis-server processes, two gateway instances on one Redis,
and the simulator as upstream (issue: collapsing, stale, rate ceiling, pauses, circuit,
Redis fail-open)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.app_keys import SERVICE
from gateway.errors import UpstreamUnavailable
from gateway.metrics import Metrics
from tests.conftest import (
    GatewayFactory,
    RedisProcess,
    Simulator,
    eventually,
    fills_settled,
    metric_value,
    requests_seen,
    settings_for,
)

MakeSim = Callable[..., Awaitable[Simulator]]


async def storm(urls: list[str]) -> list[tuple[int, str, bytes]]:
    """All requests at once, on an unlimited connection pool."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> tuple[int, str, bytes]:
            async with session.get(url) as response:
                return response.status, response.headers["Cache-Status"], await response.read()

        return await asyncio.gather(*(one(url) for url in urls))


async def _two(
    make_gateway: GatewayFactory, sim: Simulator, redis_url: str, **overrides: object
) -> tuple[TestClient, TestClient, Metrics, Metrics]:
    metrics_a, metrics_b = Metrics(), Metrics()
    settings = settings_for(sim, redis_url=redis_url, **overrides)  # type: ignore[arg-type]
    a = await make_gateway(settings, metrics=metrics_a)
    b = await make_gateway(settings, metrics=metrics_b)
    return a, b, metrics_a, metrics_b


async def test_200_concurrent_cold_requests_make_one_upstream_call(
    make_simulator: MakeSim, make_gateway: GatewayFactory, redis_url: str
) -> None:
    release = asyncio.Event()
    sim = await make_simulator(held_until=release)
    metrics = Metrics()
    # Redis is not under test here: the 200 clients share the event loop with the gateway,
    # so a reply can wait behind their work longer than the tests' usual 0.3 s timeout.  The
    # held upstream answers as late as the last request arrives: a generous upstream budget.
    settings = settings_for(sim, redis_url=redis_url, redis_timeout=2.0, upstream_timeout=30.0)
    gw = await make_gateway(settings, metrics=metrics)
    storming = asyncio.create_task(storm([str(gw.make_url("/sites/site-0002"))] * 200))
    # Upstream answers once every request is in the gateway: none can arrive after the
    # fetch (and be a plain hit), however slowly a loaded machine opens 200 connections.
    await eventually(lambda: requests_seen(gw) >= 200 and sim.data_calls() >= 1, timeout=30)
    release.set()
    responses = await storming
    assert [status for status, _, _ in responses] == [200] * 200
    assert sim.data_calls() == 1
    statuses = [cache_status for _, cache_status, _ in responses]
    assert statuses.count("chargepilot-gateway; fwd=miss; stored") == 1
    collapsed = statuses.count("chargepilot-gateway; fwd=miss; stored; collapsed")
    hits = sum("; hit; ttl=" in status for status in statuses)
    assert collapsed + hits == 199 and collapsed > 190
    text = metrics.render().decode()
    assert metric_value(text, "gateway_coalesced_requests_total", route="/sites/{id}") == collapsed
    assert metric_value(text, "gateway_redis_errors_total") == 0


async def test_100_cold_requests_over_two_instances_make_one_upstream_call(
    make_simulator: MakeSim, make_gateway: GatewayFactory, redis_url: str
) -> None:
    release = asyncio.Event()
    sim = await make_simulator(held_until=release)
    a, b, metrics_a, metrics_b = await _two(
        make_gateway, sim, redis_url, redis_timeout=2.0, upstream_timeout=30.0
    )
    urls = [str(gw.make_url("/sites/site-0009")) for _ in range(50) for gw in (a, b)]
    storming = asyncio.create_task(storm(urls))
    await eventually(
        lambda: requests_seen(a) + requests_seen(b) >= 100 and sim.data_calls() >= 1, timeout=30
    )
    release.set()
    responses = await storming
    assert [status for status, _, _ in responses] == [200] * 100
    assert sim.data_calls() == 1
    assert len({body for _, _, body in responses}) == 1
    collapsed = sum("collapsed" in cache_status for _, cache_status, _ in responses)
    hits = sum("; hit; ttl=" in cache_status for _, cache_status, _ in responses)
    assert collapsed + hits == 99 and collapsed > 90
    coalesced = sum(
        metric_value(m.render().decode(), "gateway_coalesced_requests_total")
        for m in (metrics_a, metrics_b)
    )
    assert coalesced == collapsed


async def test_stale_while_revalidate_and_stale_if_error(
    make_simulator: MakeSim, make_gateway: GatewayFactory, redis_url: str
) -> None:
    sim = await make_simulator()
    gw = await make_gateway(
        settings_for(sim, redis_url=redis_url, cache_ttl=0.3, cache_stale=1.0, circuit_failures=2)
    )
    good = await (await gw.get("/sites/site-0001")).read()
    await asyncio.sleep(0.4)  # real time: past the 0.3 s TTL
    # Upstream healthy: stale at once, one background refresh.
    swr = await gw.get("/sites/site-0001")
    assert "; hit; ttl=-" in swr.headers["Cache-Status"]
    assert "detail=stale-while-revalidate" in swr.headers["Cache-Status"]
    await eventually(lambda: _calls_at_least(sim, 2))
    await eventually(lambda: fills_settled(gw))  # the refresh is stored, not only asked for
    fresh = await gw.get("/sites/site-0001")
    assert (
        "; hit; ttl=" in fresh.headers["Cache-Status"]
        and "ttl=-" not in fresh.headers["Cache-Status"]
    )
    # Upstream failing after expiry: the stale answer keeps coming.
    sim.config.fail_mode = "500"
    await asyncio.sleep(0.35)  # real time: stale again
    for _ in range(4):
        response = await gw.get("/sites/site-0001")
        assert response.status == 200
        assert await response.read() == good
        assert "ttl=-" in response.headers["Cache-Status"]
        await eventually(lambda: fills_settled(gw))  # its refresh failed
    assert "detail=stale-if-error" in response.headers["Cache-Status"]  # circuit now open
    # After the stale window: nothing to serve, the circuit is open → 503 with Retry-After.
    await asyncio.sleep(1.1)  # real time: past the 1 s stale window
    late = await gw.get("/sites/site-0001")
    assert late.status == 503
    assert int(late.headers["Retry-After"]) >= 1


async def _calls_at_least(sim: Simulator, count: int) -> bool:
    return sim.data_calls() >= count


async def test_retry_after_pauses_every_instance(
    make_simulator: MakeSim, make_gateway: GatewayFactory, redis_url: str
) -> None:
    sim = await make_simulator(fail_mode="429", retry_after=3)
    a, b, _, _ = await _two(make_gateway, sim, redis_url)
    started = time.monotonic()
    first = await a.get("/sites/site-0001")
    assert first.status == 503 and first.headers["Retry-After"] == "3"
    assert sim.data_calls() == 1
    sim.config.fail_mode = None
    # The pause began after `started`; a round starting before 2 s ends well inside it,
    # however slow the machine is.
    while time.monotonic() - started < 2.0:
        for gw, site in ((a, "site-0002"), (b, "site-0003"), (b, "site-0001")):
            held = await gw.get(f"/sites/{site}")
            assert held.status == 503
            assert 1 <= int(held.headers["Retry-After"]) <= 3
        await asyncio.sleep(0.2)  # pacing: the pause is checked across its length
    assert sim.data_calls() == 1

    async def through() -> bool:
        return (await b.get("/sites/site-0002")).status == 200

    await eventually(through, timeout=10)  # the pause ends; requests held meanwhile cost nothing
    assert sim.data_calls() == 2


async def test_shared_rate_ceiling(
    make_simulator: MakeSim, make_gateway: GatewayFactory, redis_url: str
) -> None:
    """Two replicas' upstream clients, 24 distinct fetches at once: the shared bucket
    spreads them at the configured rate (burst: one second's worth)."""
    from gateway.app_keys import SERVICE

    sim = await make_simulator()
    a, b, metrics_a, _ = await _two(
        make_gateway, sim, redis_url, upstream_rps=4.0, upstream_timeout=10.0
    )
    ids = sorted(sim.state.sites) * 2
    fillers = [a.app[SERVICE].filler, b.app[SERVICE].filler]
    await asyncio.gather(*(fillers[n % 2].fill_site(site_id) for n, site_id in enumerate(ids)))
    times = sorted(call.time for call in sim.state.calls)
    assert len(times) == 24
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert worst <= 8, f"{worst} upstream calls in one second"
    text = metrics_a.render().decode()
    assert metric_value(text, "gateway_upstream_rate_limit") == 4.0


async def test_budget_spent_gives_503_when_nothing_is_stale(
    make_simulator: MakeSim, make_gateway: GatewayFactory, redis_url: str
) -> None:
    sim = await make_simulator()
    # One token per 5 s, the usual 2 s budget: the second fill would wait ~4 s for a token.
    # The TTL leaves the first request time to read back what its fill stored on a loaded
    # machine (at 0.3 s it could expire first, and its second fetch found the bucket empty).
    gw = await make_gateway(
        settings_for(sim, redis_url=redis_url, upstream_rps=0.2, cache_ttl=1.0, cache_stale=0.0)
    )
    assert (await gw.get("/sites/site-0001")).status == 200  # the list: the one token
    await asyncio.sleep(1.1)  # real time: everything expired, nothing stale
    held = await gw.get("/sites/site-0002")
    assert held.status == 503 and int(held.headers["Retry-After"]) >= 1
    assert sim.data_calls() == 1


async def test_circuit_opens_then_half_open_probe_closes_it(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator(fail_mode="500")
    metrics = Metrics()
    gw = await make_gateway(
        settings_for(sim, circuit_failures=3, circuit_cooldown=0.5, negative_ttl=0.2),
        metrics=metrics,
    )
    for _ in range(3):  # 500 is not retried; a failed list fetch waits the negative TTL
        assert (await gw.get("/sites/site-0001")).status == 502
        await asyncio.sleep(0.25)  # real time: past the 0.2 s negative TTL
    assert sim.data_calls() == 3
    assert metric_value(metrics.render().decode(), "gateway_upstream_circuit_open") == 1
    calls = sim.data_calls()
    cold = await gw.get("/sites/site-0005")
    assert cold.status == 503 and int(cold.headers["Retry-After"]) >= 1
    assert sim.data_calls() == calls  # refused at once, upstream untouched
    assert (await (await gw.get("/readyz")).json())["upstream"]["circuit"] == "open"
    sim.config.fail_mode = None
    await asyncio.sleep(0.6)  # real time: past the 0.5 s cool-down
    assert (await gw.get("/sites/site-0005")).status == 200  # the half-open probe
    assert metric_value(metrics.render().decode(), "gateway_upstream_circuit_open") == 0


async def test_redis_killed_during_traffic_then_back(
    make_simulator: MakeSim, make_gateway: GatewayFactory, own_redis: RedisProcess
) -> None:
    sim = await make_simulator()
    metrics = Metrics()
    gw = await make_gateway(
        settings_for(sim, redis_url=own_redis.url, redis_timeout=0.2), metrics=metrics
    )
    assert (await gw.get("/sites")).status == 200
    sites = sorted(sim.state.sites)
    own_redis.kill()
    for round_ in range(3):
        for site_id in sites:
            response = await gw.get(f"/sites/{site_id}")
            assert response.status == 200, (round_, site_id)
    ready = await gw.get("/readyz")
    assert ready.status == 200
    report = await ready.json()
    assert report["redis"] == "down" and report["ready"] is True
    text = metrics.render().decode()
    assert metric_value(text, "gateway_redis_errors_total") > 0
    assert metric_value(text, "gateway_redis_up") == 0
    own_redis.start()
    restarted = time.monotonic()

    await eventually(lambda: _stored_in_redis(gw, own_redis, "site-0004"), timeout=5)
    assert time.monotonic() - restarted < 5
    assert (await (await gw.get("/readyz")).json())["redis"] == "up"


async def _stored_in_redis(gw: TestClient, redis_process: RedisProcess, site_id: str) -> bool:
    """Ask the gateway for the site, then look whether it landed in Redis."""
    await gw.get(f"/sites/{site_id}")
    client = redis_process.client()
    try:
        return bool(client.exists(gw.app[SERVICE].keys.site(site_id)))
    finally:
        client.close()


async def test_starting_while_redis_is_unreachable(
    make_simulator: MakeSim, make_gateway: GatewayFactory, own_redis: RedisProcess
) -> None:
    sim = await make_simulator()
    own_redis.kill()
    gw = await make_gateway(settings_for(sim, redis_url=own_redis.url, redis_timeout=0.2))
    assert (await gw.get("/sites/site-0001")).status == 200
    assert (
        (await gw.get("/sites/site-0001"))
        .headers["Cache-Status"]
        .startswith("chargepilot-gateway; hit")
    )  # served from the in-process tier
    assert (await gw.get("/readyz")).status == 200
    own_redis.start()

    await eventually(lambda: _stored_in_redis(gw, own_redis, "site-0002"), timeout=5)


async def test_proactive_refresh_keeps_steady_traffic_fresh(
    make_simulator: MakeSim, make_gateway: GatewayFactory, redis_url: str
) -> None:
    sim = await make_simulator()
    gw = await make_gateway(
        settings_for(sim, redis_url=redis_url, cache_ttl=1.0, refresh_ahead=0.3)
    )
    first = await gw.get("/sites/site-0006")
    assert first.headers["Cache-Status"].endswith("stored")
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        response = await gw.get("/sites/site-0006")
        status = response.headers["Cache-Status"]
        assert "; hit; ttl=" in status and "ttl=-" not in status, status
        await asyncio.sleep(0.05)  # pacing: steady traffic across the TTL
    assert 2 <= sim.data_calls() <= 5


async def test_a_dead_lock_holder_blocks_no_longer_than_the_lock(
    make_simulator: MakeSim,
    make_gateway: GatewayFactory,
    redis_url: str,
    redis_server: RedisProcess,
) -> None:
    sim = await make_simulator()
    gw = await make_gateway(settings_for(sim, redis_url=redis_url, upstream_timeout=0.5))
    client = redis_server.client()
    # A replica that died holding the fetch lock of the fleet list (lock ttl = timeout + 5 s).
    client.set(gw.app[SERVICE].keys.lock("fleet"), "dead-owner", px=800)
    client.close()
    started = time.monotonic()
    response = await gw.get("/sites/site-0007")
    assert response.status == 200
    assert 0.7 < time.monotonic() - started < 3


@pytest.mark.parametrize("owner", ["someone-else"])
async def test_only_the_owner_releases_a_lock(redis_url: str, owner: str) -> None:
    from gateway.keys import Keys
    from gateway.locks import RedisCoordinator
    from gateway.store import RedisStore, redis_client

    store = RedisStore(redis_client(redis_url, timeout=0.5))
    coordinator = RedisCoordinator(store, Keys("t"), lock_ttl=5)
    token = await coordinator.try_lock("x")
    assert token is not None
    assert await coordinator.try_lock("x") is None
    await coordinator.unlock("x", owner)
    assert await coordinator.try_lock("x") is None  # still held: not the owner's token
    await coordinator.unlock("x", token)
    assert await coordinator.try_lock("x") is not None
    await store.close()


def test_circuit_states_with_a_fake_clock() -> None:
    from gateway.circuit import Circuit, Health

    now = [0.0]
    changes: list[str] = []
    circuit = Circuit(failures=2, cooldown=10, on_change=changes.append, clock=lambda: now[0])

    def attempt(health: Health) -> None:
        permit = circuit.allow()
        assert permit is not None
        permit.record(health)

    attempt(Health.FAILURE)
    assert circuit.state == "closed"
    attempt(Health.SUCCESS)  # success resets the count
    attempt(Health.FAILURE)
    attempt(Health.NEUTRAL)  # a 4xx or a pause says nothing: the count stays
    assert circuit.state == "closed"
    attempt(Health.FAILURE)
    assert circuit.state == "open" and circuit.allow() is None
    assert circuit.remaining() == 10
    now[0] = 10.5
    probe = circuit.allow()  # the one half-open probe
    assert probe is not None and probe.probe
    assert circuit.state == "half_open" and circuit.allow() is None
    probe.record(Health.NEUTRAL)  # the probe was paused/throttled: the next call may probe
    attempt(Health.FAILURE)  # a failed probe re-opens at once
    assert circuit.state == "open" and circuit.allow() is None
    now[0] = 21
    attempt(Health.SUCCESS)
    assert circuit.state == "closed" and circuit.allow() and circuit.allow()
    assert changes == ["open", "half_open", "open", "half_open", "closed"]


def test_local_bucket() -> None:
    from gateway.shield import LocalBucket

    now = [0.0]
    bucket = LocalBucket(2.0, clock=lambda: now[0])
    assert bucket.take() == 0 and bucket.take() == 0  # burst of one second's worth
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() == 0
    assert bucket.take() == pytest.approx(0.5)


async def test_without_redis_the_rate_ceiling_is_local(
    make_simulator: MakeSim, make_gateway: GatewayFactory, own_redis: RedisProcess
) -> None:
    sim = await make_simulator()
    own_redis.kill()
    gw = await make_gateway(
        settings_for(
            sim, redis_url=own_redis.url, redis_timeout=0.1, upstream_rps=1.0, upstream_timeout=0.3
        )
    )
    from gateway.app_keys import SERVICE

    filler = gw.app[SERVICE].filler
    results = await asyncio.gather(
        *(filler.fill_site(f"site-000{n}") for n in (1, 2, 3)), return_exceptions=True
    )
    assert sum(isinstance(result, UpstreamUnavailable) for result in results) >= 1
    assert sim.data_calls() < 3


async def test_a_lock_winner_rechecks_the_cache_before_fetching(
    make_simulator: MakeSim, make_gateway: GatewayFactory, redis_url: str
) -> None:
    """A miss that was really a Redis hiccup (or a race with another replica's fill) must
    not become a second upstream call: the lock winner looks again first."""
    from gateway.app_keys import SERVICE

    sim = await make_simulator()
    a, b, _, _ = await _two(make_gateway, sim, redis_url)
    assert (await a.get("/sites/site-0001")).status == 200
    service = b.app[SERVICE]
    filled = await service.engine._lead(service.site_fill("site-0001"))
    assert filled.remote and not filled.entries
    assert sim.data_calls() == 1
    # A key nobody has filled is fetched.
    await a.app[SERVICE].cache.delete(service.keys.site_family("site-0002"))
    filled = await service.engine._lead(service.site_fill("site-0002"))
    assert service.keys.site("site-0002") in filled.entries
    assert sim.data_calls() == 2


async def test_stale_traffic_alone_recovers_after_the_circuit_cool_down(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    """Only stale hits after an outage: their refresh must become the half-open probe, or
    the gateway would serve stale data until the stale window ends."""
    sim = await make_simulator()
    gw = await make_gateway(
        settings_for(
            sim, cache_ttl=0.2, circuit_failures=1, circuit_cooldown=0.5, upstream_retries=0
        )
    )
    await gw.get("/sites/site-0001")
    await asyncio.sleep(0.3)  # real time: stale (the entry's age is wall-clock)
    sim.config.fail_mode = "500"
    await gw.get("/sites/site-0001")  # stale; its refresh fails and opens the circuit
    await eventually(lambda: fills_settled(gw))
    assert "stale-if-error" in (await gw.get("/sites/site-0001")).headers["Cache-Status"]
    sim.config.fail_mode = None
    await asyncio.sleep(0.6)  # past the cool-down, which this app's circuit counts in real time
    await gw.get("/sites/site-0001")  # stale; this refresh is the probe
    await eventually(lambda: fills_settled(gw))
    recovered = await gw.get("/sites/site-0001")
    assert "; hit; ttl=" in recovered.headers["Cache-Status"]
    assert "ttl=-" not in recovered.headers["Cache-Status"]
