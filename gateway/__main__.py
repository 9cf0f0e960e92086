"""`python -m gateway [--demo]`: validate settings, serve, drain on SIGTERM.

Start-up either serves fully configured or exits 2 with one line naming the bad setting.
`--demo` needs no settings: it starts the ChargePilot simulator on a free loopback port in
the same event loop and points the gateway at it.  With `GATEWAY_WORKERS > 1` this process
becomes a supervisor: it prepares the shared Prometheus multiprocess directory, starts the
workers (each binds the same port with SO_REUSEPORT), forwards SIGTERM, and exits 0 when
they have drained.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from . import __version__, logs
from .settings import Secret, Settings, SettingsError
from .settings_specs import help_text

log = logging.getLogger("gateway")
SHUTDOWN_TIMEOUT = 25.0
WORKER_ENV = "GATEWAY_WORKER_PROCESS"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chargepilot-gateway",
        description=__doc__.split("\n")[0],
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve against the built-in ChargePilot simulator; no settings needed",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env(os.environ, demo=args.demo)
    except SettingsError as error:
        print(f"chargepilot-gateway: invalid setting {error}", file=sys.stderr)
        return 2
    secrets = [
        settings.api_key.reveal(),
        settings.api_secret.reveal(),
        *(token.reveal() for token in settings.client_tokens.values()),
    ]
    if settings.admin_token is not None:
        secrets.append(settings.admin_token.reveal())
    logs.configure(settings.log_level, secrets=secrets)
    if settings.workers > 1 and not settings.demo and WORKER_ENV not in os.environ:
        return supervise(settings)
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(serve(settings))
    return asyncio.run(serve(settings))


async def serve(settings: Settings) -> int:
    from .app import create_app, create_metrics_app

    runners: list[web.AppRunner] = []
    try:
        if settings.demo:
            settings = await _start_simulator(settings, runners)
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        runners.append(runner)
        reuse = settings.workers > 1 or None
        try:
            await web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse).start()
        except OSError as error:
            return _cannot_listen(settings, error)
        listen = f"http://{settings.host}:{_bound_port(runner)}"
        if settings.metrics_port is not None:
            metrics_runner = web.AppRunner(create_metrics_app(app), access_log=None)
            await metrics_runner.setup()
            runners.insert(0, metrics_runner)
            await web.TCPSite(
                metrics_runner, settings.host, settings.metrics_port, reuse_port=reuse
            ).start()
        log.info("gateway listening", extra={"listen": listen, "url": settings.base_url})
        if settings.demo:
            print(
                f"chargepilot-gateway demo: try  curl {listen.replace('0.0.0.0', 'localhost')}"
                "/sites",
                file=sys.stderr,
                flush=True,
            )
        await _until_signalled()
        log.info("draining", extra={"signal": "SIGTERM"})
    finally:
        # Gateway first (stop accepting, finish in-flight requests, close Redis and
        # upstream connections), then the demo simulator it may still be calling.
        for runner in reversed(runners):
            await runner.cleanup()
    return 0


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _cannot_listen(settings: Settings, error: OSError) -> int:
    """A taken port is a settings problem: one line naming the variable, exit 2."""
    print(
        f"chargepilot-gateway: GATEWAY_PORT: cannot listen on {settings.host}:{settings.port}: "
        f"{error.strerror}",
        file=sys.stderr,
    )
    return 2


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    return 0


async def _start_simulator(settings: Settings, runners: list[web.AppRunner]) -> Settings:
    from .simulator import SimulatorConfig, create_simulator_app

    config = SimulatorConfig(latency=0.05, latency_jitter=0.05)
    runner = web.AppRunner(create_simulator_app(config), access_log=None)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base_url = f"http://127.0.0.1:{_bound_port(runner)}/rest/v1"
    log.info("demo simulator started", extra={"url": base_url})
    return dataclasses.replace(
        settings,
        base_url=base_url,
        api_key=Secret(config.api_key),
        api_secret=Secret(config.api_secret),
        sign_path=config.sign_path,
    )


def supervise(settings: Settings) -> int:
    """Run `settings.workers` worker processes on one port.  SIGTERM/SIGINT are forwarded
    and the supervisor exits 0 once all have drained; a worker that dies on its own takes
    the others down and the supervisor exits 1, so the orchestrator restarts the whole
    (a half-dead pod must not keep passing its probes)."""
    env = dict(os.environ, **{WORKER_ENV: "1"})
    owned_dir = None
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        # Files of a previous run would be added to this run's counters.
        for stale in Path(env["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
            stale.unlink()
    else:
        owned_dir = tempfile.TemporaryDirectory(prefix="gateway-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = owned_dir.name
    try:  # fail here with one line, not in N workers, when the port is taken
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind((settings.host, settings.port))
    except OSError as error:
        return _cannot_listen(settings, error)
    workers = [
        subprocess.Popen([sys.executable, "-m", "gateway"], env=env)
        for _ in range(settings.workers)
    ]
    log.info("supervisor started", extra={"workers": len(workers)})
    stopping = False

    def stop(signum: int, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = False
    while any(worker.poll() is None for worker in workers):
        if not stopping and any(worker.poll() is not None for worker in workers):
            log.error("a worker exited; stopping the others")
            failed = True
            stop(signal.SIGTERM)
        time.sleep(0.2)
    if owned_dir is not None:
        owned_dir.cleanup()
    ok = not failed and all(worker.returncode == 0 for worker in workers)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
