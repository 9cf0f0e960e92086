"""Tests of the ChargePilot simulator itself, over real sockets.

The signer here is written out again with hashlib/hmac on purpose: the simulator must agree
with an independent reading of the upstream's scheme, not with itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import signal
import socket
import sys
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.simulator import (
    SIM_STATE,
    SimulatorConfig,
    SimulatorState,
    build_fleet,
    compute_signature,
    create_simulator_app,
    demo_fleet,
    iter_connectors,
    iter_nodes,
)

SimClient = TestClient[Any, Any]
MakeSim = Callable[..., Awaitable[tuple[SimClient, SimulatorState]]]


def sign(
    path: str,
    *,
    key: str = "demo-key",
    secret: str = "demo-secret",
    timestamp: int | None = None,
    method: str = "GET",
) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    hmac_key = hashlib.sha256(secret.encode()).hexdigest().encode()
    payload = f"{method}:{path}:{timestamp}:".encode()
    signature = hmac.new(hmac_key, payload, hashlib.sha256).hexdigest()
    return {"x-api-key": key, "x-req-timestamp": str(timestamp), "x-signature": signature}


@pytest.fixture
def make_sim(aiohttp_client: Any) -> MakeSim:
    async def factory(
        config: SimulatorConfig | None = None, sites: list[dict[str, Any]] | None = None
    ) -> tuple[SimClient, SimulatorState]:
        app = create_simulator_app(config, sites=sites)
        client: SimClient = await aiohttp_client(app)
        return client, app[SIM_STATE]

    return factory


def test_hand_computed_vector() -> None:
    secret, payload = "s3cret", "GET:/rest/v1/sites:1700000000:"
    key = hashlib.sha256(b"s3cret").hexdigest()
    expected = hmac.new(key.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()
    # Pinned too, so a change to both the scheme here and the simulator can't pass silently.
    assert expected == "d896f1e5691406808fb24270148b901ee1f79e53e0949d8393d074ea752cfde4"
    assert compute_signature(secret, payload) == expected


async def test_hand_computed_vector_accepted_on_the_wire(make_sim: MakeSim) -> None:
    config = SimulatorConfig(api_key="k", api_secret="s3cret", max_skew=10**10)
    client, _ = await make_sim(config)
    headers = {
        "x-api-key": "k",
        "x-req-timestamp": "1700000000",
        "x-signature": "d896f1e5691406808fb24270148b901ee1f79e53e0949d8393d074ea752cfde4",
    }
    assert (await client.get("/rest/v1/sites", headers=headers)).status == 200


async def test_full_path_signing(make_sim: MakeSim) -> None:
    client, _ = await make_sim()
    resp = await client.get("/rest/v1/sites", headers=sign("/rest/v1/sites"))
    assert resp.status == 200
    assert [site["id"] for site in await resp.json()] == [s["id"] for s in demo_fleet()]
    resp = await client.get("/rest/v1/sites?x=1", headers=sign("/rest/v1/sites?x=1"))
    assert resp.status == 200
    resp = await client.get("/rest/v1/sites?x=1", headers=sign("/rest/v1/sites"))
    assert resp.status == 401


async def test_relative_path_signing(make_sim: MakeSim) -> None:
    client, _ = await make_sim(SimulatorConfig(sign_path="relative"))
    resp = await client.get("/rest/v1/sites/site-0001", headers=sign("/sites/site-0001"))
    assert resp.status == 200
    assert (await resp.json())["id"] == "site-0001"
    resp = await client.get("/rest/v1/sites?a=b", headers=sign("/sites?a=b"))
    assert resp.status == 200
    full = sign("/rest/v1/sites/site-0001")
    assert (await client.get("/rest/v1/sites/site-0001", headers=full)).status == 401


async def test_percent_encoded_path_signed_as_sent(make_sim: MakeSim) -> None:
    client, _ = await make_sim()
    path = "/rest/v1/sites/no%20such"
    resp = await client.get(path, headers=sign(path))
    assert resp.status == 404
    assert await resp.json() == {"error": "not found"}
    assert (await client.get(path, headers=sign("/rest/v1/sites/no such"))).status == 401


@pytest.mark.parametrize(
    "headers",
    [
        sign("/rest/v1/sites", secret="wrong"),
        sign("/rest/v1/sites", key="other-key"),
        sign("/rest/v1/sites", timestamp=int(time.time()) - 1000),
        sign("/rest/v1/sites", timestamp=int(time.time()) + 1000),
        {k: v for k, v in sign("/rest/v1/sites").items() if k != "x-signature"},
        {k: v for k, v in sign("/rest/v1/sites").items() if k != "x-req-timestamp"},
        {**sign("/rest/v1/sites"), "x-req-timestamp": "12.5"},
        {},
    ],
    ids=["secret", "key", "stale", "future", "no-sig", "no-ts", "float-ts", "none"],
)
async def test_rejected_signatures(make_sim: MakeSim, headers: dict[str, str]) -> None:
    client, state = await make_sim()
    resp = await client.get("/rest/v1/sites", headers=headers)
    assert resp.status == 401
    assert isinstance((await resp.json())["error"], str)
    assert [call.outcome for call in state.calls] == [401]


@pytest.mark.parametrize("envelope", ["bare", "sites", "data"])
async def test_envelopes(make_sim: MakeSim, envelope: Any) -> None:
    client, _ = await make_sim(SimulatorConfig(envelope=envelope))
    body = await (await client.get("/rest/v1/sites", headers=sign("/rest/v1/sites"))).json()
    sites = body if envelope == "bare" else body[envelope]
    assert sites == demo_fleet()
    one = await client.get("/rest/v1/sites/site-0002", headers=sign("/rest/v1/sites/site-0002"))
    assert await one.json() == demo_fleet()[1]  # single site is never wrapped


@pytest.mark.parametrize(
    ("mode", "status", "retry_after"),
    [
        ("500", 500, None),
        ("502", 502, None),
        ("503", 503, None),
        ("429", 429, "1"),
        ("503_retry_after", 503, "1"),
        ("401", 401, None),
    ],
)
async def test_fail_modes_with_json_errors(
    make_sim: MakeSim, mode: str, status: int, retry_after: str | None
) -> None:
    client, state = await make_sim(SimulatorConfig(fail_mode=mode))
    for path in ("/rest/v1/sites", "/rest/v1/sites/site-0001"):
        resp = await client.get(path, headers=sign(path))
        assert resp.status == status
        assert resp.headers.get("Retry-After") == retry_after
        assert "error" in await resp.json()
    assert state.count() == 2


async def test_retry_after_formatting(make_sim: MakeSim) -> None:
    client, state = await make_sim(SimulatorConfig(fail_mode="429", retry_after=2.5))
    resp = await client.get("/rest/v1/sites", headers=sign("/rest/v1/sites"))
    assert resp.headers["Retry-After"] == "2.5"
    state.config.retry_after = 7.0
    resp = await client.get("/rest/v1/sites", headers=sign("/rest/v1/sites"))
    assert resp.headers["Retry-After"] == "7"


async def test_fail_mode_non_json_and_wrong_shape(make_sim: MakeSim) -> None:
    client, state = await make_sim(SimulatorConfig(fail_mode="non_json"))
    resp = await client.get("/rest/v1/sites/site-0001", headers=sign("/rest/v1/sites/site-0001"))
    assert (resp.status, resp.content_type) == (200, "text/html")
    assert await resp.text() == "<html>oops</html>"
    state.config.fail_mode = "wrong_shape"
    for path in ("/rest/v1/sites", "/rest/v1/sites/site-0001"):
        resp = await client.get(path, headers=sign(path))
        assert (resp.status, await resp.json()) == (200, {"unexpected": True})


async def test_fail_mode_hang_never_answers(make_sim: MakeSim) -> None:
    client, state = await make_sim(SimulatorConfig(fail_mode="hang"))
    with pytest.raises(asyncio.TimeoutError):
        await client.get(
            "/rest/v1/sites",
            headers=sign("/rest/v1/sites"),
            timeout=aiohttp.ClientTimeout(total=0.2),
        )
    assert [call.outcome for call in state.calls] == [0]


async def test_rate_limit(make_sim: MakeSim) -> None:
    client, state = await make_sim(SimulatorConfig(rate_limit_rps=2))
    statuses = []
    for _ in range(3):
        resp = await client.get(
            "/rest/v1/sites/site-0001", headers=sign("/rest/v1/sites/site-0001")
        )
        statuses.append(resp.status)
    assert statuses == [200, 200, 429]
    assert resp.headers["Retry-After"] == "1"
    assert state.count() == 3


async def test_error_rate_and_latency(make_sim: MakeSim) -> None:
    client, state = await make_sim(SimulatorConfig(error_rate=1.0))
    resp = await client.get("/rest/v1/sites", headers=sign("/rest/v1/sites"))
    assert resp.status == 500
    assert "error" in await resp.json()
    state.config.error_rate = 0.0
    state.config.latency = 0.1
    started = time.monotonic()
    resp = await client.get("/rest/v1/sites", headers=sign("/rest/v1/sites"))
    assert resp.status == 200
    assert time.monotonic() - started >= 0.1


async def test_unknown_site_and_mutable_sites(make_sim: MakeSim) -> None:
    client, state = await make_sim(sites=demo_fleet()[:2])
    path = "/rest/v1/sites/site-0099"
    resp = await client.get(path, headers=sign(path))
    assert (resp.status, await resp.json()) == (404, {"error": "not found"})
    state.sites["site-0099"] = {"id": "site-0099", "name": "New", "fuse_tree": []}
    del state.sites["site-0001"]
    assert (await (await client.get(path, headers=sign(path))).json())["name"] == "New"
    listing = await client.get("/rest/v1/sites", headers=sign("/rest/v1/sites"))
    assert [site["id"] for site in await listing.json()] == ["site-0002", "site-0099"]


async def test_call_log_and_control_routes(make_sim: MakeSim) -> None:
    client, state = await make_sim()
    one = "/rest/v1/sites/site-0001"
    await client.get(one, headers=sign(one))
    await client.get(one, headers=sign(one))
    await client.get("/rest/v1/sites", headers=sign("/rest/v1/sites"))
    await client.get("/rest/v1/sites", headers={})
    assert (state.count(), state.count(one), state.count("/rest/v1/sites")) == (4, 2, 2)
    assert state.calls[0].method == "GET" and state.calls[0].path == one
    assert state.calls[0].time <= state.calls[-1].time
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["total"] == 4
    assert stats["by_outcome"] == {"200": 3, "401": 1}
    assert stats["by_path"][one] == 2
    assert state.count() == 4  # control routes are not logged

    resp = await client.post("/_sim/config", json={"fail_mode": "502", "latency": 0})
    assert resp.status == 200
    assert state.config.fail_mode == "502"
    assert (await client.get(one, headers=sign(one))).status == 502
    resp = await client.post("/_sim/config", json={"fail_mode": None, "rate_limit_rps": None})
    assert (await resp.json())["fail_mode"] is None
    for bad in ({"nope": 1}, {"error_rate": 2}, {"envelope": "xml"}, [1]):
        assert (await client.post("/_sim/config", json=bad)).status == 400
    assert (await client.post("/_sim/config", data=b"{")).status == 400

    assert (await client.post("/_sim/reset")).status == 200
    assert state.count() == 0


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        SimulatorConfig(error_rate=1.5)
    with pytest.raises(ValueError, match="fail_mode"):
        SimulatorConfig(fail_mode="teapot")
    with pytest.raises(ValueError, match="rate_limit_rps"):
        SimulatorConfig(rate_limit_rps=0)


def _is_numeric_string(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value) is not None


def test_demo_fleet_facts() -> None:
    fleet = demo_fleet()
    assert fleet == demo_fleet(7) and fleet != demo_fleet(8)
    assert len(fleet) == 12
    assert all(re.fullmatch(r"[a-z0-9-]+", site["id"]) for site in fleet)
    counts = {site["name"]: len(list(iter_connectors(site))) for site in fleet}
    assert counts["Bus-Depot Südstadt"] == 120 and min(counts.values()) == 4
    assert "Ladepark Ærø" in counts
    mains = [float(node["parameters"]["limit"]) for s in fleet for node in s["fuse_tree"]]
    assert min(mains) == 63 and max(mains) == 4000
    ids = [c["id"] for site in fleet for c in iter_connectors(site)]
    assert len(ids) == len(set(ids)) == sum(counts.values())
    connectors = [c for site in fleet for c in iter_connectors(site)]
    assert any(c.get("discharge_capability") for c in connectors)
    assert any("charging_capability" not in c for c in connectors)
    for site in fleet:
        zoneinfo.ZoneInfo(site["timezone"])
    assert sum("local_controller" not in site for site in fleet) in (1, 2)
    assert any("vendor_meta" in site for site in fleet)

    nodes = [node for site in fleet for node in iter_nodes(site)]
    params = [node["parameters"] for node in nodes]
    assert {node["type"] for node in nodes} == {"fuse", "charging station", "connector group"}
    assert all(isinstance(p["depth"], str) for p in params)
    assert any(_is_numeric_string(value) for p in params for value in p.values())
    meters = [p["meter"] for p in params if "meter" in p]
    assert any(
        _is_numeric_string(m["producer_current"]) and "." in m["producer_current"] for m in meters
    )
    assert any("order" not in p for p in params)
    assert any(n["type"] == "connector group" and "limit" not in n["parameters"] for n in nodes)
    assert all("connectors" not in n["parameters"] for n in nodes if n["type"] == "fuse")
    assert any(m["is_producer"] for m in meters)
    orders = [[child["parameters"].get("order") for child in node["children"]] for node in nodes]
    assert any(o != sorted(o) for o in orders if None not in o)


def test_build_fleet_size() -> None:
    fleet = build_fleet(500, 200)
    assert len(fleet) == 500
    ids = [c["id"] for site in fleet for c in iter_connectors(site)]
    assert len(ids) == len(set(ids)) == 500 * 200
    assert build_fleet(3, 5, seed=2) == build_fleet(3, 5, seed=2)
    with pytest.raises(ValueError, match="connectors_per_site"):
        build_fleet(1, 0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_command_line_serves_until_sigterm() -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.simulator", "--port", str(port),
        "--sites", "3", "--connectors-per-site", "4", "--key", "k", "--secret", "s",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert f"http://127.0.0.1:{port}/rest/v1" in line
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/rest/v1/sites"
            async with session.get(url, headers=sign("/rest/v1/sites", key="k", secret="s")) as r:
                assert r.status == 200
                assert len(await r.json()) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
