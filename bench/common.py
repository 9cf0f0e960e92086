"""What the benchmarks share: loopback addresses and free ports, serving an app on one, the
simulator's credentials, and percentiles.  Imported by the scripts beside it
(`python bench/<script>.py` puts this folder on sys.path).  Nothing here imports the
gateway, so a benchmark that drives it only as a process (`compare.py`) stays independent
of its internals; the in-process scripts take their settings from `inprocess.py`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

HOST = "127.0.0.1"
API_KEY = "bench-key"
API_SECRET = "bench-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the server is not listening on a TCP port")


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port for the block; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, 0).start()
        yield f"http://{HOST}:{bound_port(runner)}"
    finally:
        await runner.cleanup()


async def serve_until_signalled(
    app: web.Application, port: int, *, reuse_port: bool = False
) -> None:
    """Serve `app` on HOST:`port` until SIGTERM or SIGINT (a benchmark's own server process)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, port, reuse_port=reuse_port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a server process's coroutine on uvloop when it is installed, as the gateway does."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The `fraction` percentile (nearest rank) of sorted values, unrounded (0 when empty)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def percentile_ms(sorted_values: list[float], fraction: float) -> float:
    """The `fraction` percentile of sorted seconds, in milliseconds (0 when empty)."""
    return round(percentile(sorted_values, fraction) * 1000, 3)
