"""The tier-hit fast path (`gateway/hitpath.py`): a fresh tier hit on `/sites/{id}` is
answered before the router and the middleware, with exactly what the generic path sends,
and counted and logged the same way; everything else still takes the generic path."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from gateway.app_keys import FLEET, METRICS
from gateway.lifecycle import DRAIN
from gateway.settings import Secret
from tests.conftest import (
    GatewayFactory,
    Simulator,
    fast_hits,
    metric_value,
    settings_for,
)

FAST = "/sites/site-0001"
VARYING = {"Date", "X-Request-ID", "Age"}


async def _answer(gw: TestClient, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    response = await gw.get(path, headers=headers, auto_decompress=False)
    kept = {name: value for name, value in response.headers.items() if name not in VARYING}
    return response.status, kept, await response.read()


async def test_a_fresh_hit_is_answered_before_the_router_exactly_as_the_generic_path_would(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator))
    # The same site the generic way: a query string never takes the fast path.
    generic_path = f"{FAST}?account={gw.app[FLEET].names[0]}"
    assert (await gw.get(FAST)).status == 200  # the miss fills the tier
    assert fast_hits(gw) == 0
    for headers in ({}, {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "br;q=1, zstd;q=0.5"}):
        before = fast_hits(gw)
        fast = await _answer(gw, FAST, **headers)
        assert fast_hits(gw) == before + 1
        generic = await _answer(gw, generic_path, **headers)
        assert fast_hits(gw) == before + 1
        assert fast == generic and fast[0] == 200
        assert "; hit; ttl=" in fast[1]["Cache-Status"]
    # 304 on its ETag, HEAD without a body, and the client's request id echoed.
    etag = (await gw.get(FAST)).headers["ETag"]
    assert (await gw.get(FAST, headers={"If-None-Match": etag})).status == 304
    head = await gw.head(FAST)
    assert head.status == 200 and await head.read() == b""
    echoed = await gw.get(FAST, headers={"X-Request-ID": "trace-me-42"})
    assert echoed.headers["X-Request-ID"] == "trace-me-42"
    assert fast_hits(gw) == 4 + 3
    # Counted under the route template like every other request.
    text = gw.app[METRICS].render().decode()
    hits = metric_value(text, "gateway_cache_lookups_total", route="/sites/{id}", result="hit")
    assert hits == fast_hits(gw) + 3  # and the three generic hits


async def test_what_the_fast_path_leaves_to_the_generic_path(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator, cache_ttl=0.3, cache_stale=30.0))
    await gw.get(FAST)
    for path in (FAST + "?account=nobody", "/sites/no-such-site", "/sites/..", FAST + "/"):
        await gw.get(path)
    assert (await gw.get(FAST, headers={"Accept-Encoding": "identity;q=0, *;q=0"})).status == 406
    assert fast_hits(gw) == 0
    await asyncio.sleep(0.35)  # real time: past the fresh TTL
    stale = await gw.get(FAST)
    assert "detail=stale-while-revalidate" in stale.headers["Cache-Status"]
    assert fast_hits(gw) == 0


async def test_tokens_quota_and_drain_hold_on_the_fast_path(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    token = "fast-path-token-1"
    gw = await make_gateway(
        settings_for(simulator, client_tokens={"team": Secret(token)}, client_rps=0.001)
    )
    auth = {"Authorization": f"Bearer {token}"}
    assert (await gw.get(FAST, headers=auth)).status == 200  # a miss; the quota's burst
    assert (await gw.get(FAST)).status == 401
    assert (await gw.get(FAST, headers={"Authorization": "Bearer wrong"})).status == 401
    assert fast_hits(gw) == 0
    spent = 0
    while (response := await gw.get(FAST, headers=auth)).status == 200:
        spent += 1
        assert spent < 1000
    assert response.status == 429 and "Retry-After" in response.headers
    assert fast_hits(gw) == spent  # every admitted hit went the fast way, the 429 did not

    open_gw = await make_gateway(settings_for(simulator))
    await open_gw.get(FAST)
    assert (await open_gw.get(FAST)).headers.get("Connection") is None
    open_gw.app[DRAIN].begin()
    draining = await open_gw.get(FAST)
    assert draining.status == 200 and draining.headers["Connection"] == "close"
    assert fast_hits(open_gw) == 1  # the one before the drain
