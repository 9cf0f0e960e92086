"""The upstream client against the simulator over a real socket: signing modes, envelopes,
retries, pauses, timeouts and garbage — and that nothing but the two routes is requested."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.circuit import Circuit, Health, Permit
from gateway.errors import BadUpstreamPayload, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.upstream import Upstream, parse_retry_after
from tests.conftest import Simulator, metric_value, settings_for

MakeSim = Callable[..., Awaitable[Simulator]]


class RecordingCircuit(Circuit):
    def __init__(self) -> None:
        super().__init__(failures=1000, cooldown=1)
        self.health: list[Health] = []

    def settle(self, health: Health, *, probe: bool) -> None:
        self.health.append(health)
        super().settle(health, probe=probe)


class RecordingAdmission:
    def __init__(self) -> None:
        self.paused: list[float] = []
        self.circuit = RecordingCircuit()

    @property
    def health(self) -> list[Health]:
        return self.circuit.health

    async def admit(self, deadline: float) -> Permit:
        return Permit(self.circuit, probe=False)

    async def pause(self, seconds: float) -> None:
        self.paused.append(seconds)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def client(sim: Simulator, session: aiohttp.ClientSession, **overrides: Any) -> Upstream:
    admission = RecordingAdmission()
    settings = settings_for(sim, **overrides)
    upstream = Upstream(
        session,
        settings.accounts[0],
        timeout=settings.upstream_timeout,
        retries=settings.upstream_retries,
        metrics=Metrics(),
        admission=admission,
        jitter=lambda cap: 0.01,
    )
    upstream.admission = admission  # type: ignore[attr-defined]
    return upstream


async def test_full_path_signing_is_accepted(simulator: Simulator, session: Any) -> None:
    sites = await client(simulator, session).fetch_sites()
    assert len(sites) == len(simulator.state.sites)
    assert simulator.state.calls[-1].outcome == 200


async def test_relative_signing(make_simulator: MakeSim, session: Any) -> None:
    sim = await make_simulator(sign_path="relative")
    assert await client(sim, session, sign_path="relative").fetch_site("site-0001")
    # The wrong mode is refused by the simulator and surfaces as a 502-class error.
    with pytest.raises(UpstreamError, match="401"):
        await client(sim, session, sign_path="full").fetch_site("site-0001")


async def test_wrong_secret_is_an_upstream_error(simulator: Simulator, session: Any) -> None:
    from gateway.settings import Secret

    with pytest.raises(UpstreamError, match="HTTP 401"):
        await client(simulator, session, api_secret=Secret("wrong")).fetch_sites()
    assert simulator.data_calls() == 1  # a 4xx is never retried


@pytest.mark.parametrize("envelope", ["bare", "sites", "data"])
async def test_site_list_envelopes(make_simulator: MakeSim, session: Any, envelope: str) -> None:
    sim = await make_simulator(envelope=envelope)
    sites = await client(sim, session).fetch_sites()
    assert sorted(s["id"] for s in sites) == sorted(sim.state.sites)


async def test_unknown_site_is_none(simulator: Simulator, session: Any) -> None:
    assert await client(simulator, session).fetch_site("nope") is None


async def test_ids_travel_as_one_encoded_segment(simulator: Simulator, session: Any) -> None:
    assert await client(simulator, session).fetch_site("a b/../sites?x#y") is None
    assert simulator.state.calls[-1].path == "/rest/v1/sites/a%20b%2F..%2Fsites%3Fx%23y"


@pytest.mark.parametrize("mode", ["500", "502", "503"])
async def test_server_errors_are_retried_then_fail(
    make_simulator: MakeSim, session: Any, mode: str
) -> None:
    sim = await make_simulator(fail_mode=mode)
    upstream = client(sim, session)
    with pytest.raises(UpstreamError) as caught:
        await upstream.fetch_sites()
    assert type(caught.value) is UpstreamError
    expected_calls = 3 if mode in ("502", "503") else 1  # 500 is not retriable
    assert sim.data_calls() == expected_calls


async def test_retry_recovers(make_simulator: MakeSim, session: Any) -> None:
    sim = await make_simulator(fail_mode="502")
    upstream = client(sim, session)

    async def heal() -> None:
        while sim.data_calls() < 1:
            await asyncio.sleep(0.001)
        sim.config.fail_mode = None

    healer = asyncio.create_task(heal())
    assert await upstream.fetch_site("site-0001")
    await healer
    assert sim.data_calls() == 2


async def test_connection_error_is_retried(session: Any, simulator: Simulator) -> None:
    from tests.conftest import free_port

    sim_port = free_port()
    upstream = client(simulator, session, base_url=f"http://127.0.0.1:{sim_port}/rest/v1")
    metrics = upstream._metrics
    with pytest.raises(UpstreamError, match="reached"):
        await upstream.fetch_sites()
    text = metrics.render().decode()
    assert metric_value(text, "gateway_upstream_requests_total", outcome="connection_error") == 3


@pytest.mark.parametrize(("mode", "status"), [("429", 429), ("503_retry_after", 503)])
async def test_retry_after_pauses_without_retry(
    make_simulator: MakeSim, session: Any, mode: str, status: int
) -> None:
    sim = await make_simulator(fail_mode=mode, retry_after=3)
    upstream = client(sim, session)
    with pytest.raises(UpstreamUnavailable) as caught:
        await upstream.fetch_sites()
    assert caught.value.retry_after == 3
    assert upstream.admission.paused == [3]  # type: ignore[attr-defined]
    assert sim.data_calls() == 1


async def test_timeout(make_simulator: MakeSim, session: Any) -> None:
    sim = await make_simulator(fail_mode="hang")
    with pytest.raises(UpstreamTimeout):
        await client(sim, session, upstream_timeout=0.3).fetch_sites()


@pytest.mark.parametrize("mode", ["non_json", "wrong_shape"])
async def test_garbage_is_a_bad_payload(make_simulator: MakeSim, session: Any, mode: str) -> None:
    sim = await make_simulator(fail_mode=mode)
    with pytest.raises(BadUpstreamPayload):
        await client(sim, session).fetch_sites()


async def test_site_answer_must_be_an_object(make_simulator: MakeSim, session: Any) -> None:
    sim = await make_simulator(fail_mode="wrong_shape")
    upstream = client(sim, session)
    sim.state.sites["x"] = []  # type: ignore[assignment]
    sim.config.fail_mode = None
    with pytest.raises(BadUpstreamPayload):
        await upstream.fetch_site("x")


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("3") == 3
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-4") == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("99999") == 3600
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == 10
