"""Fleet gauges: connectors, V2G connectors and oversubscription ratio per site, set when
fills store sites, labelled by account with several, pruned when a site disappears.

Expected values are computed here from the simulator's raw sites.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.accounts import Account, derived_namespace
from gateway.gauges import SiteFacts, site_facts
from gateway.metrics import Metrics
from gateway.normalize import normalize_site
from gateway.settings import Secret
from gateway.simulator import demo_fleet, eu_fleet, iter_connectors, us_fleet
from tests.conftest import GatewayFactory, Simulator, eventually, metric_value, settings_for

MakeSim = Callable[..., Awaitable[Simulator]]


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def expected_facts(raw: dict[str, Any]) -> SiteFacts:
    """From the raw site: the worst top-level fuse's demand over its limit."""
    connectors = list(iter_connectors(raw))
    v2g = sum(1 for c in connectors if c.get("discharge_capability"))
    ratios = []
    for root in raw["fuse_tree"]:
        limit = _number(root["parameters"].get("limit"))
        demand = 0.0
        for connector in iter_connectors({"fuse_tree": [root]}):
            values = [_number(v) for v in connector.get("charging_capability") or []]
            values = [v for v in values if v is not None]
            demand += max(values) if values else 0.0
        if limit:
            ratios.append(demand / limit)
    return SiteFacts(len(connectors), v2g, round(max(ratios), 6) if ratios else None)


def node(kind: str, limit: Any, children: list[Any], connectors: list[Any] | None = None) -> Any:
    parameters: dict[str, Any] = {"name": kind, "limit": limit}
    if connectors is not None:
        parameters["connectors"] = connectors
    return {"type": kind, "parameters": parameters, "children": children}


def connector(cid: str, charging: list[Any] | None, discharge: list[Any] | None = None) -> Any:
    found: dict[str, Any] = {"id": cid}
    if charging is not None:
        found["charging_capability"] = charging
    if discharge is not None:
        found["discharge_capability"] = discharge
    return found


def test_one_top_level_fuse() -> None:
    raw = {"id": "s", "fuse_tree": [node("fuse", "63", [
        node("charging station", 32, [], [connector("a", [32, 32, 32]), connector("b", [16])]),
        node("charging station", 22, [], [connector("c", [11, 22], [11]), connector("d", None)]),
    ])]}  # fmt: skip
    assert site_facts(normalize_site(raw)) == SiteFacts(4, 1, round((32 + 16 + 22) / 63, 6))
    assert site_facts(normalize_site(raw)) == expected_facts(raw)


def test_several_top_level_fuses_take_the_worst() -> None:
    raw = {"id": "s", "fuse_tree": [
        node("fuse", 100, [node("charging station", None, [], [connector("a", [150]),
                                                                 connector("b", [50])])]),
        node("fuse", 1000, [node("charging station", None, [], [connector("c", [10])])]),
        node("fuse", None, [node("charging station", None, [], [connector("d", [500])])]),
    ]}  # fmt: skip
    # 200 A under a 100 A feed, 10 A under 1000 A; the feed without a limit is left out.
    assert site_facts(normalize_site(raw)) == SiteFacts(4, 0, 2.0)
    no_limits = {"id": "t", "fuse_tree": [node("fuse", None, [], [connector("e", [16])])]}
    assert site_facts(normalize_site(no_limits)) == SiteFacts(1, 0, None)
    assert site_facts(normalize_site({"id": "u"})) == SiteFacts(0, 0, None)


def test_deep_trees_do_not_recurse() -> None:
    leaf = node("charging station", 16, [], [connector("deep", [16])])
    tree = leaf
    for _ in range(3000):
        tree = node("fuse", 400, [tree])
    assert site_facts(normalize_site({"id": "deep", "fuse_tree": [tree]})) == SiteFacts(1, 0, 0.04)


