"""`GET /sites/{id}/charging-events` end to end: every parameter, validation before any
upstream call, the query signed exactly as sent (odd values, odd ids, both signing modes),
caching by the normalized query for GATEWAY_EVENTS_TTL, collapsing, the known-id gate.

Expectations come from the simulator's raw event list (`site_events`) filtered, sorted and
paged here, never from the gateway's code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from yarl import URL

from gateway.errors import BadRequest, BadUpstreamPayload
from gateway.events import EventsQuery, events_body, parse_events_query
from gateway.metrics import Metrics
from gateway.settings import Secret
from gateway.simulator import demo_fleet, odd_id_fleet, site_events
from tests.conftest import GatewayFactory, Simulator, eventually, metric_value, settings_for

MakeSim = Callable[..., Awaitable[Simulator]]
PROBLEM = "application/problem+json"
UPSTREAM = "/rest/v1/charging-events/site/"


def _instant(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def expected(
    site: dict[str, Any],
    *,
    start: str | None = None,
    end: str | None = None,
    take: int = 100,
    skip: int = 0,
    field: str = "start_time",
    descending: bool = False,
) -> dict[str, Any]:
    events = site_events(site, seed=0)
    low = _instant(start) if start else datetime.min.replace(tzinfo=UTC)
    high = _instant(end) if end else datetime.max.replace(tzinfo=UTC)
    chosen = [e for e in events if low <= _instant(e["start_time"]) < high]
    chosen.sort(key=lambda e: (e[field] is None, e[field], e["id"]), reverse=descending)
    page = chosen[skip : skip + take]
    return {"data": page, "count": len(page), "truncated": skip + take < len(chosen)}


def events_calls(sim: Simulator) -> list[str]:
    return [call.path for call in sim.state.calls if call.path.startswith(UPSTREAM)]


# -- the query, as pure functions ---------------------------------------------------------


def test_canonical_query_orders_parameters_and_keeps_timestamps_as_sent() -> None:
    query = parse_events_query(
        {"sort_order": "desc", "take": "010", "from": "2025-01-03T08:00:00 01:00", "skip": "0"}
    )
    assert query.pairs == (
        ("from", "2025-01-03T08:00:00+01:00"),  # the `+` that form decoding made a space
        ("take", "10"),
        ("skip", "0"),
        ("sort_order", "desc"),
    )
    same = parse_events_query(
        {"skip": "00", "from": "2025-01-03T08:00:00+01:00", "take": "10", "sort_order": "desc"}
    )
    assert same.digest == query.digest
    assert parse_events_query({"take": "11"}).digest != parse_events_query({"take": "10"}).digest
    assert parse_events_query({}) == EventsQuery(())
    # A date, a time without seconds, fractions, Z, compact offsets: all ISO 8601.
    for stamp in ("2025-01-01", "2025-01-01T08:00", "2025-01-01T08:00:00.123456789Z",
                  "2025-01-01T08:00:00-0500", "2025-01-01T08:00:00+14:00"):  # fmt: skip
        assert parse_events_query({"from": stamp}).pairs == (("from", stamp),)


@pytest.mark.parametrize(
    "params",
    [
        {"take": "0"}, {"take": "1001"}, {"take": "ten"}, {"take": "-1"}, {"take": "1.5"},
        {"skip": "-1"}, {"skip": "1000000001"}, {"skip": " 1"},
        {"sort_field": "energy"}, {"sort_field": "START_TIME"}, {"sort_order": "ASC"},
        {"sort_order": "up"}, {"from": "yesterday"}, {"from": "2025-13-01"},
        {"from": "2025-01-01T25:00:00Z"}, {"from": "20250101"}, {"to": "2025-01-01T08:00:00+1"},
        {"from": "2025-01-02", "to": "2025-01-01T23:59:59Z"}, {"from": "2025-01-01T00:00:00 PST"},
        {"site": "x"}, {"take": ""},
    ],
)  # fmt: skip
def test_bad_parameters_are_rejected(params: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        parse_events_query(params)


def test_answer_mapping() -> None:
    events = [{"id": "e1"}, {"id": "e2"}]
    body = {"charging_events": events, "count": 2, "truncated": True, "page": 1}
    assert events_body(body) == b'{"data":[{"id":"e1"},{"id":"e2"}],"count":2,"truncated":true}'
    assert events_body({"charging_events": []}) == b'{"data":[],"count":0,"truncated":false}'
    odd = {"charging_events": events, "count": "2", "truncated": "yes"}
    assert events_body(odd) == b'{"data":[{"id":"e1"},{"id":"e2"}],"count":2,"truncated":false}'
    with pytest.raises(BadUpstreamPayload):
        events_body({"events": events})


# -- over real sockets --------------------------------------------------------------------


async def test_every_parameter_reaches_upstream_signed_as_sent(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator()
    gw = await make_gateway(settings_for(sim))
    site = demo_fleet()[3]  # site-0004
    # Raw `+` (form-decoded to a space) and encoded `%2B`: both are offsets.
    target = (
        "/sites/site-0004/charging-events?sort_order=desc&from=2025-01-03T08:00:00+01:00"
        "&to=2025-01-20T06:30:00.5Z&take=25&skip=3&sort_field=energy_kwh"
    )
    response = await gw.get(target)
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Status"] == "chargepilot-gateway; fwd=miss; stored"
    want = expected(site, start="2025-01-03T08:00:00+01:00", end="2025-01-20T06:30:00.5Z",
                    take=25, skip=3, field="energy_kwh", descending=True)  # fmt: skip
    assert await response.json() == want
    assert want["count"] == 25 and want["truncated"]
    # Sent in canonical order, every value percent-encoded, timestamps as the client wrote
    # them; the simulator checked the signature over exactly these bytes (else: 401 → 502).
    assert events_calls(sim) == [
        UPSTREAM + "site-0004?from=2025-01-03T08%3A00%3A00%2B01%3A00"
        "&to=2025-01-20T06%3A30%3A00.5Z&take=25&skip=3&sort_field=energy_kwh&sort_order=desc"
    ]
    encoded = await gw.get(
        "/sites/site-0004/charging-events?from=2025-01-03T08:00:00%2B01:00&to=2025-01-20T06:30:00.5Z"
        "&take=25&skip=3&sort_field=energy_kwh&sort_order=desc"
    )
    assert encoded.headers["Cache-Status"].startswith("chargepilot-gateway; hit")
    assert len(events_calls(sim)) == 1


@pytest.mark.parametrize("sign_path", ["full", "relative"])
async def test_odd_ids_and_offsets_are_signed_exactly(
    make_simulator: MakeSim, make_gateway: GatewayFactory, sign_path: str
) -> None:
    fleet = odd_id_fleet()
    sim = await make_simulator(sites=fleet, sign_path=sign_path)
    gw = await make_gateway(settings_for(sim, sign_path=sign_path))
    wanted = ("a b", "100%", "ß/ü?ä#ö", "k=v&w=z", "..", "+", "東京-1")
    by_id = {site["id"]: site for site in fleet}
    for site_id in wanted:
        segment = "%2E" * len(site_id) if site_id in (".", "..") else quote(site_id, safe="")
        target = URL(
            f"/sites/{segment}/charging-events"
            "?from=2025-01-02T00:00:00%2B01:00&to=2025-01-09T00:00:00-05:00&take=1000",
            encoded=True,
        )
        response = await gw.get(target)
        assert response.status == 200, (site_id, await response.text())
        body = await response.json()
        assert body == expected(
            by_id[site_id], start="2025-01-02T00:00:00+01:00", end="2025-01-09T00:00:00-05:00",
            take=1000,
        )  # fmt: skip
        assert all(event["site_id"] == site_id for event in body["data"])
    assert all(call.outcome == 200 for call in sim.state.calls)


@pytest.mark.parametrize(
    "query",
    [
        "take=0", "take=1001", "skip=-2", "sort_field=bogus", "sort_order=ASC",
        "from=2025-02-30", "from=2025-01-02&to=2025-01-01", "take=5&take=6", "limit=5",
        "from=", "to=2025-01-01T00:00:00%2B1", "take=%0A1",
    ],
)  # fmt: skip
async def test_bad_queries_are_400_before_any_upstream_call(
    simulator: Simulator, make_gateway: GatewayFactory, query: str
) -> None:
    gw = await make_gateway(settings_for(simulator))
    response = await gw.get(f"/sites/site-0001/charging-events?{query}")
    assert response.status == 400
    assert response.headers["Content-Type"] == PROBLEM
    assert simulator.data_calls() == 0


async def test_cached_for_the_events_ttl_then_refreshed(
    make_simulator: MakeSim, make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    sim = await make_simulator()
    metrics = Metrics()
    gw = await make_gateway(
        settings_for(sim, redis_url=cache_mode, events_ttl=0.4, cache_ttl=300), metrics=metrics
    )
    target = "/sites/site-0001/charging-events?take=5"
    first = await gw.get(target)
    assert first.status == 200
    hit = await gw.get(target)
    assert hit.headers["Cache-Status"].startswith("chargepilot-gateway; hit; ttl=0")
    assert hit.headers["ETag"] == first.headers["ETag"]
    assert len(events_calls(sim)) == 1
    await asyncio.sleep(0.5)  # past GATEWAY_EVENTS_TTL, well inside GATEWAY_CACHE_TTL
    stale = await gw.get(target)
    assert stale.status == 200
    assert "detail=stale-while-revalidate" in stale.headers["Cache-Status"]

    async def refreshed() -> bool:
        return len(events_calls(sim)) == 2

    await eventually(refreshed)
    # The site itself (filled with the list) is still fresh: events have their own lifetime.
    site = await gw.get("/sites/site-0001")
    assert site.headers["Cache-Status"].startswith("chargepilot-gateway; hit; ttl=29")
    text = metrics.render().decode()
    endpoint = "/charging-events/site/{id}"
    assert metric_value(text, "gateway_upstream_requests_total", endpoint=endpoint) == 2


@pytest.fixture(params=["memory", "redis"])
def cache_mode(request: pytest.FixtureRequest, redis_url: str) -> str | None:
    return None if request.param == "memory" else redis_url


async def test_entry_lives_events_ttl_plus_stale_in_redis(
    simulator: Simulator, make_gateway: GatewayFactory, redis_url: str, redis_server: Any
) -> None:
    gw = await make_gateway(
        settings_for(simulator, redis_url=redis_url, events_ttl=7, cache_stale=100)
    )
    assert (await gw.get("/sites/site-0001/charging-events?take=3")).status == 200
    client = redis_server.client()
    try:
        (key,) = [k.decode() for k in client.scan_iter(match="*:e:events:*")]
        assert "{site-0001}" in key
        assert 100_000 < client.pttl(key) <= 107_000
        site_key = next(k for k in client.scan_iter(match="*:e:site:{site-0001}"))
        assert client.pttl(site_key) > 300_000  # the cache TTL, not the events TTL
    finally:
        client.close()


async def test_concurrent_requests_collapse_into_one_call(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator(latency=0.3)
    gw = await make_gateway(settings_for(sim))
    assert (await gw.get("/sites")).status == 200  # the gate's list
    responses = await asyncio.gather(
        *(gw.get("/sites/site-0002/charging-events?take=50&sort_order=desc") for _ in range(12))
    )
    assert [r.status for r in responses] == [200] * 12
    statuses = [r.headers["Cache-Status"] for r in responses]
    assert sum("collapsed" in status for status in statuses) == 11
    assert len(events_calls(sim)) == 1
    bodies = [await r.read() for r in responses]
    assert len(set(bodies)) == 1


async def test_unknown_site_is_404_without_an_events_call(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator))
    for site_id in ("nope", "site-9999", "site-0001x"):
        response = await gw.get(f"/sites/{site_id}/charging-events?take=5")
        assert response.status == 404
        assert response.headers["Content-Type"] == PROBLEM
    assert events_calls(simulator) == []
    assert simulator.data_calls() == 1  # one list fetch served the gate for all three


async def test_events_are_budgeted_and_held_back_by_a_pause(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    sim = await make_simulator()
    gw = await make_gateway(settings_for(sim))
    assert (await gw.get("/sites")).status == 200
    sim.config.fail_mode = "429"
    sim.config.retry_after = 30
    paused = await gw.get("/sites/site-0001/charging-events?take=1")
    assert paused.status == 503 and int(paused.headers["Retry-After"]) >= 29
    calls = sim.data_calls()
    held = await gw.get("/sites/site-0001/charging-events?take=2")
    assert held.status == 503 and sim.data_calls() == calls


async def test_purge_of_a_site_drops_its_events(
    simulator: Simulator, make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    admin = {"Authorization": "Bearer admin-token"}
    gw = await make_gateway(
        settings_for(simulator, redis_url=cache_mode, admin_token=Secret("admin-token"))
    )
    target = "/sites/site-0001/charging-events?take=4"
    assert (await gw.get(target)).status == 200
    other = "/sites/site-0002/charging-events?take=4"
    assert (await gw.get(other)).status == 200
    purged = await gw.post("/admin/purge", json={"site_id": "site-0001"}, headers=admin)
    assert purged.status == 200
    again = await gw.get(target)
    assert again.headers["Cache-Status"].startswith("chargepilot-gateway; fwd=miss")
    kept = await gw.get(other)
    assert kept.headers["Cache-Status"].startswith("chargepilot-gateway; hit")
