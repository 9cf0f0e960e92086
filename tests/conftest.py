"""Shared fixtures: a real redis-server per test session, the simulator over a real socket,
and a factory for gateway apps with their own settings.

Everything binds 127.0.0.1; every process a fixture starts, it stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.app_keys import METRICS, SERVICE, SETTINGS
from gateway.metrics import Metrics
from gateway.server import EdgeLimits, EdgeRunner
from gateway.settings import Secret, Settings
from gateway.simulator import SIM_STATE, SimulatorConfig, SimulatorState, create_simulator_app

SIM_KEY = "test-key-0123"
SIM_SECRET = "test-secret-s3cr3t-9876"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A redis-server we own: start, kill (SIGKILL), restart on the same port."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: apt-get install redis-server")
        self.binary = binary
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisProcess(Path(directory))
        server.start()
        yield server
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> Iterator[str]:
    client = redis_server.client()
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


@pytest.fixture(params=["memory", "redis"])
def cache_mode(request: pytest.FixtureRequest, redis_server: RedisProcess) -> str | None:
    """A test run twice: with the embedded cache (None) and with a flushed real Redis (its
    URL), as `REDIS_URL`."""
    if request.param == "memory":
        return None
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server for one test, which the test may kill and restart."""
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


@dataclasses.dataclass
class Simulator:
    server: TestServer
    state: SimulatorState

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/rest/v1"))

    @property
    def config(self) -> SimulatorConfig:
        return self.state.config

    def data_calls(self, path: str | None = None) -> int:
        return self.state.count(path)


@pytest.fixture
async def make_simulator(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Callable[..., Awaitable[Simulator]]:
    async def make(
        sites: list[dict[str, Any]] | None = None,
        *,
        held_until: asyncio.Event | None = None,
        **knobs: Any,
    ) -> Simulator:
        """`held_until`: every answer waits for this event (its call is logged on arrival),
        so a test can have all its requests in flight before the upstream answers."""
        config = SimulatorConfig(**{"api_key": SIM_KEY, "api_secret": SIM_SECRET, **knobs})
        app = create_simulator_app(config, sites=sites)
        if held_until is not None:
            app.middlewares.append(_hold(held_until))
        server = await aiohttp_server(app, host="127.0.0.1")
        return Simulator(server, app[SIM_STATE])

    return make


def _hold(release: asyncio.Event) -> Any:
    @web.middleware
    async def hold(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        await release.wait()
        return response

    return hold


@pytest.fixture
async def simulator(make_simulator: Callable[..., Awaitable[Simulator]]) -> Simulator:
    return await make_simulator()


def settings_for(sim: Simulator, **overrides: Any) -> Settings:
    base = Settings(
        base_url=sim.base_url,
        api_key=Secret(SIM_KEY),
        api_secret=Secret(SIM_SECRET),
        upstream_timeout=2.0,
        upstream_rps=1000.0,
        redis_timeout=0.3,
        # Tests count upstream calls: the fleet refresher runs only where a test asks for it.
        refresh_share=0.0,
    )
    return dataclasses.replace(base, **overrides)


GatewayFactory = Callable[..., Awaitable[TestClient]]


class EdgeTestServer(TestServer):
    """The app served as `python -m gateway` serves it: through `EdgeRunner` (the
    connection edge, and the tier-hit fast path in front of the router)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        settings = self.app[SETTINGS]
        limits = EdgeLimits(
            header_timeout=settings.header_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            max_connections=settings.max_connections,
        )
        return EdgeRunner(self.app, limits=limits, metrics=self.app[METRICS], **kwargs)


def fast_hits(client: TestClient) -> int:
    """Requests the tier-hit fast path answered in the gateway behind `client`."""
    runner = client.server.runner
    assert runner is not None and runner.server is not None
    return int(runner.server.request_handler.answered)  # type: ignore[attr-defined]


@pytest.fixture
async def make_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> AsyncIterator[GatewayFactory]:
    async def make(settings: Settings, *, metrics: Metrics | None = None) -> TestClient:
        app: web.Application = create_app(settings, metrics=metrics)
        return await aiohttp_client(EdgeTestServer(app, host="127.0.0.1"))

    yield make


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 5.0
) -> None:
    """Poll `check` (a function or a coroutine function) until it is true; fail after
    `timeout` seconds.  The one way tests wait for a condition."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        await asyncio.sleep(0.02)


def fills_settled(client: TestClient) -> bool:
    """No fill runs in the gateway behind `client` (its first account): background
    refreshes a stale answer started have ended, one way or the other."""
    return not client.app[SERVICE].engine.busy


def requests_seen(client: TestClient) -> int:
    """Requests the app behind a test client has begun to handle (aiohttp's own count)."""
    runner = client.server.runner
    assert runner is not None and runner.server is not None
    return int(runner.server.requests_count)


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture(autouse=True)
def _no_multiprocess_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


# --- a stuck test says where it waits ---------------------------------------------------


# pytest-timeout fails a test stuck past `timeout` (pyproject.toml), with the threads'
# stacks; for a coroutine test those end in the event loop's select.  Just before that, every
# task on the test's loop prints the await chain it is suspended in, into the test's report.
@pytest.fixture
async def _report_stuck_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    after = float(request.config.getini("timeout") or 0) * 0.9
    if after <= 0:
        yield
        return

    async def report() -> None:
        await asyncio.sleep(after)
        print(f"== still running after {after:g} s; its tasks:", file=sys.stderr)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                print(f"-- {task.get_name()}:", *_await_chain(task.get_coro()), file=sys.stderr)

    reporter = asyncio.create_task(report(), name="stuck-test-report")
    yield
    reporter.cancel()


def _await_chain(awaitable: Any) -> list[str]:
    """Where a suspended coroutine waits: each frame of its chain of awaits, outermost first."""
    lines = []
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"\n    {code.co_filename}:{frame.f_lineno} in {code.co_name}")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return lines


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.append("_report_stuck_tasks")
