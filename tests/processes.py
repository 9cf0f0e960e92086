"""Starting and stopping real processes (`python -m gateway`, the simulator) for tests, and
waiting on what they do (a log line, an upstream call)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from tests.conftest import eventually


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any gateway setting, plus `extra` (and no shutdown
    delay unless `extra` sets one)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHARGEPILOT_", "GATEWAY_", "REDIS_", "PROMETHEUS_MULTIPROC"))
    }
    # Stopping a test's gateway should not wait out the load-balancer delay (5 s), and most
    # tests count upstream calls, which the fleet refresher would add to: the tests of either
    # set them themselves.
    env["GATEWAY_SHUTDOWN_DELAY"] = "0"
    env["GATEWAY_REFRESH_SHARE"] = "0"
    env.update(extra)
    return env


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("process did not start listening")


def simulator_args(port: int, key: str, secret: str, *extra: str) -> list[str]:
    """`python -m` arguments for a simulator on 127.0.0.1:`port` with these credentials."""
    return ["gateway.simulator", "--host", "127.0.0.1", "--port", str(port),
            "--key", key, "--secret", secret, *extra]  # fmt: skip


def gateway_env(sim_port: int, key: str, secret: str, port: int, **extra: str) -> dict[str, str]:
    """A clean environment for `python -m gateway` against that simulator, on `port`."""
    return clean_env(
        CHARGEPILOT_BASE_URL=f"http://127.0.0.1:{sim_port}/rest/v1",
        CHARGEPILOT_API_KEY=key, CHARGEPILOT_API_SECRET=secret,
        GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port), **extra,
    )  # fmt: skip


def start(module_args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m <module_args>` with its stderr in `log_path`."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", *module_args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited in 20 s (nothing if it has exited)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running(
    module_args: list[str], env: dict[str, str], log_path: Path, *, ports: tuple[int, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m <module_args>`, its stderr in `log_path`, listening on `ports`; stopped
    (SIGTERM, then SIGKILL) on the way out if the test has not stopped it."""
    process = start(module_args, env, log_path)
    try:
        for port in ports:
            wait_listening(port, process)
        yield process
    finally:
        stop(process)


async def until_logged(path: Path, text: str, count: int = 1, timeout: float = 10.0) -> None:
    """Wait until the log file at `path` holds `text` at least `count` times."""
    try:
        await eventually(lambda: path.read_text().count(text) >= count, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"{text!r} not logged {count} times in {timeout} s") from None


async def until_upstream_called(sim_port: int, count: int = 1, timeout: float = 10.0) -> None:
    """Wait until the simulator process on `sim_port` has received `count` data calls (a
    call is counted when it arrives, so the gateway's upstream request is then under way)."""
    async with aiohttp.ClientSession() as session:

        async def called() -> bool:
            async with session.get(f"http://127.0.0.1:{sim_port}/_sim/stats") as response:
                stats = await response.json()
            return int(stats["total"]) >= count

        await eventually(called, timeout=timeout)
