"""``GET /rest/v1/charging-events/site/{id}`` on the simulator, over a real socket.

Expectations are computed here from the raw event list (``site_events``) with the test's own
filtering, sorting and paging, so the simulator's query code is checked, not restated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.simulator import (
    SIM_STATE,
    SimulatorConfig,
    SimulatorState,
    create_simulator_app,
    demo_fleet,
    iter_connectors,
    site_events,
)
from tests.test_simulator import sign

SimClient = TestClient[Any, Any]
MakeSim = Callable[..., Awaitable[tuple[SimClient, SimulatorState]]]
EVENTS = "/rest/v1/charging-events/site/"


@pytest.fixture
def make_sim(aiohttp_client: Any) -> MakeSim:
    async def factory(config: SimulatorConfig | None = None) -> tuple[SimClient, SimulatorState]:
        app = create_simulator_app(config)
        client: SimClient = await aiohttp_client(app, server_kwargs={"host": "127.0.0.1"})
        return client, app[SIM_STATE]

    return factory


async def fetch(client: SimClient, target: str, signed_as: str | None = None) -> tuple[int, Any]:
    response = await client.get(target, headers=sign(target if signed_as is None else signed_as))
    return response.status, await response.json()


def _instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def test_signature_covers_the_query_string(make_sim: MakeSim) -> None:
    client, state = await make_sim()
    target = f"{EVENTS}site-0001?from=2025-01-02T00:00:00Z&take=5"
    assert (await fetch(client, target))[0] == 200
    assert (await fetch(client, target, signed_as=f"{EVENTS}site-0001"))[0] == 401
    assert state.count(target) == 2  # logged like every data call, raw query included

    client, _ = await make_sim(SimulatorConfig(sign_path="relative"))
    relative = "/charging-events/site/site-0001?from=2025-01-02T00:00:00Z&take=5"
    assert (await fetch(client, target, signed_as=relative))[0] == 200
    assert (await fetch(client, target))[0] == 401


async def test_events_are_deterministic_and_belong_to_the_site(make_sim: MakeSim) -> None:
    client, _ = await make_sim()
    status, body = await fetch(client, f"{EVENTS}site-0003?take=1000")
    assert status == 200
    assert set(body) == {"charging_events", "count", "truncated"}
    events = body["charging_events"]
    assert body["count"] == len(events) > 0
    assert events == site_events(demo_fleet()[2], seed=0)[:1000]
    connectors = {c["id"]: c for c in iter_connectors(demo_fleet()[2])}
    for event in events:
        assert event["site_id"] == "site-0003"
        assert (
            connectors[event["connector_id"]]["charging_station_id"]
            == (event["charging_station_id"])
        )
        assert _instant(event["start_time"]) < _instant(event["end_time"])
        assert event["energy_kwh"] > 0 and event["max_current"] > 0
    assert len({event["id"] for event in events}) == len(events)
    again, _ = await make_sim()
    assert (await fetch(again, f"{EVENTS}site-0003?take=1000"))[1] == body
    other, _ = await make_sim(SimulatorConfig(seed=1))
    assert (await fetch(other, f"{EVENTS}site-0003?take=1000"))[1] != body


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2025-01-03T00:00:00%2B01:00", "2025-01-04T06:30:00Z"),
        ("2025-01-03", "2025-01-03T12:00:00-05:00"),
        ("2025-01-10T08:15:30.5Z", None),
        (None, "2025-01-02T00:00:00%2B00:00"),
    ],
)
async def test_from_and_to_with_offsets(
    make_sim: MakeSim, start: str | None, end: str | None
) -> None:
    client, _ = await make_sim()
    query = "&".join(
        f"{name}={value}" for name, value in (("from", start), ("to", end)) if value is not None
    )
    status, body = await fetch(client, f"{EVENTS}site-0004?{query}&take=1000")
    assert status == 200

    def bound(value: str | None, default: datetime) -> datetime:
        if value is None:
            return default
        moment = datetime.fromisoformat(value.replace("%2B", "+"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    low = bound(start, datetime.min.replace(tzinfo=UTC))
    high = bound(end, datetime.max.replace(tzinfo=UTC))
    everything = site_events(demo_fleet()[3], seed=0)
    expected = [e for e in everything if low <= _instant(e["start_time"]) < high]
    assert 0 < len(expected) < len(everything)
    assert body["charging_events"] == expected
    assert (body["count"], body["truncated"]) == (len(expected), False)


async def test_paging_with_take_and_skip(make_sim: MakeSim) -> None:
    client, _ = await make_sim()
    everything = site_events(demo_fleet()[0], seed=0)
    assert len(everything) > 25
    pages, skip = [], 0
    while True:
        status, body = await fetch(client, f"{EVENTS}site-0001?take=10&skip={skip}")
        assert status == 200
        pages.extend(body["charging_events"])
        assert body["count"] == len(body["charging_events"])
        assert body["truncated"] == (skip + 10 < len(everything))
        if not body["truncated"]:
            break
        skip += 10
    assert pages == everything
    status, body = await fetch(client, f"{EVENTS}site-0001?skip={len(everything)}")
    assert (status, body) == (200, {"charging_events": [], "count": 0, "truncated": False})


async def test_default_take_is_100(make_sim: MakeSim) -> None:
    client, _ = await make_sim()
    status, body = await fetch(client, f"{EVENTS}site-0002")
    assert (status, body["count"], body["truncated"]) == (200, 100, True)
    assert body["charging_events"] == site_events(demo_fleet()[1], seed=0)[:100]


@pytest.mark.parametrize("field", ["energy_kwh", "start_time", "end_time", "max_current"])
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_sorting(make_sim: MakeSim, field: str, order: str) -> None:
    client, _ = await make_sim()
    status, body = await fetch(
        client, f"{EVENTS}site-0006?take=1000&sort_field={field}&sort_order={order}"
    )
    assert status == 200
    got = body["charging_events"]
    expected = sorted(
        site_events(demo_fleet()[5], seed=0),
        key=lambda event: (event[field], event["id"]),
        reverse=order == "desc",
    )
    assert got == expected


@pytest.mark.parametrize(
    "query",
    [
        "take=0",
        "take=1001",
        "take=ten",
        "take=-1",
        "skip=-1",
        "skip=1.5",
        "from=yesterday",
        "to=2025-13-01",
        "from=2025-01-02T00:00:00+01:00",  # a raw "+" is a space in a query string
        "from=2025-01-05&to=2025-01-04",
        "sort_field=colour",
        "sort_order=up",
        "limit=10",
        "take=1&take=2",
        "take",  # no "=": not a query field
        "take=%FF",  # not UTF-8
    ],
)
async def test_bad_parameters_are_400(make_sim: MakeSim, query: str) -> None:
    client, state = await make_sim()
    status, body = await fetch(client, f"{EVENTS}site-0001?{query}")
    assert status == 400
    assert isinstance(body["error"], str) and body["error"]
    assert [call.outcome for call in state.calls] == [400]


async def test_unknown_site_is_404(make_sim: MakeSim) -> None:
    client, state = await make_sim()
    assert await fetch(client, f"{EVENTS}site-9999?take=1") == (404, {"error": "not found"})
    assert await fetch(client, f"{EVENTS}site-0001/x") == (404, {"error": "not found"})
    assert state.count() == 2


async def test_knobs_apply_to_events_too(make_sim: MakeSim) -> None:
    client, state = await make_sim(SimulatorConfig(fail_mode="503_retry_after"))
    response = await client.get(f"{EVENTS}site-0001", headers=sign(f"{EVENTS}site-0001"))
    assert (response.status, response.headers["Retry-After"]) == (503, "1")
    state.config.fail_mode = None
    state.config.rate_limit_rps = 1
    assert (await fetch(client, f"{EVENTS}site-0001"))[0] == 200
    assert (await fetch(client, f"{EVENTS}site-0001"))[0] == 429
    assert [call.outcome for call in state.calls] == [503, 200, 429]


async def test_events_follow_connector_changes(make_sim: MakeSim) -> None:
    client, state = await make_sim()
    before = (await fetch(client, f"{EVENTS}site-0001?take=1000"))[1]["charging_events"]
    change = state.mutate("connector_added", site_id="site-0001")
    after = (await fetch(client, f"{EVENTS}site-0001?take=1000"))[1]["charging_events"]
    added = [event for event in after if event["connector_id"] == change["connector_id"]]
    assert added and sorted(before + added, key=lambda e: (e["start_time"], e["id"])) == after
    change = state.mutate("connector_removed", site_id="site-0001")
    final = (await fetch(client, f"{EVENTS}site-0001?take=1000"))[1]["charging_events"]
    assert final == [event for event in after if event["connector_id"] != change["connector_id"]]
