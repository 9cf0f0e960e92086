"""The real process: `python -m gateway` started as users start it, drained by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp

from tests.conftest import SIM_KEY, SIM_SECRET, free_port
from tests.processes import (
    clean_env,
    gateway_env,
    running,
    simulator_args,
    until_upstream_called,
)


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
            await until_upstream_called(sim_port)  # the upstream call (1 s latency) is under way
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


async def test_a_taken_port_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            env = clean_env(GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port),
                            GATEWAY_WORKERS=workers, CHARGEPILOT_BASE_URL="http://127.0.0.1:9/rest/v1",
                            CHARGEPILOT_API_KEY="k", CHARGEPILOT_API_SECRET="s")  # fmt: skip
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "gateway"], env=env,
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert result.returncode == 2, result.stderr
            lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
            assert len(lines) == 1 and "GATEWAY_PORT" in lines[0], result.stderr


async def test_a_dying_worker_stops_the_supervisor(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port), GATEWAY_WORKERS="2",
                    CHARGEPILOT_BASE_URL="http://127.0.0.1:9/rest/v1",
                    CHARGEPILOT_API_KEY="k", CHARGEPILOT_API_SECRET="s")  # fmt: skip
    with running(["gateway"], env, tmp_path / "gw.log", ports=(port,)) as supervisor:
        children_file = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
        workers = [int(pid) for pid in children_file.read_text().split()]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        assert await asyncio.to_thread(supervisor.wait, 20) == 1
        for pid in workers:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
