"""The gateway on a real Sentinel deployment (`redis+sentinel://` URL): a master, a replica
and three sentinels, and a failover by kill -9 of the master under traffic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.app_keys import SERVICE
from gateway.errors import CacheUnavailable
from gateway.metrics import Metrics
from gateway.store import MAX_CONNECTIONS, redis_client
from tests import ha_checks
from tests.conftest import GatewayFactory, eventually, metric_value, settings_for
from tests.ha_checks import MakeSim
from tests.redis_ha import SentinelSetup, start_sentinel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    with start_sentinel(Path(tmp_path_factory.mktemp("sentinel"))) as setup:
        yield setup


@pytest.fixture
def sentinel(sentinel_setup: SentinelSetup) -> SentinelSetup:
    sentinel_setup.flush()
    return sentinel_setup


@pytest.fixture
async def master_client(sentinel: SentinelSetup) -> AsyncIterator[aioredis.Redis]:
    client: aioredis.Redis = redis_client(sentinel.url, timeout=1.0)
    yield client
    await client.aclose()


async def test_store_operations_go_to_the_master(sentinel: SentinelSetup) -> None:
    keys = await ha_checks.check_store(sentinel)
    master = sentinel.master()
    with master.client() as client:
        assert client.wait(1, 2000) == 1
    replica = next(node for node in sentinel.data_nodes if node is not master)
    with replica.client() as client:  # replicated: the replica could take over with them
        assert client.get(keys[-1]) == b"kept" and client.get(keys[0]) is None


def _discovery_connections(setup: SentinelSetup) -> int:
    """Connections whose last command was SENTINEL MASTERS (redis-py's master discovery)."""
    count = 0
    for node in setup.sentinels:
        with node.client() as client:
            count += sum(c["cmd"] == "sentinel|masters" for c in client.client_list())
    return count


async def test_closing_the_client_closes_its_sentinel_connections(
    sentinel: SentinelSetup,
) -> None:
    client = redis_client(sentinel.url, timeout=1.0)
    assert await client.set("k", b"v") is True
    assert _discovery_connections(sentinel) >= 1
    await client.aclose()

    async def closed() -> bool:
        return _discovery_connections(sentinel) == 0

    await eventually(closed)


async def test_a_burst_shares_a_bounded_pool(sentinel: SentinelSetup) -> None:
    """200 concurrent commands: at most 32 connections (each new one also asks a sentinel)."""
    async with ha_checks.instances(sentinel.url, 1, timeout=2.0) as (instance,):
        await instance.store.set_many([("k", b"v")], ttl=5)
        values = await asyncio.gather(*(instance.store.get("k") for _ in range(200)))
        assert values == [b"v"] * 200
        with sentinel.master().client() as client:
            ours = [c for c in client.client_list() if c["cmd"] in ("get", "set")]
        assert 1 <= len(ours) <= MAX_CONNECTIONS


async def test_a_hung_sentinel_does_not_hide_the_master(tmp_path: Path) -> None:
    """A hung sentinel accepts connections but never answers: finding the master must move
    on to the next sentinel within one call's budget (the default GATEWAY_REDIS_TIMEOUT)."""
    with start_sentinel(tmp_path) as setup:
        setup.sentinels[0].pause()  # the first one the URL names: asked first
        try:
            async with ha_checks.instances(setup.url, 1, timeout=0.5) as (instance,):
                await instance.store.set_many([("k", b"v")], ttl=5)
                assert await instance.store.get("k") == b"v"
        finally:
            setup.sentinels[0].resume()


async def test_rate_bucket_and_pause_are_shared(sentinel: SentinelSetup) -> None:
    await ha_checks.check_shield(sentinel)


async def test_fetch_locks(sentinel: SentinelSetup) -> None:
    await ha_checks.check_locks(sentinel)


async def test_pubsub_through_the_master(master_client: aioredis.Redis) -> None:
    pubsub = master_client.pubsub()
    try:
        await pubsub.subscribe("cpgw:v1:invalidate")
        assert await master_client.publish("cpgw:v1:invalidate", b"site:site-0001") == 1
        async with asyncio.timeout(3):
            while (message := await pubsub.get_message(True, timeout=0.1)) is None:
                pass
        assert message["data"] == b"site:site-0001"
    finally:
        await pubsub.aclose()


async def test_every_endpoint_is_cached(
    make_simulator: MakeSim, make_gateway: GatewayFactory, sentinel: SentinelSetup
) -> None:
    await ha_checks.check_every_endpoint_is_cached(make_simulator, make_gateway, sentinel)


async def test_two_gateways_collapse_cold_requests(
    make_simulator: MakeSim, make_gateway: GatewayFactory, sentinel: SentinelSetup
) -> None:
    await ha_checks.check_two_gateways_collapse(make_simulator, make_gateway, sentinel)


async def test_rate_budget_is_shared_by_two_gateways(
    make_simulator: MakeSim, make_gateway: GatewayFactory, sentinel: SentinelSetup
) -> None:
    await ha_checks.check_shared_budget(make_simulator, make_gateway, sentinel)


async def test_retry_after_pause_holds_both_gateways(
    make_simulator: MakeSim, make_gateway: GatewayFactory, sentinel: SentinelSetup
) -> None:
    await ha_checks.check_shared_pause(make_simulator, make_gateway, sentinel)


async def test_the_change_feed_through_the_master(
    make_simulator: MakeSim, make_gateway: GatewayFactory, sentinel: SentinelSetup
) -> None:
    await ha_checks.check_change_feed(make_simulator, make_gateway, sentinel)


async def test_the_tier_is_invalidated_through_the_master(
    make_simulator: MakeSim, make_gateway: GatewayFactory, sentinel: SentinelSetup
) -> None:
    await ha_checks.check_invalidation(make_simulator, make_gateway, sentinel)


async def test_admin_purge(
    make_simulator: MakeSim, make_gateway: GatewayFactory, sentinel: SentinelSetup
) -> None:
    await ha_checks.check_purge(make_simulator, make_gateway, sentinel)


async def test_failover_keeps_serving_and_writes_to_the_new_master(
    make_simulator: MakeSim, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    sim = await make_simulator()
    metrics = Metrics()
    with start_sentinel(tmp_path) as setup:
        gw = await make_gateway(
            settings_for(sim, redis_url=setup.url, redis_timeout=0.3), metrics=metrics
        )
        cached = [f"site-{n:04d}" for n in range(1, 7)]
        for site_id in cached:
            assert (await gw.get(f"/sites/{site_id}")).status == 200
        old = setup.master()
        with old.client() as client:  # the replica has every cached entry before the kill
            assert client.wait(1, 2000) == 1
        statuses: list[int] = []
        stop = asyncio.Event()

        async def traffic() -> None:
            while not stop.is_set():
                for site_id in cached:
                    statuses.append((await gw.get(f"/sites/{site_id}")).status)
                await asyncio.sleep(0.01)

        keys = gw.app[SERVICE].keys
        client_traffic = asyncio.create_task(traffic())
        try:
            killed = time.monotonic()
            setup.kill_master()
            new = await asyncio.to_thread(setup.wait_for_new_master, old)
            promoted = time.monotonic()

            async def new_key_on_new_master() -> bool:
                # Through the gateway's own store: drop site-0010, then let a request
                # fetch it again, which writes it (to whichever master the store reaches).
                try:
                    await gw.app[SERVICE].cache.delete(keys.site_family("site-0010"))
                except CacheUnavailable:
                    return False
                await gw.get("/sites/site-0010")
                with new.client() as client:
                    return bool(client.exists(keys.site("site-0010")))

            async def ready_with_redis() -> bool:
                report = await (await gw.get("/readyz")).json()
                return bool(report["redis"] == "up")

            await eventually(new_key_on_new_master, timeout=10)
            await eventually(ready_with_redis, timeout=10)
            recovered = time.monotonic()
            assert recovered - promoted < 10
        finally:
            stop.set()
            await client_traffic
        assert set(statuses) == {200} and len(statuses) > 6
        with new.client() as client:  # written before the kill, on the new master now
            assert client.exists(*(keys.site(site_id) for site_id in cached)) == 6
        hit = await gw.get("/sites/site-0001")
        assert hit.headers["Cache-Status"].startswith(ha_checks.HIT)
        text = metrics.render().decode()
        assert metric_value(text, "gateway_redis_errors_total") > 0  # it did see the outage
        assert metric_value(text, "gateway_redis_up") == 1
        print(
            f"failover: promoted {promoted - killed:.1f} s after kill -9, gateway back on "
            f"Redis {recovered - promoted:.1f} s after promotion, {len(statuses)} requests "
            f"served meanwhile, redis errors {metric_value(text, 'gateway_redis_errors_total')}"
        )
