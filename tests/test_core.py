"""The gateway end to end over real sockets: simulator upstream, embedded or Redis cache."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from gateway import __version__, logs
from gateway.metrics import Metrics
from gateway.settings import Secret
from tests.conftest import (
    SIM_KEY,
    SIM_SECRET,
    GatewayFactory,
    Simulator,
    eventually,
    fills_settled,
    metric_value,
    settings_for,
)

MakeSim = Callable[..., Awaitable[Simulator]]


async def test_sites_are_normalized_then_served_from_cache(
    simulator: Simulator, make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    gw = await make_gateway(settings_for(simulator, redis_url=cache_mode))
    first = await gw.get("/sites")
    assert first.status == 200
    assert first.headers["Cache-Status"] == "chargepilot-gateway; fwd=miss; stored"
    body = await first.json()
    assert [s["id"] for s in body["data"]] == sorted(simulator.state.sites)
    station = body["data"][0]["fuse_tree"][0]["children"][0]
    assert station["type"] == "charging_station"
    assert isinstance(station["parameters"]["depth"], int)
    for _ in range(20):
        again = await gw.get("/sites")
        assert again.status == 200
        assert again.headers["Cache-Status"].startswith("chargepilot-gateway; hit; ttl=")
        assert int(again.headers["Cache-Status"].rsplit("=", 1)[1]) > 290
    assert simulator.data_calls() == 1
    # Filling /sites filled every site: no further upstream call for any of them.
    for site_id in simulator.state.sites:
        response = await gw.get(f"/sites/{site_id}")
        assert response.status == 200
        assert response.headers["Cache-Status"].startswith("chargepilot-gateway; hit")
    assert simulator.data_calls() == 1


async def test_one_site_is_fetched_once(
    simulator: Simulator, make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    gw = await make_gateway(settings_for(simulator, redis_url=cache_mode))
    statuses = []
    for _ in range(10):
        response = await gw.get("/sites/site-0003")
        statuses.append(response.headers["Cache-Status"])
        assert (await response.json())["id"] == "site-0003"
    assert statuses[0].endswith("fwd=miss; stored")
    assert all("; hit; ttl=" in status for status in statuses[1:])
    # The known-id gate fetched the fleet list first, which stored the site too.
    assert simulator.data_calls() == 1


async def test_expiry_refetches(
    simulator: Simulator, make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    gw = await make_gateway(
        settings_for(simulator, redis_url=cache_mode, cache_ttl=0.2, cache_stale=0.0)
    )
    first = await gw.get("/sites/site-0001")
    assert first.headers["Cache-Status"].endswith("fwd=miss; stored")
    # Counted from here: on a loaded machine the first fill can outlive the 0.2 s TTL
    # before its own request reads it back, and then that request fetches the site too.
    calls = simulator.data_calls()
    await asyncio.sleep(0.4)  # real time: past the TTL, with no stale window
    response = await gw.get("/sites/site-0001")
    assert response.headers["Cache-Status"].endswith("fwd=miss; stored")
    assert simulator.data_calls() > calls


async def test_negative_caching(
    simulator: Simulator, make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    # 1 s: the three lookups must land inside it on a loaded machine (each one after the
    # negative TTL refreshes the list that proves the absence).
    gw = await make_gateway(settings_for(simulator, redis_url=cache_mode, negative_ttl=1.0))
    statuses = []
    for _ in range(3):
        response = await gw.get("/sites/nowhere")
        assert response.status == 404
        assert response.content_type == "application/problem+json"
        statuses.append(response.headers["Cache-Status"])
    assert simulator.data_calls() == 1
    assert statuses[0] == "chargepilot-gateway; fwd=miss; stored"
    assert statuses[1].startswith("chargepilot-gateway; hit; ttl=")
    assert statuses[1].endswith("; detail=negative")
    await asyncio.sleep(1.1)  # real time: past the negative TTL
    assert (await gw.get("/sites/nowhere")).status == 404
    assert simulator.data_calls() == 2


async def test_etag_and_304(simulator: Simulator, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings_for(simulator))
    first = await gw.get("/sites/site-0002")
    etag = first.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert int(first.headers["Age"]) == 0
    second = await gw.get("/sites/site-0002", headers={"If-None-Match": etag})
    assert second.status == 304
    assert second.headers["ETag"] == etag
    assert await second.read() == b""
    other = await gw.get("/sites/site-0002", headers={"If-None-Match": '"nope", W/' + etag})
    assert other.status == 304
    changed = await gw.get("/sites/site-0002", headers={"If-None-Match": '"nope"'})
    assert changed.status == 200


async def test_request_id_echoed_or_generated(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator))
    assert (await gw.get("/healthz", headers={"X-Request-ID": "abc-123"})).headers[
        "X-Request-ID"
    ] == "abc-123"
    generated = (await gw.get("/healthz")).headers["X-Request-ID"]
    assert len(generated) == 32
    unsafe = (await gw.get("/healthz", headers={"X-Request-ID": "a\tb"})).headers["X-Request-ID"]
    assert unsafe != "a\tb"


async def raw_get(gw: Any, path: str) -> tuple[int, dict[str, Any]]:
    """Send the path exactly as written (clients would normalize `..` away)."""
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head
    return int(head.split()[1]), orjson.loads(body)


@pytest.mark.parametrize(
    "path",
    [
        "/sites/a%00b",
        "/sites/a%1Fb",
        "/sites/a%7Fb",
        "/sites/a%C2%85b",
        "/sites/" + "x" * 201,
        "/connectors/a%0Ab",
        "/sites/a%09b/connectors",
        "/sites/%1B/nodes",
    ],
)
async def test_bad_ids_are_400_and_never_sent_upstream(
    simulator: Simulator, make_gateway: GatewayFactory, path: str
) -> None:
    gw = await make_gateway(settings_for(simulator))
    status, body = await raw_get(gw, path)
    assert status == 400
    assert body["status"] == 400 and body["type"] == "/problems/bad-request"
    assert simulator.data_calls() == 0


@pytest.mark.parametrize(
    ("mode", "status"),
    [
        ("500", 502),
        ("502", 502),
        ("non_json", 502),
        ("wrong_shape", 502),
        ("401", 502),
        ("hang", 504),
        ("429", 503),
    ],
)
async def test_upstream_failures_are_problems_and_nothing_is_cached(
    make_simulator: MakeSim, make_gateway: GatewayFactory, mode: str, status: int
) -> None:
    sim = await make_simulator(fail_mode=mode)
    gw = await make_gateway(settings_for(sim, upstream_timeout=0.5, negative_ttl=0.2))
    response = await gw.get("/sites/site-0001")
    assert response.status == status
    body = await response.json()
    assert response.content_type == "application/problem+json"
    assert set(body) == {"type", "title", "status", "detail", "request_id"}
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert response.headers["Cache-Status"] == "chargepilot-gateway; fwd=miss"
    assert "Traceback" not in body["detail"]
    if status == 503:
        assert int(response.headers["Retry-After"]) >= 1
        return
    sim.config.fail_mode = None
    await asyncio.sleep(0.25)  # the failed list fetch is retried after a pause, not at once
    healed = await gw.get("/sites/site-0001")
    assert healed.status == 200
    assert healed.headers["Cache-Status"].endswith("fwd=miss; stored")


async def test_a_failed_refresh_keeps_the_good_entry(
    simulator: Simulator, make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    gw = await make_gateway(
        settings_for(simulator, redis_url=cache_mode, cache_ttl=0.2, cache_stale=60)
    )
    good = await (await gw.get("/sites/site-0001")).json()
    await asyncio.sleep(0.3)  # real time: the entry goes stale in Redis too
    for mode in ("500", "non_json", "wrong_shape"):
        simulator.config.fail_mode = mode
        calls = simulator.data_calls()
        response = await gw.get("/sites/site-0001")
        assert response.status == 200
        assert "; hit; ttl=-" in response.headers["Cache-Status"]
        assert await response.json() == good
        await eventually(lambda: fills_settled(gw))  # the background refresh failed
        assert simulator.data_calls() > calls
    # Only a real upstream 404 removes it.
    simulator.config.fail_mode = None
    del simulator.state.sites["site-0001"]
    await gw.get("/sites/site-0001")  # stale answer, refresh learns 404
    await eventually(lambda: fills_settled(gw))
    assert (await gw.get("/sites/site-0001")).status == 404


async def test_router_errors_are_problems(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator))
    missing = await gw.get("/nope")
    assert missing.status == 404 and missing.content_type == "application/problem+json"
    wrong_method = await gw.post("/sites")
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "GET, HEAD"
    assert (await wrong_method.json())["status"] == 405


async def test_health_and_readiness(
    simulator: Simulator, make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    gw = await make_gateway(settings_for(simulator, redis_url=cache_mode))
    assert (await gw.get("/healthz")).status == 200
    ready = await gw.get("/readyz")
    assert ready.status == 200
    report = await ready.json()
    assert report["ready"] is True
    assert report["redis"] == ("up" if cache_mode else "absent")


async def test_openapi_matches_the_routes(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator))
    document = await (await gw.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    routes = set()
    for resource in gw.app.router.resources():
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", resource.canonical)
        for route in resource:
            routes.add((path, route.method.lower()))
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == routes
    operations = [op for item in document["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) and all(op["tags"] for op in operations)
    assert document["info"]["version"] == __version__
    # Security only where it applies: admin on /admin/*, none on the operational endpoints.
    assert document["paths"]["/admin/purge"]["post"]["security"] == [{"admin": []}]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert "security" not in document["paths"]["/sites"]["get"]  # no client tokens set
    secured = await make_gateway(settings_for(simulator, client_tokens={"a": Secret("t")}))
    secured_doc = await (await secured.get("/openapi.json")).json()
    assert secured_doc["paths"]["/sites"]["get"]["security"] == [{"client": []}]


async def test_client_tokens_and_admin(simulator: Simulator, make_gateway: GatewayFactory) -> None:
    settings = settings_for(
        simulator, client_tokens={"dash": Secret("tok-dash")}, admin_token=Secret("tok-admin")
    )
    gw = await make_gateway(settings)
    assert (await gw.get("/sites")).status == 401
    assert (await gw.get("/sites", headers={"Authorization": "Bearer nope"})).status == 401
    ok = await gw.get("/sites", headers={"Authorization": "Bearer tok-dash"})
    assert ok.status == 200
    assert (await gw.get("/healthz")).status == 200  # probes stay open
    purge = "/admin/purge"
    assert (await gw.post(purge, json={})).status == 401
    assert (
        await gw.post(purge, json={}, headers={"Authorization": "Bearer tok-dash"})
    ).status == 403
    admin = {"Authorization": "Bearer tok-admin"}
    assert (await gw.post(purge, json={"bad": 1}, headers=admin)).status == 400
    assert (await gw.post(purge, data=b"{", headers=admin)).status == 400
    response = await gw.post(purge, json={"site_id": "site-0001"}, headers=admin)
    assert response.status == 200
    again = await gw.get("/sites/site-0001", headers={"Authorization": "Bearer tok-dash"})
    assert again.headers["Cache-Status"].endswith("fwd=miss; stored")
    assert (await gw.post(purge, json={}, headers=admin)).status == 200
    again = await gw.get("/sites", headers={"Authorization": "Bearer tok-dash"})
    assert again.headers["Cache-Status"].endswith("fwd=miss; stored")


async def test_admin_disabled_without_token(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator))
    response = await gw.post("/admin/purge", json={})
    assert response.status == 404


async def test_client_quota(simulator: Simulator, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings_for(simulator, client_rps=1.0))
    statuses = [(await gw.get("/healthz")).status for _ in range(3)]
    assert statuses == [200, 200, 200]  # probes are not metered
    codes = [(await gw.get("/sites")).status for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[-1] == 429
    limited = await gw.get("/sites")
    assert int(limited.headers["Retry-After"]) >= 1


async def test_secrets_never_leave(simulator: Simulator, make_gateway: GatewayFactory) -> None:
    stream = io.StringIO()
    logs.configure("DEBUG", secrets=[SIM_KEY, SIM_SECRET, "tok-dash"], stream=stream)
    try:
        metrics = Metrics()
        gw = await make_gateway(
            settings_for(simulator, client_tokens={"d": Secret("tok-dash")}), metrics=metrics
        )
        auth = {"Authorization": "Bearer tok-dash"}
        texts = []
        for path in (
            "/sites",
            "/sites/site-0001",
            "/sites/zzz",
            "/openapi.json",
            "/readyz",
            "/metrics",
        ):
            response = await gw.get(path, headers=auth)
            texts.append(str(dict(response.headers)) + (await response.text()))
        simulator.config.fail_mode = "401"
        response = await gw.get("/sites/site-0002", headers=auth)
        texts.append(await response.text())
        logging.getLogger("test").warning("leak? %s", SIM_SECRET)
        texts.append(stream.getvalue())
        everything = "\n".join(texts)
        assert "tok-dash" not in everything
        for secret in (SIM_KEY, SIM_SECRET):
            assert secret not in everything
        assert "x-signature" not in everything.lower()
        assert '"request_id"' in stream.getvalue()
    finally:
        logs.configure("INFO")


async def test_normalization_issues_are_counted(
    make_simulator: MakeSim, make_gateway: GatewayFactory
) -> None:
    raw: dict[str, Any] = {
        "id": "odd",
        "name": "Odd",
        "timezone": "Europe/Berlin",
        "fuse_tree": [
            {
                "type": "fuse",
                "parameters": {"name": "F", "limit": "lots", "depth": "x"},
                "children": [],
            }
        ],
    }
    sim = await make_simulator(sites=[raw])
    metrics = Metrics()
    gw = await make_gateway(settings_for(sim), metrics=metrics)
    body = await (await gw.get("/sites/odd")).json()
    assert body["fuse_tree"][0]["parameters"]["limit"] is None
    text = metrics.render().decode()
    assert metric_value(text, "gateway_normalization_issues_total", field="parameters.limit") == 1
    assert metric_value(text, "gateway_normalization_issues_total", field="parameters.depth") == 1


async def test_deep_trees_are_served(make_simulator: MakeSim, make_gateway: GatewayFactory) -> None:
    node: dict[str, Any] = {
        "type": "fuse",
        "parameters": {"name": "leaf", "limit": 16},
        "children": [],
    }
    for level in range(499):
        node = {
            "type": "fuse",
            "parameters": {"name": f"n{level}", "limit": 1000 - level},
            "children": [node],
        }
    sim = await make_simulator(sites=[{"id": "deep", "name": "Deep", "fuse_tree": [node]}])
    gw = await make_gateway(settings_for(sim))
    response = await gw.get("/sites/deep")
    assert response.status == 200
    text = await response.read()
    assert text.count(b'"children"') == 500
    nodes = await (await gw.get("/sites/deep/nodes")).json()
    assert len(nodes["data"]) == 500
    assert nodes["data"][-1]["effective_limit"] == 16
    assert orjson.loads(text)["id"] == "deep"


async def test_with_caching_off_the_gateway_passes_through(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    """GATEWAY_CACHE_TTL=0 and GATEWAY_CACHE_STALE=0 keep nothing: every answer is fetched,
    and a site still answers 200 (the known-id list lives its negative TTL regardless)."""
    gw = await make_gateway(settings_for(simulator, cache_ttl=0, cache_stale=0))
    for _ in range(3):
        response = await gw.get("/sites/site-0001")
        assert response.status == 200
        assert (await response.json())["id"] == "site-0001"
    assert simulator.data_calls("/rest/v1/sites") == 1
    assert simulator.data_calls("/rest/v1/sites/site-0001") == 3
    assert (await gw.get("/sites/nowhere")).status == 404


async def test_purging_one_site_costs_one_site_fetch_not_the_list(
    simulator: Simulator, make_gateway: GatewayFactory, cache_mode: str | None
) -> None:
    from gateway.settings import Secret

    gw = await make_gateway(
        settings_for(simulator, redis_url=cache_mode, admin_token=Secret("admin-1"))
    )
    assert (await gw.get("/sites/site-0002")).status == 200
    purged = await gw.post(
        "/admin/purge", json={"site_id": "site-0002"}, headers={"Authorization": "Bearer admin-1"}
    )
    assert purged.status == 200
    again = await gw.get("/sites/site-0002")
    assert again.status == 200 and again.headers["Cache-Status"].endswith("fwd=miss; stored")
    assert simulator.data_calls("/rest/v1/sites") == 1
    assert simulator.data_calls("/rest/v1/sites/site-0002") == 1
    # The lists that held it were dropped while the ids stayed: they are fetched again
    # (the known ids being fresh must not pass for "the list was just filled").
    for path in ("/sites", "/connectors", "/connectors/site-0002-cs-001-c1"):
        response = await gw.get(path)
        assert response.status == 200, (path, await response.text())
    assert simulator.data_calls("/rest/v1/sites") == 2


async def test_purge_bodies_that_are_not_json_or_not_utf8_are_400(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator, admin_token=Secret("adm")))
    headers = {"Authorization": "Bearer adm", "Content-Type": "application/json"}
    for body in (b"\xff\xfe\x00\x80", b"{", b"[]", b'{"site_id": null}', b'{"x": 1}'):
        response = await gw.post("/admin/purge", data=body, headers=headers)
        assert response.status == 400, body
        assert response.content_type == "application/problem+json"
