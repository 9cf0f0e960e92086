"""The real process: `python -m gateway` started as users start it, drained by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import SIM_KEY, SIM_SECRET, free_port


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHARGEPILOT_", "GATEWAY_", "REDIS_"))
    }
    env.update(extra)
    return env


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("process did not start listening")


@pytest.fixture
def slow_simulator() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--key",
            SIM_KEY,
            "--secret",
            SIM_SECRET,
            "--latency",
            "1.0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_clean_env(),
    )
    try:
        _wait_listening(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def test_sigterm_drains_in_flight_requests_and_exits_zero(
    slow_simulator: int, tmp_path: Path
) -> None:
    port = free_port()
    env = _clean_env(
        CHARGEPILOT_BASE_URL=f"http://127.0.0.1:{slow_simulator}/rest/v1",
        CHARGEPILOT_API_KEY=SIM_KEY,
        CHARGEPILOT_API_SECRET=SIM_SECRET,
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
    )
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=log_file
        )
    try:
        _wait_listening(port, process)
        async with aiohttp.ClientSession() as session:
            in_flight = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/sites/site-0001"))
            await asyncio.sleep(0.4)  # the upstream call (1 s latency) is under way
            process.send_signal(signal.SIGTERM)
            response = await in_flight
            assert response.status == 200
            assert (await response.json())["id"] == "site-0001"
        code = await asyncio.to_thread(process.wait, 20)
        assert code == 0
        stderr = log_path.read_text()
        assert "draining" in stderr
        assert SIM_SECRET not in stderr and SIM_KEY not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_demo_needs_no_settings(tmp_path: Path) -> None:
    port = free_port()
    env = _clean_env(GATEWAY_PORT=str(port), GATEWAY_HOST="127.0.0.1")
    with (tmp_path / "demo.log").open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--demo"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        _wait_listening(port, process)
        async with aiohttp.ClientSession() as session:
            first = await session.get(f"http://127.0.0.1:{port}/sites")
            assert first.status == 200
            assert len((await first.json())["data"]) >= 10
            second = await session.get(f"http://127.0.0.1:{port}/sites")
            assert second.headers["Cache-Status"].startswith("chargepilot-gateway; hit; ttl=")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
