"""Sites changing over time: ``SimulatorState.mutate``, ``POST /_sim/mutate`` and the ticker.

``normalized`` below is the test's own reading of what the gateway's normalization keeps
invariant under a reorder (children sorted stably by numeric ``order``, missing last); it
shares no code with the gateway or the simulator.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.simulator import (
    CHANGE_KINDS,
    SIM_STATE,
    SimulatorConfig,
    SimulatorState,
    build_fleet,
    create_simulator_app,
    demo_fleet,
    iter_connectors,
    iter_nodes,
)
from tests.conftest import eventually
from tests.test_simulator import sign

SimClient = TestClient[Any, Any]


def state_for(sites: list[dict[str, Any]] | None = None, seed: int = 0) -> SimulatorState:
    fleet = demo_fleet() if sites is None else sites
    return SimulatorState(SimulatorConfig(seed=seed), {site["id"]: site for site in fleet})


def normalized(value: Any) -> Any:
    if isinstance(value, list):
        return [normalized(item) for item in value]
    if not isinstance(value, dict):
        return value
    result = {key: normalized(item) for key, item in value.items()}
    for key in ("children", "fuse_tree"):
        if key in result:
            result[key] = sorted(result[key], key=_order)
    return result


def _order(node: dict[str, Any]) -> tuple[bool, float]:
    order = node.get("parameters", {}).get("order")
    try:
        return (False, float(order))
    except (TypeError, ValueError):
        return (True, 0.0)


def connector_ids(state: SimulatorState) -> list[str]:
    return [c["id"] for site in state.sites.values() for c in iter_connectors(site)]


def test_limit_changes_one_node() -> None:
    state = state_for()
    before = copy.deepcopy(state.sites)
    change = state.mutate("limit")
    site_id = change["site_id"]
    assert set(change) == {"kind", "site_id", "node", "fuse_id", "before", "after"}
    assert float(change["before"]) != float(change["after"])
    old_limits = [n["parameters"].get("limit") for n in iter_nodes(before[site_id])]
    new_limits = [n["parameters"].get("limit") for n in iter_nodes(state.sites[site_id])]
    differing = [(a, b) for a, b in zip(old_limits, new_limits, strict=True) if a != b]
    assert differing == [(change["before"], change["after"])]
    assert {k: v for k, v in state.sites.items() if k != site_id} == {
        k: v for k, v in before.items() if k != site_id
    }


def test_connectors_added_and_removed() -> None:
    state = state_for()
    ids = connector_ids(state)
    added = state.mutate("connector_added")
    assert added["connector_id"] not in ids
    assert connector_ids(state).count(added["connector_id"]) == 1
    assert len(connector_ids(state)) == len(ids) + 1
    site = state.sites[added["site_id"]]
    assert added["connector_id"] in [c["id"] for c in iter_connectors(site)]
    removed = state.mutate("connector_removed")
    assert removed["connector_id"] not in connector_ids(state)
    assert len(connector_ids(state)) == len(ids)


@pytest.mark.parametrize("seed", range(40))
def test_reorder_keeps_the_normalized_site(seed: int) -> None:
    state = state_for(demo_fleet() + build_fleet(3, 30, seed=seed))
    before = copy.deepcopy(state.sites)
    change = state.mutate("reorder", random.Random(seed))
    site_id = change["site_id"]
    assert state.sites[site_id] != before[site_id]  # delivered differently...
    assert normalized(state.sites[site_id]) == normalized(before[site_id])  # ...same content
    assert sorted(change["before"], key=str) == sorted(change["after"], key=str)
    assert change["before"] != change["after"]


def test_reorder_keeps_ties_in_their_order() -> None:
    stations = [
        {"type": "charging station", "parameters": {"name": name, **order}, "children": []}
        for name, order in [("a", {"order": 1}), ("b", {}), ("c", {"order": 1}), ("d", {})]
    ]
    site = {"id": "s", "name": "S", "fuse_tree": [{"type": "fuse", "parameters": {"name": "m"},
                                                   "children": stations}]}  # fmt: skip
    for seed in range(20):
        state = state_for([copy.deepcopy(site)])
        state.mutate("reorder", random.Random(seed))
        names = [c["parameters"]["name"] for c in state.sites["s"]["fuse_tree"][0]["children"]]
        assert names.index("a") < names.index("c") and names.index("b") < names.index("d")
        assert names != ["a", "b", "c", "d"]


def test_sites_created_deleted_and_renamed() -> None:
    state = state_for()
    created = state.mutate("site_created")
    assert created["site_id"] == "created-0001"
    assert list(state.sites)[-1] == "created-0001"
    assert created["connectors"] == len(list(iter_connectors(state.sites["created-0001"])))
    assert len(connector_ids(state)) == len(set(connector_ids(state)))
    assert state.mutate("site_created")["site_id"] == "created-0002"
    assert state.mutate("site_created", site_id="my new site")["site_id"] == "my new site"

    deleted = state.mutate("site_deleted", site_id="site-0003")
    assert deleted == {"kind": "site_deleted", "site_id": "site-0003", "name": "Ladepark Ærø"}
    assert "site-0003" not in state.sites

    renamed = state.mutate("renamed", site_id="site-0001")
    assert renamed["before"] == "Parkhaus Am Markt" != renamed["after"]
    assert state.sites["site-0001"]["name"] == renamed["after"]
    assert [m["kind"] for m in state.mutations] == [
        "site_created", "site_created", "site_created", "site_deleted", "renamed",
    ]  # fmt: skip


def test_changes_are_deterministic_from_the_seed() -> None:
    def run(seed: int) -> tuple[list[Any], dict[str, Any]]:
        state = state_for(seed=seed)
        for _ in range(60):
            state.mutate()
        return state.mutations, state.sites

    first = run(3)
    assert first == run(3)
    assert first != run(4)
    assert {m["kind"] for m in first[0]} == set(CHANGE_KINDS)


def test_the_callers_fleet_is_never_edited() -> None:
    fleet = demo_fleet()
    state = state_for(fleet)
    for kind in CHANGE_KINDS * 5:
        state.mutate(kind)
    assert fleet == demo_fleet()


def test_errors_name_the_problem() -> None:
    from gateway.simulator.changes import NothingToChange, UnknownKind, UnknownSite

    state = state_for([])
    with pytest.raises(UnknownKind, match="teleport"):
        state.mutate("teleport")
    with pytest.raises(NothingToChange, match="site_deleted"):
        state.mutate("site_deleted")
    assert state.mutate()["kind"] == "site_created"  # the only kind an empty fleet allows
    with pytest.raises(UnknownSite, match="nope"):
        state.mutate("renamed", site_id="nope")
    bare = {"id": "bare", "name": "Bare", "fuse_tree": []}
    state = state_for([bare])
    for kind in ("limit", "connector_added", "connector_removed", "reorder"):
        with pytest.raises(NothingToChange):
            state.mutate(kind, site_id="bare")
    with pytest.raises(NothingToChange, match="exists"):
        state.mutate("site_created", site_id="bare")
    assert state.mutations == []


async def test_mutate_route(aiohttp_client: Callable[..., Awaitable[SimClient]]) -> None:
    app = create_simulator_app(SimulatorConfig())
    client = await aiohttp_client(app, server_kwargs={"host": "127.0.0.1"})
    state = app[SIM_STATE]
    response = await client.post("/_sim/mutate", json={"kind": "renamed", "site_id": "site-0002"})
    assert response.status == 200
    change = await response.json()
    assert change["kind"] == "renamed" and change["site_id"] == "site-0002"
    path = "/rest/v1/sites/site-0002"
    site = await (await client.get(path, headers=sign(path))).json()
    assert site["name"] == change["after"]
    assert state.mutations == [change]

    response = await client.post("/_sim/mutate", json={})
    assert response.status == 200 and (await response.json())["kind"] in CHANGE_KINDS
    deleted = await (await client.post("/_sim/mutate", json={"kind": "site_deleted"})).json()
    listing = await (await client.get("/rest/v1/sites", headers=sign("/rest/v1/sites"))).json()
    assert deleted["site_id"] not in [s["id"] for s in listing]
    stats = await (await client.get("/_sim/stats")).json()
    assert (stats["mutations"], stats["sites"]) == (3, len(state.sites))

    for body, status in [
        ({"kind": "teleport"}, 400),
        ({"kind": 3}, 400),
        ({"colour": "red"}, 400),
        ([1], 400),
        ({"kind": "renamed", "site_id": "nope"}, 404),
        ({"kind": "site_created", "site_id": "site-0001"}, 409),
    ]:
        response = await client.post("/_sim/mutate", json=body)
        assert response.status == status, body
        assert isinstance((await response.json())["error"], str)
    assert (await client.post("/_sim/mutate", data=b"{")).status == 400
    assert len(state.mutations) == 3
    assert state.count() == 2  # control routes are not data calls


async def test_change_interval_ticks_while_the_app_runs(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    app = create_simulator_app(SimulatorConfig(change_interval=0.02))
    server = await aiohttp_server(app, host="127.0.0.1")
    state = app[SIM_STATE]
    await eventually(lambda: len(state.mutations) >= 3)
    assert all(m["kind"] in CHANGE_KINDS for m in state.mutations)

    state.config.change_interval = 0  # off: the ticker keeps running but changes nothing
    ticker = next(t for t in asyncio.all_tasks() if t.get_name() == "simulator-changes")
    assert not ticker.done()
    state.config.change_interval = 0.02
    count = len(state.mutations)
    await eventually(lambda: len(state.mutations) > count)

    await server.close()
    assert ticker.done()  # stopped with the app


async def test_no_changes_by_default(aiohttp_client: Callable[..., Awaitable[SimClient]]) -> None:
    app = create_simulator_app()
    client = await aiohttp_client(app, server_kwargs={"host": "127.0.0.1"})
    # A change would be applied within a tick of the interval; wait several ticks' worth
    # of real requests and check none came.
    for _ in range(5):
        assert (await client.get("/rest/v1/sites", headers=sign("/rest/v1/sites"))).status == 200
        await asyncio.sleep(0.05)
    assert app[SIM_STATE].mutations == []
    assert app[SIM_STATE].sites == {site["id"]: site for site in demo_fleet()}
