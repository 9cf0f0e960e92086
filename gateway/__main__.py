"""`python -m gateway [--demo]`: validate settings, serve, drain on SIGTERM.

Start-up either serves fully configured or exits 2 with one line naming the bad setting.
`--demo` needs no settings: it starts the ChargePilot simulator on a free loopback port in
the same event loop and points the gateway at it (`--demo-accounts 2`: two simulators, an
EU and a US account served as one fleet: `demo.py`); the simulator changes a site every
`DEMO_CHANGE_INTERVAL` seconds, so `/changes` shows events within a minute.  With
`GATEWAY_WORKERS > 1` this process becomes a supervisor (`supervisor.py`).  A worker (or
the single process) raises its file limit, serves through the hardened edge server
(`server.py`), re-reads tokens on SIGHUP and drains on SIGTERM/SIGINT (`lifecycle.py`),
then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence

from aiohttp import web

from . import __version__, logs
from .demo import MAX_DEMO_ACCOUNTS, start_account_simulators
from .lifecycle import DRAIN, ApplyTokens, EarlyStop, TokenReloader, until_stop_signal
from .middleware import AUTH, Auth
from .server import EdgeLimits, EdgeRunner, connection_cap, raise_file_limit
from .settings import Secret, Settings, SettingsError
from .settings_specs import help_text
from .supervisor import WORKER_ENV, cannot_listen, supervise

log = logging.getLogger("gateway")
DEMO_CHANGE_INTERVAL = 10.0


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
    parser.add_argument(
        "--demo-accounts",
        type=int,
        choices=range(1, MAX_DEMO_ACCOUNTS + 1),
        default=1,
        metavar="N",
        help="with --demo: 2 serves two simulated accounts (an EU and a US host) as one fleet",
    )
    args = parser.parse_args(argv)
    if args.demo_accounts != 1 and not args.demo:
        parser.error("--demo-accounts needs --demo")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    # Until the loop's handlers are in place a SIGHUP (a token rotation) must not kill a
    # starting process, nor be lost after the tokens were read: it is remembered.
    early = EarlyStop()
    early.catch_hangup()
    args = parse_args(argv)
    try:
        settings = Settings.from_env(os.environ, demo=args.demo)
    except SettingsError as error:
        print(f"chargepilot-gateway: invalid setting {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, secrets=_secrets(settings))
    if settings.workers > 1 and not settings.demo and WORKER_ENV not in os.environ:
        return supervise(settings)
    early.install()
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(serve(settings, early, demo_accounts=args.demo_accounts))
    return asyncio.run(serve(settings, early, demo_accounts=args.demo_accounts))


def _secrets(settings: Settings) -> list[str]:
    """Every string the log redactor masks."""
    found = [settings.api_key.reveal(), settings.api_secret.reveal()]
    for account in settings.accounts_file:
        found += [account.api_key.reveal(), account.api_secret.reveal()]
    found += [token.reveal() for token in settings.client_tokens.values()]
    if settings.admin_token is not None:
        found.append(settings.admin_token.reveal())
    return found


async def serve(
    settings: Settings, early: EarlyStop | None = None, *, demo_accounts: int = 1
) -> int:
    from .app import create_app, create_metrics_app
    from .app_keys import METRICS

    soft, hard = raise_file_limit()
    limits = EdgeLimits(
        header_timeout=settings.header_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        max_connections=connection_cap(settings.max_connections, soft),
    )
    log.info(
        "file limit",
        extra={"soft_limit": soft, "hard_limit": hard, "max_connections": limits.max_connections},
    )
    runners: list[web.AppRunner] = []
    try:
        if settings.demo and demo_accounts > 1:
            settings = await start_account_simulators(settings, runners)
        elif settings.demo:
            settings = await _start_simulator(settings, runners)
        try:
            app = create_app(settings)
        except SettingsError as error:
            print(f"chargepilot-gateway: invalid setting {error}", file=sys.stderr)
            return 2
        runner = EdgeRunner(
            app,
            limits=limits,
            metrics=app[METRICS],
            access_log=None,
            shutdown_timeout=settings.drain_timeout,
        )
        await runner.setup()
        runners.append(runner)
        reuse = settings.workers > 1 or None
        try:
            await web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse).start()
        except OSError as error:
            return cannot_listen(settings, error)
        listen = f"http://{settings.host}:{_bound_port(runner)}"
        if settings.metrics_port is not None:
            metrics_runner = EdgeRunner(create_metrics_app(app), limits=limits, access_log=None)
            await metrics_runner.setup()
            runners.insert(0, metrics_runner)  # cleaned up last: scrapes see the drain
            await web.TCPSite(
                metrics_runner, settings.host, settings.metrics_port, reuse_port=reuse
            ).start()
        log.info("gateway listening", extra={"listen": listen, "url": settings.base_url})
        if settings.demo:
            local = listen.replace("0.0.0.0", "localhost")
            print(
                f"chargepilot-gateway demo: try  curl {local}/sites\n"
                f"  and watch the sites change:  curl -N -H 'Accept: text/event-stream' "
                f"{local}/changes",
                file=sys.stderr,
                flush=True,
            )
        reload_tokens = TokenReloader(
            os.environ,
            _token_applier(app[AUTH], settings),
            had_clients=bool(settings.client_tokens),
        )
        name = await until_stop_signal(app[DRAIN], reload_tokens, early)
        delay = _shutdown_delay(settings, os.environ)
        log.info("draining", extra={"signal": name, "delay": delay})
        await asyncio.sleep(delay)
        log.info("stopping: no new connections, finishing requests in flight")
    finally:
        # Gateway first (stop accepting, finish in-flight requests, close Redis and
        # upstream connections), then the demo simulator it may still be calling.
        for started in reversed(runners):
            await started.cleanup()
    log.info("stopped")
    return 0


def _shutdown_delay(settings: Settings, env: Mapping[str, str]) -> float:
    """The demo has no load balancer to wait for, unless the delay is set explicitly."""
    if settings.demo and "GATEWAY_SHUTDOWN_DELAY" not in env:
        return 0.0
    return settings.shutdown_delay


def _token_applier(auth: Auth, settings: Settings) -> ApplyTokens:
    masked = set(_secrets(settings))

    def apply(clients: Mapping[str, Secret], admin: Secret | None) -> None:
        auth.replace(clients, admin)
        fresh: Iterable[Secret] = [*clients.values(), *([admin] if admin else [])]
        masked.update(secret.reveal() for secret in fresh)  # old ones stay masked too
        logs.configure(settings.log_level, secrets=masked)

    return apply


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    return 0


async def _start_simulator(settings: Settings, runners: list[web.AppRunner]) -> Settings:
    from .simulator import SimulatorConfig, create_simulator_app

    config = SimulatorConfig(
        latency=0.05, latency_jitter=0.05, change_interval=DEMO_CHANGE_INTERVAL
    )
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


if __name__ == "__main__":
    sys.exit(main())
