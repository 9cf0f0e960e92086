"""The gateway on a real three-master Redis Cluster (`redis+cluster://` URL).

Keys without a common hash tag land on different nodes, so every multi-key path
(pipelined writes, deletes, the purge's scan) crosses slots; the Lua scripts must find their
keys in one slot.  Pub/sub: classic PUBLISH is broadcast over the cluster bus to subscribers on
every node, and redis-py's asyncio `RedisCluster.pubsub()` works for both classic and sharded
(SSUBSCRIBE/SPUBLISH) channels.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from gateway.keys import Keys
from gateway.store import redis_client
from tests import ha_checks
from tests.conftest import GatewayFactory, settings_for
from tests.ha_checks import MakeSim
from tests.redis_ha import ClusterSetup, start_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    with start_cluster(Path(tmp_path_factory.mktemp("cluster"))) as setup:
        yield setup


@pytest.fixture
def cluster(cluster_setup: ClusterSetup) -> ClusterSetup:
    cluster_setup.flush()
    return cluster_setup


@pytest.fixture
async def cluster_client(cluster: ClusterSetup) -> AsyncIterator[RedisCluster]:
    client: RedisCluster = redis_client(cluster.url, timeout=1.0)
    yield client
    await client.aclose()


async def test_store_operations_cross_every_node(cluster: ClusterSetup) -> None:
    keys = await ha_checks.check_store(cluster)
    assert cluster.ports_for(keys) == cluster.ports


async def test_rate_bucket_and_pause_are_shared_in_one_slot(cluster: ClusterSetup) -> None:
    await ha_checks.check_shield(cluster)
    assert len(cluster.ports_for([ha_checks.KEYS.bucket, ha_checks.KEYS.pause])) == 1


async def test_fetch_locks_across_slots(cluster: ClusterSetup) -> None:
    await ha_checks.check_locks(cluster)


async def _next_message(pubsub: Any, *, sharded: bool = False) -> dict[str, Any]:
    """The next published message (subscribe confirmations skipped), within 3 s."""
    get = pubsub.get_sharded_message if sharded else pubsub.get_message
    async with asyncio.timeout(3):
        while True:
            message = await get(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                return dict(message)


async def test_classic_publish_reaches_subscribers_on_every_node(
    cluster: ClusterSetup, cluster_client: RedisCluster
) -> None:
    channel = "cpgw:v1:invalidate"
    subscribers = [aioredis.Redis(host="127.0.0.1", port=node.port) for node in cluster.nodes]
    pubsubs = [client.pubsub() for client in subscribers]
    try:
        for pubsub in pubsubs:
            await pubsub.subscribe(channel)
        # Once through the gateway's cluster client (it picks some node), once on node 2.
        await cluster_client.publish(channel, b"site:site-0001")
        async with aioredis.Redis(host="127.0.0.1", port=cluster.nodes[2].port) as direct:
            await direct.publish(channel, b"all")
        for pubsub in pubsubs:
            assert (await _next_message(pubsub))["data"] == b"site:site-0001"
            assert (await _next_message(pubsub))["data"] == b"all"
    finally:
        for pubsub, client in zip(pubsubs, subscribers, strict=True):
            await pubsub.aclose()
            await client.aclose()


async def test_cluster_client_pubsub_classic_and_sharded(
    cluster: ClusterSetup, cluster_client: RedisCluster
) -> None:
    # ClusterPubSub picks its node from the slot cache without filling it first: on a
    # client that has not run a command yet, subscribe() fails with KeyError(slot).
    await cluster_client.initialize()
    pubsub = cluster_client.pubsub()
    sharded = cluster_client.pubsub()
    try:
        await pubsub.subscribe("cpgw:v1:invalidate")
        await sharded.ssubscribe("cpgw:{acct-1}:invalidate")
        # Publish to the classic channel from a node the subscriber is not connected to.
        for node in cluster.nodes:
            async with aioredis.Redis(host="127.0.0.1", port=node.port) as direct:
                await direct.publish("cpgw:v1:invalidate", f"from {node.port}".encode())
        got = {(await _next_message(pubsub))["data"] for _ in cluster.nodes}
        assert got == {f"from {node.port}".encode() for node in cluster.nodes}
        # A sharded channel lives on its slot's node; SPUBLISH is routed there.
        assert await cluster_client.spublish("cpgw:{acct-1}:invalidate", b"site:site-0002") == 1
        message = await _next_message(sharded, sharded=True)
        assert message["type"] == "smessage" and message["data"] == b"site:site-0002"
    finally:
        await pubsub.aclose()
        await sharded.aclose()


async def test_every_endpoint_is_cached_across_the_cluster(
    make_simulator: MakeSim, make_gateway: GatewayFactory, cluster: ClusterSetup
) -> None:
    await ha_checks.check_every_endpoint_is_cached(make_simulator, make_gateway, cluster)
    assert all(cluster.keys_by_node("cpgw:v2:*").values()), "some node holds no cached entry"
    # Hash tags: one site's entries share a slot (and node); the sites spread over nodes.
    keys = Keys(settings_for(await make_simulator()).accounts[0].namespace)
    for site_id in ("site-0001", "site-0002", "odd {id}/x"):
        family = [*keys.site_family(site_id), keys.events(site_id, "0" * 32)]
        assert len(cluster.ports_for(family)) == 1
    ports = cluster.ports_for([keys.site(f"site-{n:04d}") for n in range(1, 13)])
    assert len(ports) > 1


async def test_the_tier_is_invalidated_across_the_cluster(
    make_simulator: MakeSim, make_gateway: GatewayFactory, cluster: ClusterSetup
) -> None:
    await ha_checks.check_invalidation(make_simulator, make_gateway, cluster)


async def test_two_gateways_collapse_cold_requests(
    make_simulator: MakeSim, make_gateway: GatewayFactory, cluster: ClusterSetup
) -> None:
    await ha_checks.check_two_gateways_collapse(make_simulator, make_gateway, cluster)


async def test_rate_budget_is_shared_by_two_gateways(
    make_simulator: MakeSim, make_gateway: GatewayFactory, cluster: ClusterSetup
) -> None:
    await ha_checks.check_shared_budget(make_simulator, make_gateway, cluster)


async def test_retry_after_pause_holds_both_gateways(
    make_simulator: MakeSim, make_gateway: GatewayFactory, cluster: ClusterSetup
) -> None:
    await ha_checks.check_shared_pause(make_simulator, make_gateway, cluster)


async def test_admin_purge_sweeps_every_node(
    make_simulator: MakeSim, make_gateway: GatewayFactory, cluster: ClusterSetup
) -> None:
    await ha_checks.check_purge(make_simulator, make_gateway, cluster)


async def test_the_change_feed_across_the_cluster(
    make_simulator: MakeSim, make_gateway: GatewayFactory, cluster: ClusterSetup
) -> None:
    feed_keys = await ha_checks.check_change_feed(make_simulator, make_gateway, cluster)
    assert len(cluster.ports_for(feed_keys)) == 1  # one slot: the scripts' keys together
