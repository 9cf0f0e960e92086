"""`POST /admin/purge`: who may call it (401, 403, 404 as problems), what a bad body is
(400 problems), and what it drops: cache entries only, of everything or of one site, with
Redis and with the embedded cache.  Locks, the rate bucket, the pause and the change feed
are not cache entries and survive it.  (Redis down: tests/test_hostile.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app_keys import SERVICE
from gateway.settings import Secret
from tests.conftest import GatewayFactory, RedisProcess, Simulator, settings_for

ADMIN = "adm-purge-1"
CLIENT = "cli-purge-1"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "request_id"}


async def _problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == "application/problem+json"
    problem: dict[str, Any] = await response.json()
    assert set(problem) == PROBLEM_FIELDS
    assert problem["type"] == f"/problems/{slug}" and problem["status"] == status
    assert problem["request_id"] == response.headers["X-Request-ID"]
    return problem


async def test_who_may_purge_and_what_a_bad_body_is(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        settings_for(simulator, client_tokens={"dash": Secret(CLIENT)}, admin_token=Secret(ADMIN))
    )
    nobody = await gw.post("/admin/purge", json={})
    await _problem(nobody, 401, "unauthorized")
    assert nobody.headers["WWW-Authenticate"].startswith("Bearer ")
    wrong = await gw.post("/admin/purge", json={}, headers={"Authorization": "Bearer nope"})
    await _problem(wrong, 401, "unauthorized")
    client = await gw.post("/admin/purge", json={}, headers={"Authorization": f"Bearer {CLIENT}"})
    await _problem(client, 403, "forbidden")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for body in (b"{", b"[]", b'{"site_id": 7}', b'{"site_id": "a", "more": 1}'):
        bad = await gw.post("/admin/purge", data=body, headers=admin)
        problem = await _problem(bad, 400, "bad-request")
        assert "Traceback" not in problem["detail"], body
    bad_id = await gw.post("/admin/purge", json={"site_id": "a/b\x01"}, headers=admin)
    await _problem(bad_id, 400, "bad-request")
    assert simulator.data_calls() == 0  # nothing of this reached the upstream


async def test_without_an_admin_token_purge_is_not_there(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator))
    for headers in ({}, {"Authorization": f"Bearer {ADMIN}"}):
        response = await gw.post("/admin/purge", json={}, headers=headers)
        await _problem(response, 404, "not-found")


async def _cache_status(gw: TestClient, path: str) -> str:
    response = await gw.get(path)
    assert response.status == 200, (path, await response.text())
    return response.headers["Cache-Status"]


async def _warm(gw: TestClient) -> None:
    for path in ("/sites", "/sites/site-0001", "/sites/site-0002", "/sites/site-0001/nodes"):
        await _cache_status(gw, path)
    assert "; hit" in await _cache_status(gw, "/sites/site-0002")


@pytest.mark.parametrize("with_redis", [False, True], ids=["embedded", "redis"])
async def test_purge_one_site_then_everything(
    simulator: Simulator, make_gateway: GatewayFactory, redis_url: str, with_redis: bool
) -> None:
    settings = settings_for(
        simulator, redis_url=redis_url if with_redis else None, admin_token=Secret(ADMIN)
    )
    gw = await make_gateway(settings)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    await _warm(gw)
    one = await gw.post("/admin/purge", json={"site_id": "site-0001"}, headers=admin)
    assert one.status == 200
    assert (await one.json())["purged"] == "site-0001" and (await one.json())["keys"] > 0
    # Every view of the site went (one fill writes them all back).
    assert "fwd=miss" in await _cache_status(gw, "/sites/site-0001/nodes")
    assert "; hit" in await _cache_status(gw, "/sites/site-0001")
    assert "; hit" in await _cache_status(gw, "/sites/site-0002")  # another site stays
    everything = await gw.post("/admin/purge", json={}, headers=admin)
    assert everything.status == 200
    purged = await everything.json()
    assert purged["purged"] == "all" and purged["keys"] > 0
    calls = simulator.data_calls()
    assert "fwd=miss" in await _cache_status(gw, "/sites/site-0002")
    assert simulator.data_calls() == calls + 1  # the list again, which holds every site


async def test_purge_drops_cache_entries_and_nothing_else(
    simulator: Simulator,
    make_gateway: GatewayFactory,
    redis_url: str,
    redis_server: RedisProcess,
) -> None:
    gw = await make_gateway(settings_for(simulator, redis_url=redis_url, admin_token=Secret(ADMIN)))
    keys = gw.app[SERVICE].keys
    await _warm(gw)
    client = redis_server.client()
    try:
        client.set(keys.pause, "1", px=60_000)  # an upstream pause in force
        client.set(keys.lock("site:elsewhere"), "another-replica", px=60_000)
        everything = {key.decode() for key in client.scan_iter(count=1000)}
        entries = {key for key in everything if key.startswith(keys.entries_prefix)}
        others = everything - entries
        assert entries and keys.bucket in others and keys.pause in others  # can fail
        purged = await gw.post(
            "/admin/purge", json={}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert purged.status == 200 and (await purged.json())["keys"] == len(entries)
        left = {key.decode() for key in client.scan_iter(count=1000)}
        assert not {key for key in left if key.startswith(keys.entries_prefix)}
        assert others <= left, others - left
        assert client.pttl(keys.pause) > 0
    finally:
        client.close()
