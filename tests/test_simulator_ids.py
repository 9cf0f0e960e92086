"""Site ids of any character: one raw path segment, signed exactly as sent.

Every request here is built with ``yarl.URL(..., encoded=True)`` so the bytes on the wire
are the bytes the test chose (and signed); the call log confirms they arrived unchanged.
"""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yarl
from aiohttp.test_utils import TestServer

from gateway.simulator import (
    ODD_MULTI_CHAR_IDS,
    SIM_STATE,
    SimulatorConfig,
    SimulatorState,
    create_simulator_app,
    iter_connectors,
    odd_id_fleet,
)
from tests.test_simulator import sign

SUB_DELIMS = "!$&'()*+,;=:@"  # allowed raw in a path segment (RFC 3986 pchar)
ODD_IDS = [site["id"] for site in odd_id_fleet()]


def encode_segment(site_id: str, safe: str = "") -> str:
    """``site_id`` as one path segment; dot segments fully encoded, as a client must."""
    if site_id in (".", ".."):
        return site_id.replace(".", "%2E")
    return quote(site_id, safe=safe)


class Sim:
    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server, self.session = server, session
        self.state: SimulatorState = server.app[SIM_STATE]

    async def get(self, path: str, signed_as: str | None = None) -> tuple[int, Any]:
        """GET exactly ``path`` (already encoded), signed over ``signed_as`` (default: path)."""
        url = yarl.URL(f"http://127.0.0.1:{self.server.port}{path}", encoded=True)
        headers = sign(path if signed_as is None else signed_as)
        async with self.session.get(url, headers=headers) as response:
            body = await response.json()
        assert self.state.calls[-1].path == path  # arrived byte for byte
        return response.status, body


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def make_sim(
    aiohttp_server: Callable[..., Awaitable[TestServer]], session: aiohttp.ClientSession
) -> Callable[..., Awaitable[Sim]]:
    async def make(config: SimulatorConfig | None = None) -> Sim:
        app = create_simulator_app(config, sites=odd_id_fleet())
        return Sim(await aiohttp_server(app, host="127.0.0.1"), session)

    return make


def test_odd_id_fleet_covers_every_printable_ascii_character() -> None:
    fleet = odd_id_fleet()
    ids = [site["id"] for site in fleet]
    assert len(ids) == len(set(ids))
    assert {chr(code) for code in range(0x20, 0x7F)} <= set(ids)
    assert set(ODD_MULTI_CHAR_IDS) <= set(ids)
    assert any(not site_id.isascii() for site_id in ids)
    assert {".", "..", "/", "%", "?", "#", " ", "a/b", "%2F", "a" * 200} <= set(ids)
    assert max(map(len, ids)) == 200
    assert not any(unicodedata.category(char) == "Cc" for site_id in ids for char in site_id)
    connectors = [c["id"] for site in fleet for c in iter_connectors(site)]
    assert len(connectors) == len(set(connectors))
    assert "a/b-cs-001-c1" in connectors
    assert odd_id_fleet() == fleet


@pytest.mark.parametrize("safe", ["", SUB_DELIMS], ids=["all-encoded", "sub-delims-raw"])
async def test_every_id_answers_200_signed_over_the_bytes_sent(
    make_sim: Callable[..., Awaitable[Sim]], safe: str
) -> None:
    sim = await make_sim()
    for site_id in ODD_IDS:
        status, body = await sim.get(f"/rest/v1/sites/{encode_segment(site_id, safe)}")
        assert (status, body["id"]) == (200, site_id)
    assert sim.state.count() == len(ODD_IDS)


async def test_a_differently_encoded_signature_is_401(
    make_sim: Callable[..., Awaitable[Sim]],
) -> None:
    sim = await make_sim()
    for site_id in ODD_IDS:
        sent = f"/rest/v1/sites/{encode_segment(site_id)}"
        decoded = f"/rest/v1/sites/{site_id}"
        over_encoded = "/rest/v1/sites/" + "".join(f"%{b:02X}" for b in site_id.encode())
        # What a careless signer would sign: the decoded path, or another valid encoding.
        other = decoded if decoded != sent else over_encoded
        assert other != sent
        status, body = await sim.get(sent, signed_as=other)
        assert (status, body) == (401, {"error": "invalid signature"}), site_id


async def test_other_valid_encodings_of_one_id_are_the_same_site(
    make_sim: Callable[..., Awaitable[Sim]],
) -> None:
    sim = await make_sim()
    for path in ("/rest/v1/sites/a%2Fb", "/rest/v1/sites/a%2fb", "/rest/v1/sites/%61%2F%62"):
        status, body = await sim.get(path)
        assert (status, body["id"]) == (200, "a/b")
    status, _ = await sim.get("/rest/v1/sites/a%2fb", signed_as="/rest/v1/sites/a%2Fb")
    assert status == 401


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/rest/v1/sites/a/b", 404),  # two segments, though a site "a/b" exists
        ("/rest/v1/sites/..", 404),  # a raw dot segment, though a site ".." exists
        ("/rest/v1/sites/.", 404),
        ("/rest/v1/sites/a/../b", 404),
        ("/rest/v1/sites/", 404),
        ("/rest/v1/sites/%2E%2E/x", 404),
        ("/rest/v1/sites/%FF", 404),  # not UTF-8: no id can be that
        ("/rest/v1/%73ites/a", 404),  # the router decodes %73; the raw prefix is not /sites/
        ("/rest/v1/sites/%zz", 400),
        ("/rest/v1/sites/100%", 400),
        ("/rest/v1/sites/%2E%2E", 200),
        ("/rest/v1/sites/%2e", 200),
        ("/rest/v1/sites/...", 200),
        ("/rest/v1/sites/a%2Fb?x=1", 200),
        ("/rest/v1/sites/%E6%9D%B1%E4%BA%AC-1", 200),
    ],
)
async def test_segments_dots_and_escapes(
    make_sim: Callable[..., Awaitable[Sim]], path: str, status: int
) -> None:
    sim = await make_sim()
    got, body = await sim.get(path)
    assert got == status
    if status != 200:
        assert isinstance(body["error"], str)


async def test_relative_signing_with_odd_ids(make_sim: Callable[..., Awaitable[Sim]]) -> None:
    sim = await make_sim(SimulatorConfig(sign_path="relative"))
    for site_id in ("..", "a/b", "?", "%", "東京-1"):
        segment = encode_segment(site_id)
        status, body = await sim.get(f"/rest/v1/sites/{segment}", signed_as=f"/sites/{segment}")
        assert (status, body["id"]) == (200, site_id)
    status, _ = await sim.get("/rest/v1/sites/a%2Fb", signed_as="/sites/a/b")
    assert status == 401


async def test_charging_events_take_the_same_ids(make_sim: Callable[..., Awaitable[Sim]]) -> None:
    sim = await make_sim()
    for site_id in ("..", "a/b", "#", "100%", "charger 🚗"):
        path = f"/rest/v1/charging-events/site/{encode_segment(site_id)}?take=2"
        status, body = await sim.get(path)
        assert status == 200
        assert {event["site_id"] for event in body["charging_events"]} == {site_id}
    status, _ = await sim.get("/rest/v1/charging-events/site/a/b?take=2")
    assert status == 404
