"""/metrics after a scripted mix of traffic: exact values, bounded labels, and totals across
worker processes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics
from gateway.simulator import demo_fleet, iter_connectors
from tests.conftest import (
    GatewayFactory,
    Simulator,
    eventually,
    fills_settled,
    free_port,
    metric_value,
    settings_for,
)
from tests.processes import clean_env, gateway_env, running, simulator_args, until_logged

MakeSim = Callable[..., Awaitable[Simulator]]

CONTRACT_METRICS = {
    "gateway_http_requests": {"route", "method", "status"},
    "gateway_http_request_duration_seconds": {"route"},
    "gateway_cache_lookups": {"route", "result"},
    "gateway_coalesced_requests": {"route"},
    "gateway_upstream_requests": {"endpoint", "outcome"},
    "gateway_upstream_request_duration_seconds": {"endpoint"},
    "gateway_upstream_circuit_open": set(),
    "gateway_redis_errors": {"operation"},
    "gateway_normalization_issues": {"field"},
    "gateway_site_data_age_seconds": {"site_id"},
    "gateway_sites_cached": set(),
    "gateway_connectors_cached": set(),
    "gateway_upstream_rate_limit": set(),
    "gateway_changes": {"kind"},
    "gateway_fleet_refresh_lag_seconds": set(),
}
ROUTES = {
    "/sites",
    "/sites/{id}",
    "/sites/{id}/connectors",
    "/sites/{id}/nodes",
    "/connectors",
    "/connectors/{id}",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/admin/purge",
    "unmatched",
}


async def test_exact_values_after_a_scripted_mix(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator(latency=0.1)
    metrics = Metrics()
    gw = await make_gateway(
        settings_for(sim, cache_ttl=0.5, cache_stale=60, upstream_retries=0), metrics=metrics
    )
    # 5 concurrent misses: the first fetches the fleet list (the known-id gate), which
    # stores the site too; the other 4 join that fetch (collapsed). Then 3 hits.
    await asyncio.gather(*(gw.get("/sites/site-0001") for _ in range(5)))
    for _ in range(3):
        await gw.get("/sites/site-0001")
    # An id the fresh list does not hold: two negative hits, no upstream call.
    await gw.get("/sites/ghost")
    await gw.get("/sites/ghost")
    # Stale: wait out freshness, one stale answer with one background refresh.
    await asyncio.sleep(0.6)  # real time: past the 0.5 s TTL
    assert "ttl=-" in (await gw.get("/sites/site-0001")).headers["Cache-Status"]
    await eventually(lambda: fills_settled(gw))
    # A stale answer whose background refresh meets an upstream 500.
    sim.config.fail_mode = "500"
    assert (await gw.get("/sites/site-0002")).status == 200
    await eventually(lambda: fills_settled(gw))
    sim.config.fail_mode = None
    # Noise that must not create labels: an unmatched path and a bad id.
    await gw.get("/no/such/path/123")
    await gw.get("/sites/a%01b")
    # The fleet list: stale by now, one stale answer and one background refresh.
    await gw.get("/sites")
    await eventually(lambda: fills_settled(gw))
    text = await (await gw.get("/metrics")).text()

    def value(name: str, **labels: str) -> float:
        return metric_value(text, name, **labels)

    route = "/sites/{id}"
    assert value("gateway_cache_lookups_total", route=route, result="miss") == 5
    assert value("gateway_cache_lookups_total", route=route, result="hit") == 3
    assert value("gateway_cache_lookups_total", route=route, result="negative_hit") == 2
    assert value("gateway_cache_lookups_total", route=route, result="stale") == 2
    assert value("gateway_cache_lookups_total", route="/sites", result="stale") == 1
    assert value("gateway_coalesced_requests_total", route=route) == 4
    assert value("gateway_upstream_requests_total", endpoint="/sites/{id}", outcome="200") == 1
    assert value("gateway_upstream_requests_total", endpoint="/sites/{id}", outcome="500") == 1
    assert value("gateway_upstream_requests_total", endpoint="/sites", outcome="200") == 2
    assert value("gateway_upstream_request_duration_seconds_count", endpoint="/sites/{id}") == 2
    assert value("gateway_http_requests_total", route=route, method="GET", status="200") == 10
    assert value("gateway_http_requests_total", route=route, method="GET", status="404") == 2
    assert value("gateway_http_requests_total", route=route, method="GET", status="400") == 1
    assert value("gateway_http_requests_total", route="unmatched", method="GET", status="404") == 1
    fleet = demo_fleet()
    assert value("gateway_sites_cached") == len(fleet)
    assert value("gateway_connectors_cached") == sum(
        len(list(iter_connectors(site))) for site in fleet
    )
    assert value("gateway_upstream_rate_limit") == 1000
    assert value("gateway_upstream_circuit_open") == 0
    ages = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "gateway_site_data_age_seconds"
    ]
    assert {s.labels["site_id"] for s in ages} == {site["id"] for site in fleet}
    assert all(0 <= s.value < 5 for s in ages)
    _assert_bounded(text)


def _assert_bounded(text: str) -> None:
    site_ids = {site["id"] for site in demo_fleet()}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("gateway_"):
            continue
        if family.name in CONTRACT_METRICS:
            expected = CONTRACT_METRICS[family.name]
            for sample in family.samples:
                assert set(sample.labels) - {"le"} == expected, sample
        for sample in family.samples:
            labels = sample.labels
            assert labels.get("route", "/sites") in ROUTES, labels
            assert labels.get("endpoint", "/sites") in {"/sites", "/sites/{id}"}
            assert labels.get("result", "hit") in {"hit", "miss", "stale", "negative_hit"}
            outcome = labels.get("outcome", "200")
            assert outcome.isdigit() or outcome in {"timeout", "connection_error"}
            assert labels.get("site_id", "site-0001") in site_ids
            assert labels.get("status", "200").isdigit()


async def test_histograms_resolve_the_hit_path(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    metrics = Metrics()
    gw = await make_gateway(settings_for(simulator), metrics=metrics)
    await gw.get("/sites/site-0001")
    for _ in range(20):
        await gw.get("/sites/site-0001")
    text = metrics.render().decode()
    fast = metric_value(
        text, "gateway_http_request_duration_seconds_bucket", route="/sites/{id}", le="0.001"
    )
    assert fast >= 15  # sub-millisecond buckets exist and catch hits


async def test_metrics_port_serves_metrics_alone(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = clean_env(
        GATEWAY_PORT=str(port), GATEWAY_METRICS_PORT=str(metrics_port), GATEWAY_HOST="127.0.0.1"
    )
    with running(["gateway", "--demo"], env, tmp_path / "log", ports=(metrics_port, port)) as gw:
        async with aiohttp.ClientSession() as session:
            assert (await session.get(f"http://127.0.0.1:{port}/sites")).status == 200
            assert (await session.get(f"http://127.0.0.1:{port}/metrics")).status == 404
            scraped = await session.get(f"http://127.0.0.1:{metrics_port}/metrics")
            text = await scraped.text()
        assert metric_value(text, "gateway_http_requests_total", route="/sites") == 1
        gw.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(gw.wait, 20) == 0


async def test_totals_across_worker_processes(tmp_path: Path, redis_url: str) -> None:
    port, sim_port = free_port(), free_port()
    sim_args = simulator_args(sim_port, "k-0123", "s-0123")
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    env = gateway_env(
        sim_port,
        "k-0123",
        "s-0123",
        port,
        GATEWAY_WORKERS="2",
        REDIS_URL=redis_url,
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
    )
    with (
        running(sim_args, clean_env(), tmp_path / "sim.log", ports=(sim_port,)),
        running(["gateway"], env, tmp_path / "gw.log", ports=(port,)) as gw,
    ):
        await until_logged(tmp_path / "gw.log", "gateway listening", count=2)  # both workers
        for _ in range(60):
            # A new connection each time, so SO_REUSEPORT spreads them over the workers.
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.get(f"http://127.0.0.1:{port}/healthz") as response,
            ):
                assert response.status == 200
        async with aiohttp.ClientSession() as session:
            text = await (await session.get(f"http://127.0.0.1:{port}/metrics")).text()
        per_worker = [_healthz_count(path) for path in sorted(multiproc.glob("counter_*.db"))]
        assert len(per_worker) == 2 and all(count > 0 for count in per_worker), per_worker
        # Whichever worker answered /metrics, it reports the total of both.
        assert metric_value(text, "gateway_http_requests_total", route="/healthz") == 60
        gw.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(gw.wait, 30) == 0


def _healthz_count(path: Path) -> float:
    """The /healthz count one worker wrote to its own multiprocess file."""
    import shutil
    import tempfile

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    with tempfile.TemporaryDirectory() as alone:
        shutil.copy(path, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=alone)  # type: ignore[no-untyped-call]
        text = generate_latest(registry).decode()
    return metric_value(text, "gateway_http_requests_total", route="/healthz")
