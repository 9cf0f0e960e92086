"""The real process's lifecycle: the SIGTERM/SIGINT drain (one process and with workers),
SIGHUP token reloads, and a rolling restart of three replicas under load without a
failed request."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.lifecycle import STOP_SIGNALS, Drain, EarlyStop, stop_tasks, until_stop_signal
from tests.conftest import SIM_KEY, SIM_SECRET, RedisProcess, eventually, free_port
from tests.processes import (
    clean_env,
    gateway_env,
    running,
    simulator_args,
    start,
    stop,
    until_logged,
    until_upstream_called,
)
from tests.rawhttp import close, get, read_response

SITES = [f"site-{n:04d}" for n in range(1, 13)]


@pytest.fixture
def simulator_port(tmp_path: Path) -> Iterator[int]:
    """A simulator process (50 ms per answer) on a free port."""
    port = free_port()
    args = simulator_args(port, SIM_KEY, SIM_SECRET, "--latency", "0.05")
    with running(args, clean_env(), tmp_path / "sim.log", ports=(port,)):
        yield port


async def _status(session: aiohttp.ClientSession, url: str, **kw: object) -> int:
    async with session.get(url, **kw) as response:  # type: ignore[arg-type]
        await response.read()
        return response.status


async def _wait(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    return await asyncio.to_thread(process.wait, timeout)


# --- background tasks -------------------------------------------------------------------


async def test_stopping_tasks_leaves_one_that_swallows_its_cancellation_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A shutdown must end within the pod's grace period even when a task does not (as a
    loop around a Redis call did when redis-py swallowed the cancellation)."""
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    tasks = [
        asyncio.create_task(stubborn(), name="stubborn"),
        asyncio.create_task(asyncio.sleep(10), name="polite"),
    ]
    await asyncio.sleep(0)  # both running: a task cancelled before its first step just ends
    await stop_tasks(tasks, "test tasks", within=0.2)
    assert tasks[1].cancelled() and not tasks[0].done()
    assert "test tasks: tasks did not stop within 0.2 s: stubborn" in caplog.text
    released.set()
    tasks[0].cancel()
    await asyncio.wait_for(tasks[0], 1)


# --- SIGTERM / SIGINT ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "workers"),
    [(signal.SIGTERM, "1"), (signal.SIGINT, "1"), (signal.SIGTERM, "2")],
    ids=["sigterm", "sigint", "sigterm-2-workers"],
)
async def test_stop_signal_sequence(
    simulator_port: int, tmp_path: Path, signum: signal.Signals, workers: str
) -> None:
    port = free_port()
    env = gateway_env(simulator_port, SIM_KEY, SIM_SECRET, port, GATEWAY_WORKERS=workers,
                      GATEWAY_SHUTDOWN_DELAY="1.5", GATEWAY_DRAIN_TIMEOUT="5")  # fmt: skip
    log_path = tmp_path / "gateway.log"
    base = f"http://127.0.0.1:{port}"
    loop = asyncio.get_running_loop()
    with running(["gateway"], env, log_path, ports=(port,)) as process:
        fresh = aiohttp.TCPConnector(force_close=True)  # a new connection (any worker) each
        async with aiohttp.ClientSession(connector=fresh) as session:
            assert await _status(session, f"{base}/sites") == 200
            assert await _status(session, f"{base}/readyz") == 200
            process.send_signal(signum)
            signalled = loop.time()
            while await _status(session, f"{base}/readyz") != 503:
                assert loop.time() - signalled < 0.5, "/readyz still 200 after the signal"
                await asyncio.sleep(0.01)
            for _ in range(10):  # not ready, still serving: every worker, every time
                assert await _status(session, f"{base}/readyz") == 503
                async with session.get(f"{base}/sites/site-0002") as response:
                    assert response.status == 200
                    assert response.headers["Connection"] == "close"
                await asyncio.sleep(0.05)
            assert loop.time() - signalled < 1.5  # all of that inside the delay
            assert await _wait(process) == 0, "\n".join(
                line for line in log_path.read_text().splitlines() if "gateway.access" not in line
            )
            assert loop.time() - signalled >= 1.5
            with pytest.raises(aiohttp.ClientConnectionError):
                await _status(session, f"{base}/healthz")
    log = log_path.read_text()
    assert f'"signal":"{signum.name}"' in log and '"msg":"stopped"' in log
    assert "Traceback" not in log


async def test_requests_in_flight_when_listening_stops_are_finished(
    tmp_path: Path,
) -> None:
    sim_port, port = free_port(), free_port()
    sim_args = simulator_args(sim_port, SIM_KEY, SIM_SECRET, "--latency", "1.0")
    env = gateway_env(sim_port, SIM_KEY, SIM_SECRET, port, GATEWAY_SHUTDOWN_DELAY="0.3")
    with (
        running(sim_args, clean_env(), tmp_path / "sim.log", ports=(sim_port,)),
        running(["gateway"], env, tmp_path / "gw.log", ports=(port,)) as process,
    ):
        async with aiohttp.ClientSession() as session:
            process.send_signal(signal.SIGTERM)
            await until_logged(tmp_path / "gw.log", '"msg":"draining"')
            # Sent during the delay; its upstream call (1 s) outlasts the delay (0.3 s).
            response = await session.get(f"http://127.0.0.1:{port}/sites/site-0003")
            assert response.status == 200
            assert (await response.json())["id"] == "site-0003"
        assert await _wait(process) == 0


