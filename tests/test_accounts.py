"""Several upstream accounts served as one fleet, over real sockets: two simulator instances
on different ports and keys (an EU and a US stand-in: `eu_fleet()`, `us_fleet()`, which
share `shared-site-0001`).  Merge, filter, 409, one account down, and each account's own
namespace, budget, pause and circuit; each host receives only its own key.

Expectations are computed from the simulator's fleets, never from the gateway's code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.accounts import Account, derived_namespace
from gateway.app_keys import CURSORS, FLEET
from gateway.fleet import Query
from gateway.metrics import Metrics
from gateway.settings import Secret, Settings
from gateway.simulator import eu_fleet, iter_connectors, us_fleet
from tests.conftest import GatewayFactory, RedisProcess, Simulator, metric_value, settings_for

MakeSim = Callable[..., Awaitable[Simulator]]
PROBLEM = "application/problem+json"
KEYS = {"eu": ("eu-key-0001", "eu-secret-aaaa"), "us": ("us-key-0002", "us-secret-bbbb")}
FLEETS = {"eu": eu_fleet(), "us": us_fleet()}
SHARED = "shared-site-0001"


def account(name: str, sim: Simulator, rps: float = 1000.0) -> Account:
    key, secret = KEYS[name]
    namespace = derived_namespace(sim.base_url, key)
    return Account(name, sim.base_url, Secret(key), Secret(secret), "full", rps, namespace)


def two_accounts(sims: dict[str, Simulator], rps: dict[str, float] | None = None,
                 **overrides: Any) -> Settings:  # fmt: skip
    rates = rps or {}
    accounts = tuple(account(name, sims[name], rates.get(name, 1000.0)) for name in ("eu", "us"))
    return settings_for(sims["eu"], accounts_file=accounts, **overrides)


@pytest.fixture
async def sims(make_simulator: MakeSim) -> dict[str, Simulator]:
    made = {}
    for name, fleet in FLEETS.items():
        key, secret = KEYS[name]
        made[name] = await make_simulator(sites=fleet, api_key=key, api_secret=secret)
    return made


def merged_ids() -> list[tuple[str, str]]:
    return sorted((site["id"], name) for name, fleet in FLEETS.items() for site in fleet)


def merged_connectors() -> list[tuple[str, str, str]]:
    return sorted(
        (site["id"], name, connector["id"])
        for name, fleet in FLEETS.items()
        for site in fleet
        for connector in iter_connectors(site)
    )


def only_own_keys(sims: dict[str, Simulator]) -> bool:
    return all({call.api_key for call in sims[name].state.calls} <= {KEYS[name][0]}
               for name in sims)  # fmt: skip


async def test_sites_merge_every_account_sorted_by_id(
    sims: dict[str, Simulator], make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    gw = await make_gateway(two_accounts(sims, redis_url=cache_mode))
    first = await gw.get("/sites")
    assert first.status == 200
    assert first.headers["Cache-Status"] == "chargepilot-gateway; fwd=miss; stored"
    body = await first.json()
    assert "unavailable_accounts" not in body
    assert [(site["id"], site["account"]) for site in body["data"]] == merged_ids()
    shared = [site for site in body["data"] if site["id"] == SHARED]
    assert [site["name"] for site in shared] == ["Shared Depot (EU view)", "Shared Depot (US view)"]
    assert all(list(site)[:2] == ["id", "account"] for site in body["data"])
    second = await gw.get("/sites")
    assert second.headers["Cache-Status"].startswith("chargepilot-gateway; hit; ttl=")
    assert second.headers["ETag"] == first.headers["ETag"]
    assert await second.read() == await first.read()
    assert [sim.data_calls() for sim in sims.values()] == [1, 1]
    assert only_own_keys(sims)
    # The merged body was built once for these two lists' ETags, not per request.
    assert len(gw.app[FLEET]._lists) == 1


async def test_account_filter_and_unknown_accounts(
    sims: dict[str, Simulator], make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(two_accounts(sims))
    us = await (await gw.get("/sites?account=us")).json()
    assert [site["id"] for site in us["data"]] == sorted(site["id"] for site in FLEETS["us"])
    assert {site["account"] for site in us["data"]} == {"us"}
    assert sims["eu"].data_calls() == 0  # the filter asked the US account alone
    page = await (await gw.get("/connectors?account=eu&limit=10000")).json()
    want = [(s, c) for s, name, c in merged_connectors() if name == "eu"]
    assert [(c["site_id"], c["id"]) for c in page["data"]] == want
    assert {c["account"] for c in page["data"]} == {"eu"}
    for target in ("/sites?account=asia", "/connectors?account=EU", "/sites/x?account=",
                   "/sites?account=eu&account=us", "/sites?region=eu"):  # fmt: skip
        response = await gw.get(target)
        assert response.status == 400, target
        assert response.headers["Content-Type"] == PROBLEM


async def test_an_id_of_one_account_is_served_from_it_of_several_is_409(
    sims: dict[str, Simulator], make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    gw = await make_gateway(two_accounts(sims, redis_url=cache_mode))
    eu_site = await gw.get("/sites/eu-site-0002")
    assert eu_site.status == 200
    assert (await eu_site.json())["account"] == "eu"
    nodes = await gw.get("/sites/us-site-0003/nodes")
    assert nodes.status == 200
    connectors = await (await gw.get("/sites/us-site-0001/connectors")).json()
    assert {c["account"] for c in connectors["data"]} == {"us"}
    for view in ("", "/connectors", "/nodes", "/charging-events"):
        conflict = await gw.get(f"/sites/{SHARED}{view}")
        assert conflict.status == 409, view
        assert conflict.headers["Content-Type"] == PROBLEM
        assert "eu, us" in (await conflict.json())["detail"]
    for name in ("eu", "us"):
        named = await gw.get(f"/sites/{SHARED}?account={name}")
        assert named.status == 200
        view = await named.json()
        assert (view["account"], view["name"]) == (name, f"Shared Depot ({name.upper()} view)")
        events = await gw.get(f"/sites/{SHARED}/charging-events?account={name}&take=3")
        assert events.status == 200 and (await events.json())["count"] == 3
    missing = await gw.get("/sites/asia-site-0001")
    assert missing.status == 404
    wrong_account = await gw.get("/sites/eu-site-0001?account=us")
    assert wrong_account.status == 404
    # Only list and event fetches: unknown ids never went upstream one by one.
    for sim in sims.values():
        assert all(call.path.startswith("/rest/v1/charging-events/") or
                   call.path == "/rest/v1/sites" for call in sim.state.calls)  # fmt: skip
    assert only_own_keys(sims)


async def test_connectors_page_across_accounts_with_cursors(
    sims: dict[str, Simulator], make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(two_accounts(sims))
    seen: list[tuple[str, str, str]] = []
    target = "/connectors?limit=7"
    pages = 0
    while target:
        response = await gw.get(target)
        assert response.status == 200, await response.text()
        page = await response.json()
        seen += [(c["site_id"], c["account"], c["id"]) for c in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        target = f"/connectors?limit=7&cursor={cursor}" if cursor else ""
    assert seen == merged_connectors()
    assert pages == -(-len(seen) // 7)
    v2g = await (await gw.get("/connectors?v2g=true&limit=3")).json()
    everything_v2g = [
        (site["id"], name, c["id"])
        for name, fleet in FLEETS.items()
        for site in fleet
        for c in iter_connectors(site)
        if c.get("discharge_capability")
    ]
    first_v2g = [(c["site_id"], c["account"], c["id"]) for c in v2g["data"]]
    assert first_v2g == sorted(everything_v2g)[:3]
    shared = await (await gw.get(f"/connectors?site_id={SHARED}&limit=100")).json()
    assert [c["account"] for c in shared["data"]] == ["eu"] * 6 + ["us"] * 8
    one = await gw.get("/connectors/us-shared-site-0001-cs-001-c1")
    assert one.status == 200 and (await one.json())["account"] == "us"
    assert (await gw.get("/connectors/none-such")).status == 404
    # A cursor of one query is refused by another, and a forged one by all.
    first = await (await gw.get("/connectors?limit=2")).json()
    other = await gw.get(f"/connectors?limit=2&v2g=true&cursor={first['next_cursor']}")
    assert other.status == 400
    assert (await gw.get("/connectors?cursor=AAAA")).status == 400


async def test_lists_answer_with_the_others_when_one_account_is_down(
    sims: dict[str, Simulator], make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    sims["us"].config.fail_mode = "500"
    gw = await make_gateway(two_accounts(sims, redis_url=cache_mode, upstream_retries=0))
    response = await gw.get("/sites")
    assert response.status == 200
    body = await response.json()
    assert body["unavailable_accounts"] == ["us"]
    assert [site["id"] for site in body["data"]] == sorted(site["id"] for site in FLEETS["eu"])
    page = await (await gw.get("/connectors?limit=10000")).json()
    assert page["unavailable_accounts"] == ["us"]
    assert {c["account"] for c in page["data"]} == {"eu"} and page["next_cursor"] is None
    assert (await gw.get("/sites/eu-site-0001")).status == 200
    # Its account could not say (its list refresh failed while serving the EU id above;
    # the gate waits before trying again).
    unknowable = await gw.get("/sites/us-site-0001")
    assert unknowable.status == 503 and "Retry-After" in unknowable.headers
    assert (await gw.get("/sites?account=us")).status == 502  # nothing else to show
    sims["us"].config.fail_mode = None
    healed = await (await gw.get("/sites")).json()
    assert "unavailable_accounts" not in healed
    assert [(s["id"], s["account"]) for s in healed["data"]] == merged_ids()
    # Both down and nothing held: the error itself.
    sims["eu"].config.fail_mode = sims["us"].config.fail_mode = "500"
    gw2 = await make_gateway(two_accounts(sims, upstream_retries=0))
    assert (await gw2.get("/sites")).status == 502


async def test_a_held_stale_list_is_served_not_reported_unavailable(
    sims: dict[str, Simulator], make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(two_accounts(sims, cache_ttl=0.2, upstream_retries=0))
    assert (await gw.get("/sites")).status == 200
    await asyncio.sleep(0.3)  # real time: past the 0.2 s TTL (entry ages are wall-clock)
    sims["us"].config.fail_mode = "500"
    stale = await gw.get("/sites")
    assert stale.status == 200
    assert "unavailable_accounts" not in await stale.json()
    assert "; hit; ttl=-" in stale.headers["Cache-Status"]  # the worst part: stale


async def test_each_account_has_its_own_pause(
    sims: dict[str, Simulator], make_gateway: GatewayFactory, redis_url: str,
    redis_server: RedisProcess,
) -> None:  # fmt: skip
    settings = two_accounts(sims, redis_url=redis_url)
    gw = await make_gateway(settings)
    sims["us"].config.fail_mode = "429"
    sims["us"].config.retry_after = 30
    listed = await (await gw.get("/sites")).json()
    assert listed["unavailable_accounts"] == ["us"]  # it asked to pause: nothing held
    us_calls = sims["us"].data_calls()
    paused = await gw.get("/sites?account=us")
    assert paused.status == 503 and int(paused.headers["Retry-After"]) >= 29
    assert (await gw.get("/sites/us-site-0001")).status == 503
    assert sims["us"].data_calls() == us_calls  # held back: nothing reached the US host
    eu_calls = sims["eu"].data_calls()
    events = await gw.get("/sites/eu-site-0001/charging-events?take=2")
    assert events.status == 200  # the EU account is not paused
    assert sims["eu"].data_calls() == eu_calls + 1
    eu_keys, us_keys = (gw.app[FLEET].services[name].keys for name in ("eu", "us"))
    client = redis_server.client()
    try:
        assert client.exists(us_keys.pause) and not client.exists(eu_keys.pause)
        namespaces = {eu_keys.namespace, us_keys.namespace}
        for key in client.scan_iter(match="cpgw:*:e:*"):
            assert any(f":{ns}:" in key.decode() for ns in namespaces)
    finally:
        client.close()
    assert only_own_keys(sims)


async def test_each_account_has_its_own_budget(
    sims: dict[str, Simulator], make_gateway: GatewayFactory
) -> None:
    # EU: one call per 5 s (one token at start); US: plenty.  The upstream timeout (1 s)
    # is far shorter than EU's next token.
    gw = await make_gateway(two_accounts(sims, rps={"eu": 0.2}, upstream_timeout=1.0))
    assert (await gw.get("/sites?account=eu")).status == 200  # EU's one token
    spent = await gw.get("/sites/eu-site-0001/charging-events?take=1")
    assert spent.status == 503 and "budget" in (await spent.json())["detail"]
    for target in ("/sites?account=us", "/sites/us-site-0001/charging-events?take=1",
                   "/sites/us-site-0002/charging-events?take=2"):  # fmt: skip
        assert (await gw.get(target)).status == 200, target
    assert sims["eu"].data_calls() == 1


async def test_each_account_has_its_own_circuit_and_labels(
    sims: dict[str, Simulator], make_gateway: GatewayFactory
) -> None:
    metrics = Metrics(account_label=True)
    sims["us"].config.fail_mode = "500"
    settings = two_accounts(sims, circuit_failures=2, upstream_retries=0, negative_ttl=0.01)
    gw = await make_gateway(settings, metrics=metrics)
    for _ in range(3):
        await gw.get("/sites?account=us")
    text = metrics.render().decode()
    assert metric_value(text, "gateway_upstream_circuit_open", account="us") == 1
    assert metric_value(text, "gateway_upstream_circuit_open", account="eu") == 0
    assert (await gw.get("/sites/eu-site-0003")).status == 200
    text = metrics.render().decode()
    labels = {"endpoint": "/sites", "outcome": "500"}
    assert metric_value(text, "gateway_upstream_requests_total", account="us", **labels) == 2
    ok = {"endpoint": "/sites", "outcome": "200"}
    assert metric_value(text, "gateway_upstream_requests_total", account="eu", **ok) == 1
    ready = await (await gw.get("/readyz")).json()
    assert ready["accounts"]["us"]["circuit"] == "open"
    assert ready["accounts"]["eu"] == {"circuit": "closed", "available": True}
    assert ready["upstream"]["circuit"] == "open" and ready["ready"]
    assert metric_value(text, "gateway_upstream_rate_limit") == 2000


async def test_purge_reaches_every_account(
    sims: dict[str, Simulator], make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    admin = {"Authorization": "Bearer adm"}
    gw = await make_gateway(two_accounts(sims, redis_url=cache_mode, admin_token=Secret("adm")))
    assert (await gw.get("/sites")).status == 200
    purged = await gw.post("/admin/purge", json={"site_id": SHARED}, headers=admin)
    assert purged.status == 200
    again = await gw.get("/sites")
    assert again.headers["Cache-Status"] == "chargepilot-gateway; fwd=miss; stored"
    assert [sim.data_calls() for sim in sims.values()] == [2, 2]


async def test_one_account_answers_carry_no_account_field(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator))
    sites = await (await gw.get("/sites")).json()
    assert all("account" not in site for site in sites["data"])
    page = await (await gw.get("/connectors?limit=50")).json()
    assert all("account" not in connector for connector in page["data"])
    assert "unavailable_accounts" not in sites and "unavailable_accounts" not in page
    # Its one account is "default": naming it filters nothing; another name is a 400.
    named = await (await gw.get("/connectors?limit=50&account=default")).json()
    assert named["data"] == page["data"]
    assert (await gw.get("/sites?account=eu")).status == 400
    ready = await (await gw.get("/readyz")).json()
    assert "accounts" not in ready and ready["upstream"]["circuit"] == "closed"


async def test_an_id_of_one_account_costs_the_others_no_list_refresh(
    sims: dict[str, Simulator], make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(two_accounts(sims, negative_ttl=0.5))
    assert (await gw.get("/sites")).status == 200
    await asyncio.sleep(0.6)  # every held list is now "old" for the known-id gate
    calls = {name: sim.data_calls() for name, sim in sims.items()}
    connector = next(iter_connectors(FLEETS["eu"][0]))["id"]
    for _ in range(3):
        assert (await gw.get("/sites/eu-site-0001/nodes")).status == 200
        assert (await gw.get(f"/connectors/{connector}")).status == 200
        assert (await gw.get(f"/sites/{SHARED}")).status == 409
    assert {name: sim.data_calls() for name, sim in sims.items()} == calls
    # An id nobody lists: each account's gate refreshes its old list once, no more.
    for _ in range(3):
        assert (await gw.get("/sites/nowhere-0001")).status == 404
    assert {name: sim.data_calls() for name, sim in sims.items()} == {
        name: count + 1 for name, count in calls.items()
    }


async def test_a_connector_in_two_accounts_fleets_is_409(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    # The US account also lists a copy of an EU site: its connectors are in both fleets.
    borrowed = FLEETS["eu"][0]
    fleets = {"eu": FLEETS["eu"], "us": [*FLEETS["us"], borrowed]}
    sims = {}
    for name, fleet in fleets.items():
        key, secret = KEYS[name]
        sims[name] = await make_simulator(sites=fleet, api_key=key, api_secret=secret)
    gw = await make_gateway(two_accounts(sims))
    connector = next(iter_connectors(borrowed))["id"]
    conflict = await gw.get(f"/connectors/{connector}")
    assert conflict.status == 409 and "eu, us" in (await conflict.json())["detail"]
    named = await gw.get(f"/connectors/{connector}?account=us")
    assert named.status == 200 and (await named.json())["account"] == "us"
    assert (await gw.get(f"/sites/{borrowed['id']}/nodes")).status == 409


async def test_merged_list_built_once_for_concurrent_requests_and_ages_reported(
    sims: dict[str, Simulator], make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(two_accounts(sims))
    responses = await asyncio.gather(*(gw.get("/sites") for _ in range(8)))
    assert {r.headers["ETag"] for r in responses} == {responses[0].headers["ETag"]}
    assert len(gw.app[FLEET]._lists) == 1 and not gw.app[FLEET]._building
    text = await (await gw.get("/metrics")).text()
    for site_id in ("eu-site-0001", "us-site-0001", SHARED):
        assert f'gateway_site_data_age_seconds{{site_id="{site_id}"}}' in text


async def test_a_cursor_naming_an_unknown_account_is_400(
    sims: dict[str, Simulator], make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(two_accounts(sims))
    forged = gw.app[CURSORS].encode(Query(limit=5), ("eu-site-0001", 0, "x", 0), "asia")
    assert (await gw.get(f"/connectors?limit=5&cursor={forged}")).status == 400
    unnamed = gw.app[CURSORS].encode(Query(limit=5), ("eu-site-0001", 0, "x", 0))
    assert (await gw.get(f"/connectors?limit=5&cursor={unnamed}")).status == 400
    valid = gw.app[CURSORS].encode(Query(limit=5), ("eu-site-0001", 0, "x", 0), "us")
    assert (await gw.get(f"/connectors?limit=5&cursor={valid}")).status == 200
