"""The change feed end to end: gateways in front of the simulator, a real Redis shared by two
of them (or the embedded mode), `GET /changes` as JSON pages and as Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app_keys import METRICS
from gateway.changefeed import CHANGE_FEEDS
from tests.conftest import RedisProcess, Simulator, eventually, metric_value, settings_for
from tests.feedkit import (
    SSE,
    MakeClient,
    events,
    feed_gateway,
    fill_fleet,
    fill_site,
    frames,
    listed,
    node_at,
    node_path,
)

MakeSim = Callable[..., Awaitable[Simulator]]


async def site(client: TestClient, site_id: str) -> tuple[dict[str, Any], str]:
    # The identity representation: an event's etag is the site's own (uncompressed) ETag.
    response = await client.get(f"/sites/{site_id}", headers={"Accept-Encoding": "identity"})
    assert response.status == 200
    return await response.json(), response.headers["ETag"].strip('"')


def total_changes(*clients: TestClient) -> float:
    return sum(
        metric_value(c.app[METRICS].render().decode(), "gateway_changes_total") for c in clients
    )


async def test_two_replicas_racing_append_one_update_with_paths_and_values(
    make_simulator: MakeSim, aiohttp_client: MakeClient, redis_url: str
) -> None:
    sim = await make_simulator()
    a = await feed_gateway(aiohttp_client, settings_for(sim, redis_url=redis_url))
    b = await feed_gateway(aiohttp_client, settings_for(sim, redis_url=redis_url))
    assert (await a.get("/sites")).status == 200  # the baseline: no events for it
    before, _ = await site(a, "site-0002")
    limit = sim.state.mutate("limit", site_id="site-0002")
    added = sim.state.mutate("connector_added", site_id="site-0002")
    # Both replicas fetch and store the changed site at once (no fetch lock between them).
    await asyncio.gather(fill_site(a, "site-0002"), fill_site(b, "site-0002"))
    (event,) = await listed(b)
    assert total_changes(a, b) == 1
    after, etag = await site(a, "site-0002")
    assert event["site_id"] == "site-0002" and event["kind"] == "site.updated"
    assert event["etag"] == etag and "truncated" not in event
    limit_path = node_path(after, limit["node"]) + "/parameters/limit"
    station = node_path(after, added["station"])
    connectors = node_at(after, station)["parameters"]["connectors"]
    position = [c["id"] for c in connectors].index(added["connector_id"])
    old_limit = node_at(before, node_path(before, limit["node"]))["parameters"]["limit"]
    new_limit = node_at(after, node_path(after, limit["node"]))["parameters"]["limit"]
    assert old_limit != new_limit
    expected = [
        {"path": limit_path, "before": old_limit, "after": new_limit},
        {"path": f"{station}/parameters/connectors/{position}", "before": None,
         "after": connectors[position]},
    ]  # fmt: skip
    assert sorted(event["changes"], key=lambda c: c["path"]) == sorted(
        expected, key=lambda c: c["path"]
    )


async def test_resume_by_id_on_the_other_replica(
    make_simulator: MakeSim, aiohttp_client: MakeClient, redis_url: str
) -> None:
    sim = await make_simulator()
    a = await feed_gateway(aiohttp_client, settings_for(sim, redis_url=redis_url))
    b = await feed_gateway(aiohttp_client, settings_for(sim, redis_url=redis_url))
    await fill_fleet(a)
    for site_id in ("site-0001", "site-0003", "site-0004", "site-0006"):
        sim.state.mutate("renamed", site_id=site_id)
        await fill_site(a, site_id)
    written = await listed(a)
    ids = [event["id"] for event in written]
    assert len(ids) == 4 and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert await listed(b, after=ids[0]) == written[1:]
    # An EventSource reconnecting to B with the last id it saw on A.
    async with b.get("/changes", headers={**SSE, "Last-Event-ID": ids[1]}) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        got = await events(stream, 2)
    assert [(f.id, f.event, f.json) for f in got] == [
        (event["id"], "site.updated", event) for event in written[2:]
    ]
    # Paging: next_cursor while more is held, null once caught up.
    page = await (await b.get("/changes?after=0&limit=3")).json()
    assert [e["id"] for e in page["data"]] == ids[:3] and page["next_cursor"] == ids[2]
    rest = await (await b.get(f"/changes?after={page['next_cursor']}&limit=3")).json()
    assert [e["id"] for e in rest["data"]] == ids[3:] and rest["next_cursor"] is None


async def test_pages_are_negotiated_like_every_answer(
    make_simulator: MakeSim, aiohttp_client: MakeClient
) -> None:
    sim = await make_simulator()
    gw = await feed_gateway(aiohttp_client, settings_for(sim))
    await fill_fleet(gw)
    for _ in range(4):  # a page past the size worth compressing
        sim.state.mutate("connector_added")
    await fill_fleet(gw)
    plain = await gw.get("/changes?after=0", headers={"Accept-Encoding": "identity"})
    assert plain.status == 200 and "Content-Encoding" not in plain.headers
    identity = await plain.json()
    assert len(await plain.read()) >= 1024
    for coding in ("gzip", "br", "zstd"):
        response = await gw.get("/changes?after=0", headers={"Accept-Encoding": coding})
        assert response.headers["Content-Encoding"] == coding  # aiohttp decodes it
        assert response.headers["Vary"] == "Accept-Encoding"
        assert await response.json() == identity
    for refused in ({"Accept-Encoding": "identity;q=0"}, {"Accept-Encoding": "*;q=0", **SSE}):
        response = await gw.get("/changes", headers=refused)
        assert response.status == 406
        assert response.content_type == "application/problem+json"


async def test_no_event_when_nothing_changed(
    make_simulator: MakeSim, aiohttp_client: MakeClient, cache_mode: str | None
) -> None:
    sim = await make_simulator()
    gw = await feed_gateway(aiohttp_client, settings_for(sim, redis_url=cache_mode))
    await fill_fleet(gw)
    await fill_fleet(gw)
    await fill_site(gw, "site-0001")
    sim.state.mutate("reorder")  # siblings delivered in another order: the same site
    await fill_fleet(gw)
    for n in range(1, 13):
        await fill_site(gw, f"site-{n:04d}")
    assert await listed(gw) == []
    assert total_changes(gw) == 0


async def test_created_and_deleted_sites_with_the_refresher(
    make_simulator: MakeSim, aiohttp_client: MakeClient, cache_mode: str | None
) -> None:
    sim = await make_simulator()
    settings = settings_for(sim, redis_url=cache_mode, upstream_rps=50.0, refresh_share=1.0)
    gw = await feed_gateway(aiohttp_client, settings)
    await eventually(lambda: _refreshed(gw), timeout=20)
    assert (await gw.get("/sites/site-0005")).status == 200
    assert 'site_id="site-0005"' in await (await gw.get("/metrics")).text()
    created = sim.state.mutate("site_created")
    sim.state.mutate("site_deleted", site_id="site-0005")

    async def both() -> bool:
        return {e["kind"] for e in await listed(gw)} == {"site.created", "site.deleted"}

    await eventually(both, timeout=20)
    kinds = {e["site_id"]: (e["kind"], e["etag"]) for e in await listed(gw)}
    assert kinds["site-0005"] == ("site.deleted", None)
    _, etag = await site(gw, created["site_id"])
    assert kinds[created["site_id"]] == ("site.created", etag)
    # The deleted site is gone everywhere: its entries, its views, its data-age series.
    for path in ("/sites/site-0005", "/sites/site-0005/connectors", "/sites/site-0005/nodes"):
        assert (await gw.get(path)).status == 404, path
    assert 'site_id="site-0005"' not in await (await gw.get("/metrics")).text()
    assert total_changes(gw) == 2


async def _refreshed(gw: TestClient) -> bool:
    text = await (await gw.get("/metrics")).text()
    return metric_value(text, "gateway_fleet_refreshes_total", target="list", outcome="ok") > 0


async def test_a_404_for_a_site_still_listed_is_no_deletion(
    make_simulator: MakeSim, aiohttp_client: MakeClient, cache_mode: str | None
) -> None:
    sim = await make_simulator()
    gw = await feed_gateway(aiohttp_client, settings_for(sim, redis_url=cache_mode))
    await fill_fleet(gw)
    sim.state.mutate("site_deleted", site_id="site-0004")
    await fill_site(gw, "site-0004")  # the upstream says 404; the list we hold still has it
    assert await listed(gw) == []
    # The next list drops it; without the refresher a background fetch confirms the 404.
    await fill_fleet(gw)
    await eventually(lambda: _has(gw, "site.deleted"), timeout=15)
    assert [(e["site_id"], e["kind"]) for e in await listed(gw)] == [("site-0004", "site.deleted")]


async def _has(gw: TestClient, kind: str) -> bool:
    return any(e["kind"] == kind for e in await listed(gw))


async def test_events_reach_an_open_stream_at_once_and_heartbeats_keep_it_open(
    make_simulator: MakeSim, aiohttp_client: MakeClient, cache_mode: str | None
) -> None:
    sim = await make_simulator()
    gw = await feed_gateway(aiohttp_client, settings_for(sim, redis_url=cache_mode))
    await fill_fleet(gw)
    async with gw.get("/changes", headers=SSE) as stream:
        assert stream.status == 200
        assert stream.headers["Cache-Control"] == "no-cache" and stream.headers["X-Request-ID"]
        first = await frames(stream, 2)  # the opening comment, then a heartbeat (0.3 s)
        assert [f.comment for f in first] == ["stream open", "keep-alive"]
        sim.state.mutate("renamed", site_id="site-0007")
        await fill_site(gw, "site-0007")
        (event,) = await events(stream, 1, timeout=2.0)  # pushed at once (loaded machine: 2 s)
        assert event.event == "site.updated" and event.json["site_id"] == "site-0007"
        assert event.id == event.json["id"] and event.fields == ["id", "event", "data"]
        assert event.json["changes"][0]["path"] == "name"


async def test_an_id_older_than_the_retention_gets_one_reset(
    make_simulator: MakeSim, aiohttp_client: MakeClient, cache_mode: str | None
) -> None:
    sim = await make_simulator()
    settings = settings_for(sim, redis_url=cache_mode, changes_retention=3)
    gw = await feed_gateway(aiohttp_client, settings)
    await fill_fleet(gw)
    await fill_fleet(gw)
    sim.state.mutate("renamed", site_id="site-0001")
    await fill_site(gw, "site-0001")
    (first,) = await listed(gw)
    for n in range(2, 6):
        sim.state.mutate("renamed", site_id=f"site-{n:04d}")
        await fill_site(gw, f"site-{n:04d}")
    held = await listed(gw)
    assert len(held) == 3
    page = await (await gw.get(f"/changes?after={first['id']}")).json()
    assert page["reset"] is True and page["data"] == held
    async with gw.get("/changes", headers={**SSE, "Last-Event-ID": first["id"]}) as stream:
        reset, *replayed = await events(stream, 4)
    assert reset.event == "reset" and reset.id is None
    assert reset.json == {"after": first["id"], "oldest": held[0]["id"]}
    assert [f.json for f in replayed] == held
    current = await (await gw.get(f"/changes?after={held[0]['id']}")).json()
    assert "reset" not in current and current["data"] == held[1:]


async def test_streams_are_bounded_and_end_when_clients_leave(
    make_simulator: MakeSim, aiohttp_client: MakeClient
) -> None:
    sim = await make_simulator()
    gw = await feed_gateway(aiohttp_client, settings_for(sim, max_streams=2))

    async def open_streams() -> float:
        text = await (await gw.get("/metrics")).text()
        return metric_value(text, "gateway_change_streams")

    first = await gw.get("/changes", headers=SSE)
    second = await gw.get("/changes", headers=SSE)
    await frames(first, 1)
    await frames(second, 1)
    refused = await gw.get("/changes", headers=SSE)
    assert refused.status == 503 and refused.content_type == "application/problem+json"
    assert (await refused.json())["type"] == "/problems/too-many-streams"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await gw.get("/changes")).status == 200  # pages are not streams
    assert await open_streams() == 2
    first.close()  # the client goes away without a word

    async def one_left() -> bool:
        return await open_streams() == 1

    await eventually(one_left, timeout=3)
    third = await gw.get("/changes", headers=SSE)
    assert third.status == 200
    second.close()
    third.close()


async def test_shutdown_ends_open_streams(
    make_simulator: MakeSim, aiohttp_client: MakeClient
) -> None:
    sim = await make_simulator()
    gw = await feed_gateway(aiohttp_client, settings_for(sim))
    stream = await gw.get("/changes", headers=SSE)
    await frames(stream, 1)
    (feed,) = gw.app[CHANGE_FEEDS].values()
    async with asyncio.timeout(5):  # the server does not wait for the stream
        await gw.server.close()
        rest = await stream.content.read()  # returns: the stream has ended
        assert rest.strip(b"\n") in (b"", b": keep-alive")
    assert feed.feed.open_streams == 0
    stream.close()


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("?after=abc", {}),
        ("?after=1-2-3", {}),
        ("?after=1&after=2", {}),
        ("?limit=0", {}),
        ("?limit=1001", {}),
        ("?limit=x", {}),
        ("?cursor=1", {}),
        ("", {"Last-Event-ID": "yesterday"}),
        ("", {"Last-Event-ID": "yesterday", **SSE}),
        # a bad `after` is a 400 even when a good Last-Event-ID overrides it
        ("?after=", {"Last-Event-ID": "1714650000000-0"}),
    ],
)
async def test_bad_parameters_are_400(
    simulator: Simulator, aiohttp_client: MakeClient, query: str, headers: dict[str, str]
) -> None:
    gw = await feed_gateway(aiohttp_client, settings_for(simulator))
    response = await gw.get("/changes" + query, headers=headers)
    assert response.status == 400 and response.content_type == "application/problem+json"


async def test_the_feed_needs_redis_when_configured(
    simulator: Simulator, aiohttp_client: MakeClient, own_redis: RedisProcess
) -> None:
    gw = await feed_gateway(aiohttp_client, settings_for(simulator, redis_url=own_redis.url))
    assert (await gw.get("/changes")).status == 200
    own_redis.kill()
    for headers in ({}, SSE):
        response = await gw.get("/changes?after=0", headers=headers)
        assert response.status == 503 and "Retry-After" in response.headers
    assert (await gw.get("/sites")).status == 200  # the rest serves on (from upstream)