async def test_the_drain_timeout_bounds_the_wait_for_stuck_requests(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    sim_args = simulator_args(sim_port, SIM_KEY, SIM_SECRET, "--latency", "30")
    env = gateway_env(sim_port, SIM_KEY, SIM_SECRET, port, GATEWAY_SHUTDOWN_DELAY="0",
                      GATEWAY_DRAIN_TIMEOUT="0.5", GATEWAY_UPSTREAM_TIMEOUT="60")  # fmt: skip
    with (
        running(sim_args, clean_env(), tmp_path / "sim.log", ports=(sim_port,)),
        running(["gateway"], env, tmp_path / "gw.log", ports=(port,)) as process,
    ):
        async with aiohttp.ClientSession() as session:
            stuck = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/sites/site-0004"))
            await until_upstream_called(sim_port)
            started = asyncio.get_running_loop().time()
            process.send_signal(signal.SIGTERM)
            assert await _wait(process, 10) == 0
            assert asyncio.get_running_loop().time() - started < 5
            with pytest.raises(aiohttp.ClientError):
                await stuck


# --- SIGHUP -------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    temporary = path.with_suffix(".new")
    temporary.write_text(text)
    temporary.replace(path)  # as a secret mount updates: never a half-written file


async def test_sighup_reloads_tokens_without_dropping_a_connection(
    simulator_port: int, tmp_path: Path
) -> None:
    tokens, admin = tmp_path / "tokens", tmp_path / "admin"
    _write(tokens, "alpha:tok-alpha-1\n")
    _write(admin, "adm-one-1\n")
    port = free_port()
    env = gateway_env(simulator_port, SIM_KEY, SIM_SECRET, port,
                      GATEWAY_CLIENT_TOKENS_FILE=str(tokens),
                      GATEWAY_ADMIN_TOKEN_FILE=str(admin))  # fmt: skip
    log_path = tmp_path / "gateway.log"
    with running(["gateway"], env, log_path, ports=(port,)) as process:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def ask(token: str, path: str = "/sites/site-0001") -> int:
            writer.write(get(path, Authorization=f"Bearer {token}"))
            status, headers, _ = await read_response(reader)
            assert headers.get("connection") != "close"
            return status

        assert await ask("tok-alpha-1") == 200
        assert await ask("tok-beta-2") == 401

        _write(tokens, "# rotated\nbeta:tok-beta-2\n")
        _write(admin, "adm-two-2\n")
        process.send_signal(signal.SIGHUP)
        for _ in range(100):
            if await ask("tok-beta-2") == 200:
                break
            await asyncio.sleep(0.02)
        assert await ask("tok-beta-2") == 200  # on the very same connection
        assert await ask("tok-alpha-1") == 401
        async with aiohttp.ClientSession() as session:
            purge = f"http://127.0.0.1:{port}/admin/purge"
            new = await session.post(purge, json={}, headers={"Authorization": "Bearer adm-two-2"})
            old = await session.post(purge, json={}, headers={"Authorization": "Bearer adm-one-1"})
            assert (new.status, old.status) == (200, 401)

        _write(tokens, "this line is not name:token\n")  # a bad file keeps the old tokens
        process.send_signal(signal.SIGHUP)
        await until_logged(log_path, "token reload failed")
        _write(tokens, "# nobody\n")  # and so does one that would open the API
        process.send_signal(signal.SIGHUP)
        await until_logged(log_path, "token reload failed", count=2)
        assert await ask("tok-beta-2") == 200
        assert await ask("tok-alpha-1") == 401
        await close(writer)
        assert process.poll() is None
    lines = log_path.read_text().splitlines()
    failures = [line for line in lines if "token reload failed" in line]
    assert len(failures) == 2 and all('"level":"error"' in line for line in failures)
    assert "GATEWAY_CLIENT_TOKENS_FILE" in failures[0]
    text = "\n".join(lines)
    for secret in ("tok-alpha-1", "tok-beta-2", "adm-one-1", "adm-two-2"):
        assert secret not in text


async def test_a_sighup_while_starting_reads_the_tokens_once_the_handlers_are_in_place() -> None:
    """A rotation signalled after the tokens were read but before the loop's handler
    exists must not be lost (the supervisor test above met it under load)."""
    loop = asyncio.get_running_loop()
    saved = {signum: signal.getsignal(signum) for signum in (*STOP_SIGNALS, signal.SIGHUP)}
    reloads: list[int] = []
    early = EarlyStop()
    try:
        early.catch_hangup()
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: early.hangup)
        waiting = asyncio.create_task(until_stop_signal(Drain(), lambda: reloads.append(1), early))
        await eventually(lambda: reloads == [1])  # read again as soon as the handler is in
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: reloads == [1, 1])  # and on every later one
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    finally:
        for signum, handler in saved.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)


