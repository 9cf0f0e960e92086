"""The real process: `python -m gateway` started as users start it, drained by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.conftest import SIM_KEY, SIM_SECRET, free_port
from tests.processes import clean_env, gateway_env, running, simulator_args


async def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    sim_args = simulator_args(sim_port, SIM_KEY, SIM_SECRET, "--latency", "1.0")
    env = gateway_env(sim_port, SIM_KEY, SIM_SECRET, port)
    log_path = tmp_path / "gateway.log"
    with (
        running(sim_args, clean_env(), tmp_path / "sim.log", ports=(sim_port,)),
        running(["gateway"], env, log_path, ports=(port,)) as process,
    ):
        async with aiohttp.ClientSession() as session:
            in_flight = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/sites/site-0001"))
            await asyncio.sleep(0.4)  # the upstream call (1 s latency) is under way
            process.send_signal(signal.SIGTERM)
            response = await in_flight
            assert response.status == 200
            assert (await response.json())["id"] == "site-0001"
        assert await asyncio.to_thread(process.wait, 20) == 0
    stderr = log_path.read_text()
    assert "draining" in stderr
    assert SIM_SECRET not in stderr and SIM_KEY not in stderr


async def test_demo_needs_no_settings(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(GATEWAY_PORT=str(port), GATEWAY_HOST="127.0.0.1")
    with running(["gateway", "--demo"], env, tmp_path / "demo.log", ports=(port,)) as process:
        async with aiohttp.ClientSession() as session:
            first = await session.get(f"http://127.0.0.1:{port}/sites")
            assert first.status == 200
            assert len((await first.json())["data"]) >= 10
            second = await session.get(f"http://127.0.0.1:{port}/sites")
            assert second.headers["Cache-Status"].startswith("chargepilot-gateway; hit; ttl=")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
