"""The fleet refresher: its lease, its share of the budget (two replicas on a real Redis),
client priority on the shared bucket, pauses and an open circuit, oldest data first."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient

from gateway.app_keys import METRICS
from gateway.changelog import MemoryChangeLog, Record
from gateway.circuit import Circuit
from gateway.errors import UpstreamUnavailable
from gateway.keys import Keys
from gateway.lease import Lease
from gateway.metrics import Metrics
from gateway.refresher import Refresher
from gateway.shield import Shield, client_reserve
from gateway.store import RedisStore, redis_client
from tests.conftest import Simulator, eventually, metric_value, settings_for
from tests.feedkit import MakeClient, feed_gateway

MakeSim = Callable[..., Awaitable[Simulator]]


def metric(client: TestClient, name: str, **labels: str) -> float:
    return metric_value(client.app[METRICS].render().decode(), name, **labels)


def calls_between(sim: Simulator, start: float, end: float) -> int:
    return sum(1 for call in sim.state.calls if start <= call.time < end)


async def test_the_lease_is_held_by_one_and_handed_over(redis_url: str) -> None:
    stores = [RedisStore(redis_client(redis_url, timeout=1.0)) for _ in range(2)]
    try:
        a, b = (Lease(store, "cpgw:test:lease", ttl=0.6) for store in stores)
        assert await a.hold() and not await b.hold()
        # Real time: the lease lives in Redis (PX), which only a real clock expires.
        await asyncio.sleep(0.25)
        assert await a.hold()  # renewed
        await asyncio.sleep(0.25)
        assert await a.hold() and not await b.hold()  # held past its first lifetime
        await a.release()
        assert not a.held
        await asyncio.sleep(0.21)  # b asks again a third of a lifetime after it last asked
        assert await b.hold()
        # A holder that stops renewing loses it after one lifetime.
        await asyncio.sleep(0.7)
        assert not b.held and await a.hold()
        await asyncio.sleep(0.21)
        assert not await b.hold()
    finally:
        for store in stores:
            await store.close()
    assert await Lease(None, "embedded").hold()  # one process: always its own
    with pytest.raises(ValueError, match="lifetime"):
        Lease(None, "x", ttl=0)


async def test_background_takes_leave_a_reserve_for_clients(redis_url: str) -> None:
    store = RedisStore(redis_client(redis_url, timeout=1.0))
    try:
        shield = Shield(
            rate=4.0,
            circuit=Circuit(failures=5, cooldown=1),
            metrics=Metrics(),
            keys=Keys("prio"),
            redis=store,
        )
        reserve = client_reserve(4.0, 0.5)
        assert reserve == 2.0 and client_reserve(1.0, 0.5) == 0.0
        assert client_reserve(10.0, 1.0) == 0.0 and client_reserve(10.0, 0.0) == 9.0
        # A full bucket (4 tokens): the refresher gets two, then must wait for the reserve.
        assert await shield.take_background(reserve) == 0
        assert await shield.take_background(reserve) == 0
        assert await shield.take_background(reserve) > 0
        loop = asyncio.get_running_loop()
        for _ in range(2):  # clients still find their two tokens at once
            await shield.admit(loop.time() + 0.01)
        with pytest.raises(UpstreamUnavailable, match="budget"):
            await shield.admit(loop.time() + 0.01)
        # A fetch started inside prepaid() runs its first attempt on the refresher's token.
        with shield.prepaid():
            await shield.admit(loop.time() + 0.01)
            with pytest.raises(UpstreamUnavailable, match="budget"):
                await shield.admit(loop.time() + 0.01)  # a second attempt takes its own
    finally:
        await store.close()


async def test_two_replicas_refresh_within_the_share(
    make_simulator: MakeSim, aiohttp_client: MakeClient, redis_url: str
) -> None:
    sim = await make_simulator()
    settings = settings_for(sim, redis_url=redis_url, upstream_rps=20.0, refresh_share=0.5)
    replicas = [await feed_gateway(aiohttp_client, settings) for _ in range(2)]

    async def started() -> bool:
        return sum(metric(r, "gateway_fleet_refreshes_total") for r in replicas) >= 3

    await eventually(started, timeout=15)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(3.0)  # a window of real time: the rate the replicas keep
    calls = calls_between(sim, start, loop.time())
    # 20 calls/s * 0.5 = 10 refreshes a second at most, whichever replica makes them (a
    # loaded machine may make fewer, never more).
    assert 1 <= calls <= 31, calls
    assert sorted(metric(r, "gateway_fleet_refresher_leader") for r in replicas) == [0, 1]
    leader = next(r for r in replicas if metric(r, "gateway_fleet_refresher_leader") == 1)
    other = next(r for r in replicas if r is not leader)
    assert metric(other, "gateway_fleet_refreshes_total") == 0
    # Every listed site and the list each cycle: the lag stays within about one period.
    text = await (await other.get("/metrics")).text()
    period = metric_value(text, "gateway_fleet_refresh_period_seconds")
    assert period == pytest.approx(13 / 10)  # 12 sites and the list at 10 per second
    assert 0 < metric_value(text, "gateway_fleet_refresh_lag_seconds") < 2 * period
    # The leader stops: the other takes the lease over and refreshes.
    await leader.close()

    async def taken_over() -> bool:
        return metric(other, "gateway_fleet_refreshes_total") > 0

    await eventually(taken_over, timeout=15)
    assert metric(other, "gateway_fleet_refresher_leader") == 1


async def test_the_first_cycle_fetches_the_list_once(
    make_simulator: MakeSim, aiohttp_client: MakeClient
) -> None:
    # At start no site is tracked yet: the cycle must be sized by the list it fetches, not
    # by the empty log (which made the next slot fetch the whole fleet list again).
    sim = await make_simulator()
    gw = await feed_gateway(aiohttp_client, settings_for(sim, upstream_rps=20.0, refresh_share=0.5))

    async def a_cycle_done() -> bool:
        return metric(gw, "gateway_fleet_refreshes_total", target="site", outcome="ok") >= 12

    await eventually(a_cycle_done, timeout=20)
    assert sim.data_calls("/rest/v1/sites") == 1


async def test_clients_have_priority_over_the_refresher(
    make_simulator: MakeSim, aiohttp_client: MakeClient
) -> None:
    sim = await make_simulator()
    # 2 calls/s (burst 2), the refresher 1/s of it; no cache to speak of: every client
    # request needs upstream calls, and six clients want far more than the budget.
    settings = settings_for(
        sim, upstream_rps=2.0, refresh_share=0.5, cache_ttl=0.0, cache_stale=0.0, negative_ttl=0.0
    )
    gw = await feed_gateway(aiohttp_client, settings)
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            await gw.get("/sites/site-0001")

    await eventually(lambda: _refreshes_above(gw, 0), timeout=15)
    clients = [asyncio.create_task(client()) for _ in range(6)]
    await asyncio.sleep(1.0)  # the clients have drained the bucket
    during = metric(gw, "gateway_fleet_refreshes_total")
    await asyncio.sleep(3.0)  # unloaded, the refresher would make 3 refreshes here
    refreshed_under_load = metric(gw, "gateway_fleet_refreshes_total") - during
    stop.set()
    await asyncio.gather(*clients)
    assert refreshed_under_load <= 1  # the reserve (a full bucket) never came back
    await eventually(lambda: _refreshes_above(gw, during + refreshed_under_load + 1), 15)


async def _refreshes_above(gw: TestClient, count: float) -> bool:
    return metric(gw, "gateway_fleet_refreshes_total") > count


async def test_the_refresher_waits_out_a_pause_and_an_open_circuit(
    make_simulator: MakeSim, aiohttp_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await make_simulator(retry_after=1)
    settings = settings_for(
        sim, upstream_rps=20.0, refresh_share=0.5, circuit_failures=2, circuit_cooldown=1.0,
        upstream_retries=0,
    )  # fmt: skip
    gw = await feed_gateway(aiohttp_client, settings)
    await eventually(lambda: _refreshes_above(gw, 1), timeout=15)
    loop = asyncio.get_running_loop()
    for mode in ("429", "500"):
        sim.config.fail_mode = mode
        await eventually(functools.partial(_failed, sim, mode), timeout=15)
        failed_at = max(c.time for c in sim.state.calls if str(c.outcome) == mode)
        await asyncio.sleep(0.6)  # real time inside the 1 s pause or cool-down
        sim.config.fail_mode = None
        # Held back: a pause of 1 s, or the circuit's 1 s cool-down after two failures
        # (calls in flight when the last failure came back may still land just after it).
        assert calls_between(sim, failed_at + 0.1, failed_at + 0.9) == 0, mode
        await eventually(functools.partial(_ok_since, sim, loop.time()), timeout=10)
    assert metric(gw, "gateway_fleet_refreshes_total", outcome="failed") >= 3
    warnings = [r for r in caplog.records if r.getMessage() == "fleet refresh failed"]
    assert warnings and all(r.levelno == logging.WARNING for r in warnings)


async def _failed(sim: Simulator, mode: str) -> bool:
    ended = [c for c in sim.state.calls if str(c.outcome) == mode]
    return len(ended) >= (1 if mode == "429" else 2)


async def _ok_since(sim: Simulator, since: float) -> bool:
    return any(c.outcome == 200 and c.time >= since for c in sim.state.calls)


async def test_sites_gone_from_the_list_first_then_the_list_then_oldest_data_first() -> None:
    changes = MemoryChangeLog(retention=10)
    records = [
        Record(site_id, None, f"{site_id}-v1", stored_at, b'{"site_id":"x"', b'"t"', None)
        for site_id, stored_at in (("a", 50.0), ("b", 10.0), ("c", 30.0), ("d", 40.0))
    ]
    await changes.record(records, baseline=True)
    refresher = Refresher(
        cast(Any, None), cast(Any, None), changes, Lease(None, "x"), Metrics(), rate=5, share=1
    )
    picked = []
    refresher.confirm(["gone"])
    for _ in range(6):
        kind, site_id = await refresher._pick()
        await refresher._commit(kind, site_id)
        picked.append(site_id)
    # The vanished site, the list, then by age; in-flight sites are not picked twice; with
    # every site in flight (and the list) there is nothing to do.
    assert picked == ["gone", None, "b", "c", "d", "a"]
    assert await refresher._pick() == ("idle", None)
    refresher._in_flight.clear()
    assert await refresher._pick() == ("list", None)  # a cycle is over: the list again
    await refresher._commit("list", None)
    refresher._backoff["b"] = refresher._clock() + 60  # b failed a moment ago: later
    assert await refresher._pick() == ("site", "c")
    with pytest.raises(ValueError, match="share"):
        Refresher(cast(Any, None), cast(Any, None), changes, Lease(None, "x"), Metrics(),
                  rate=5, share=0)  # fmt: skip