async def test_gauges_follow_fills(make_simulator: MakeSim, make_gateway: GatewayFactory) -> None:
    sim = await make_simulator()
    metrics = Metrics()
    gw = await make_gateway(settings_for(sim, cache_ttl=0.3), metrics=metrics)
    assert (await gw.get("/sites")).status == 200
    text = metrics.render().decode()
    for raw in demo_fleet():
        want = expected_facts(raw)
        site_id = raw["id"]
        assert metric_value(text, "gateway_site_connectors", site_id=site_id) == want.connectors
        assert metric_value(text, "gateway_site_v2g_connectors", site_id=site_id) == want.v2g
        ratio = metric_value(text, "gateway_site_oversubscription_ratio", site_id=site_id)
        assert want.ratio is not None and ratio == pytest.approx(want.ratio)
    assert metric_value(text, "gateway_sites_cached") == len(demo_fleet())
    total = sum(len(list(iter_connectors(raw))) for raw in demo_fleet())
    assert metric_value(text, "gateway_connectors_cached") == total
    assert "site-0009" in text and expected_facts(demo_fleet()[8]).ratio  # two feeds

    # A site fill stores a changed site: its gauges follow, without any scrape-time work.
    change = sim.state.mutate("connector_added", site_id="site-0006")
    assert change["kind"] == "connector_added"
    await asyncio.sleep(0.35)  # real time: the entries go stale (TTL 0.3 s)
    assert (await gw.get("/sites/site-0006")).status == 200  # stale: refreshed behind it
    want = expected_facts(sim.state.sites["site-0006"])

    async def updated() -> bool:
        now = metrics.render().decode()
        return metric_value(now, "gateway_site_connectors", site_id="site-0006") == want.connectors

    await eventually(updated)

    # A site gone from the list: its series are removed when the list is stored again.
    sim.state.mutate("site_deleted", site_id="site-0003")
    await asyncio.sleep(0.35)  # real time: the list goes stale
    assert (await gw.get("/sites")).status == 200

    async def pruned() -> bool:
        now = metrics.render().decode()
        return metric_value(now, "gateway_sites_cached") == len(demo_fleet()) - 1

    await eventually(pruned)
    text = metrics.render().decode()
    for name in ("gateway_site_connectors", "gateway_site_v2g_connectors",
                 "gateway_site_oversubscription_ratio"):  # fmt: skip
        assert f'{name}{{site_id="site-0003"}}' not in text
        assert f'{name}{{site_id="site-0004"}}' in text


async def test_a_site_404_removes_its_series(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator()
    metrics = Metrics()
    gw = await make_gateway(settings_for(sim, cache_ttl=0.2), metrics=metrics)
    assert (await gw.get("/sites")).status == 200
    assert 'gateway_site_connectors{site_id="site-0005"}' in metrics.render().decode()
    sim.state.mutate("site_deleted", site_id="site-0005")
    await asyncio.sleep(0.25)  # real time: past the 0.2 s TTL
    await gw.get("/sites/site-0005")  # stale: its refresh meets the upstream 404

    async def gone() -> bool:
        return 'site_id="site-0005"' not in metrics.render().decode()

    await eventually(gone)


async def test_with_several_accounts_the_series_carry_the_account(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    fleets = {"eu": eu_fleet(), "us": us_fleet()}
    accounts = []
    sims = {}
    for name, fleet in fleets.items():
        sim = sims[name] = await make_simulator(sites=fleet, api_key=f"{name}-k", api_secret="s")
        namespace = derived_namespace(sim.base_url, f"{name}-k")
        accounts.append(
            Account(name, sim.base_url, Secret(f"{name}-k"), Secret("s"), "full", 100, namespace)
        )
    metrics = Metrics(account_label=True)
    gw = await make_gateway(
        settings_for(sims["eu"], accounts_file=tuple(accounts)), metrics=metrics
    )
    assert (await gw.get("/sites")).status == 200
    text = metrics.render().decode()
    for name, fleet in fleets.items():
        for raw in fleet:
            labels = {"account": name, "site_id": raw["id"]}
            want = expected_facts(raw)
            assert metric_value(text, "gateway_site_connectors", **labels) == want.connectors
            assert metric_value(text, "gateway_site_v2g_connectors", **labels) == want.v2g
    shared = {"site_id": "shared-site-0001"}
    assert metric_value(text, "gateway_site_connectors", account="eu", **shared) == 6
    assert metric_value(text, "gateway_site_connectors", account="us", **shared) == 8
    assert metric_value(text, "gateway_sites_cached") == len(fleets["eu"]) + len(fleets["us"])