async def test_the_supervisor_forwards_sighup_to_every_worker(
    simulator_port: int, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    _write(tokens, "alpha:tok-alpha-1\n")
    port = free_port()
    env = gateway_env(simulator_port, SIM_KEY, SIM_SECRET, port, GATEWAY_WORKERS="3",
                      GATEWAY_CLIENT_TOKENS_FILE=str(tokens))  # fmt: skip
    log_path = tmp_path / "gateway.log"
    with running(["gateway"], env, log_path, ports=(port,)) as supervisor:
        await until_logged(log_path, "gateway listening", count=3)
        _write(tokens, "beta:tok-beta-2\n")
        supervisor.send_signal(signal.SIGHUP)
        await until_logged(log_path, "tokens reloaded", count=3)
        fresh = aiohttp.TCPConnector(force_close=True)  # spread over the workers
        async with aiohttp.ClientSession(connector=fresh) as session:
            url = f"http://127.0.0.1:{port}/sites/site-0001"
            for _ in range(30):
                assert (
                    await _status(session, url, headers={"Authorization": "Bearer tok-beta-2"})
                    == 200
                )
                assert (
                    await _status(session, url, headers={"Authorization": "Bearer tok-alpha-1"})
                    == 401
                )
        assert supervisor.poll() is None
        supervisor.send_signal(signal.SIGTERM)
        assert await _wait(supervisor) == 0


# --- rolling restart ----------------------------------------------------------------------


@pytest.mark.slow
async def test_rolling_restart_under_load_fails_no_request(
    tmp_path: Path, own_redis: RedisProcess, simulator_port: int
) -> None:
    ports = [free_port() for _ in range(3)]
    env = {
        port: gateway_env(simulator_port, SIM_KEY, SIM_SECRET, port, REDIS_URL=own_redis.url,
                          GATEWAY_SHUTDOWN_DELAY="1", GATEWAY_DRAIN_TIMEOUT="5",
                          GATEWAY_UPSTREAM_RPS="200", GATEWAY_LOG_LEVEL="WARNING")
        for port in ports
    }  # fmt: skip
    incarnation = itertools.count()
    processes = {
        port: start(["gateway"], env[port], tmp_path / f"gw-{next(incarnation)}.log")
        for port in ports
    }
    ready = dict.fromkeys(ports, False)
    served = dict.fromkeys(ports, 0)
    back = dict.fromkeys(ports, 0)  # served when its new incarnation became ready
    failures: list[str] = []
    done = asyncio.Event()

    async def poll_readiness(port: int) -> None:  # as the endpoints controller does
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not done.is_set():
                try:
                    ready[port] = await _status(session, f"http://127.0.0.1:{port}/readyz") == 200
                except (aiohttp.ClientError, TimeoutError):
                    ready[port] = False
                await asyncio.sleep(0.1)

    async def client(session: aiohttp.ClientSession, offset: int) -> None:
        for turn in itertools.count(offset):
            if done.is_set():
                return
            candidates = [port for port in ports if ready[port]]
            if not candidates:
                await asyncio.sleep(0.01)
                continue
            port = candidates[turn % len(candidates)]
            url = f"http://127.0.0.1:{port}/sites/{SITES[turn % len(SITES)]}"
            try:  # no retry: a failure here is a failed request for a real client
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        failures.append(f"{port}: {response.status}")
                        continue
            except (aiohttp.ClientError, TimeoutError) as error:
                failures.append(f"{port}: {error!r}")
                continue
            served[port] += 1

    async def until_ready(port: int) -> None:
        while not ready[port]:
            assert processes[port].poll() is None, "a gateway exited while starting"
            await asyncio.sleep(0.05)

    try:
        pollers = [asyncio.create_task(poll_readiness(port)) for port in ports]
        await asyncio.wait_for(asyncio.gather(*(until_ready(port) for port in ports)), 30)
        async with aiohttp.ClientSession() as session:
            clients = [asyncio.create_task(client(session, offset)) for offset in range(6)]
            await asyncio.sleep(0.5)
            for port in ports:
                before = sum(served.values())
                processes[port].send_signal(signal.SIGTERM)
                assert await _wait(processes[port]) == 0
                processes[port] = start(
                    ["gateway"], env[port], tmp_path / f"gw-{next(incarnation)}.log"
                )
                await asyncio.wait_for(until_ready(port), 30)
                assert sum(served.values()) > before  # the others kept serving meanwhile
                back[port] = served[port]
            await asyncio.sleep(0.5)
            done.set()
            await asyncio.gather(*clients, *pollers)
    finally:
        done.set()
        for process in processes.values():
            stop(process)
    total = sum(served.values())
    print(f"rolling restart: {total} requests served, {len(failures)} failed ({served})")
    assert failures == []
    assert total > 300
    assert all(served[port] > back[port] for port in ports)  # new incarnations serve too
