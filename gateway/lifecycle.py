"""A worker's lifecycle after start: the drain on SIGTERM/SIGINT, token reloads on SIGHUP,
and background tasks stopped within a bound (`stop_tasks`).

SIGTERM (or SIGINT) sets `Drain` at once: `/readyz` answers 503 and every response closes
its connection, while requests are still served for `GATEWAY_SHUTDOWN_DELAY`, so load
balancers take the replica out before it stops listening.  The caller then stops the
runner, which stops accepting, lets in-flight requests finish (up to
`GATEWAY_DRAIN_TIMEOUT`) and runs the app's cleanup (Redis, upstream connections).  More
signals during the drain change nothing.

SIGHUP re-reads the client and admin tokens (their `*_FILE`s) and swaps them in without
touching a connection.  A file that cannot be read or parsed, or one that would leave no
client token where there were some (which would open the data endpoints), logs one error
line and keeps the previous tokens.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from .settings import Secret, SettingsError, read_tokens

log = logging.getLogger("gateway")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_WAIT = 2.0  # seconds background tasks get to end once cancelled (they take ms)


class Drain:
    """Set once, when the process starts shutting down."""

    def __init__(self) -> None:
        self.active = False

    def begin(self) -> None:
        self.active = True


DRAIN = web.AppKey("drain", Drain)
ApplyTokens = Callable[[Mapping[str, Secret], Secret | None], None]


class TokenReloader:
    """Re-reads the tokens from `env` (SIGHUP) and hands them to `apply`."""

    def __init__(self, env: Mapping[str, str], apply: ApplyTokens, *, had_clients: bool) -> None:
        self._env = env
        self._apply = apply
        self._had_clients = had_clients

    def __call__(self) -> bool:
        try:
            clients, admin = read_tokens(self._env)
            if self._had_clients and not clients:
                raise SettingsError(
                    "GATEWAY_CLIENT_TOKENS_FILE", "has no tokens (that would open the API)"
                )
        except SettingsError as error:
            log.error("token reload failed; keeping the previous tokens: %s", error)
            return False
        self._apply(clients, admin)
        self._had_clients = bool(clients)
        log.info("tokens reloaded", extra={"count": len(clients)})
        return True


class EarlyStop:
    """A signal that arrives while the process is still starting (before the event loop's
    handlers are in place) is remembered, not fatal.  A stop: an orchestrator may stop a
    pod a moment after starting it, and the process must still drain and exit 0.  A SIGHUP:
    the tokens may have been rotated after this process read them, so they are read again
    once the handlers are in place (ignoring it would keep the old tokens)."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.hangup = False

    def catch_hangup(self) -> None:
        signal.signal(signal.SIGHUP, self._hung_up)

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._caught)

    def _caught(self, signum: int, frame: object) -> None:
        self.name = signal.Signals(signum).name

    def _hung_up(self, signum: int, frame: object) -> None:
        self.hangup = True


async def until_stop_signal(
    drain: Drain, on_hangup: Callable[[], object], early: EarlyStop | None = None
) -> str:
    """Wait for SIGTERM or SIGINT, setting `drain` in the signal handler itself; SIGHUP
    calls `on_hangup` meanwhile (and after).  Returns the signal's name."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[str] = loop.create_future()

    def stop(signum: signal.Signals) -> None:
        drain.begin()
        if not stopped.done():
            stopped.set_result(signum.name)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    if early is not None and early.hangup:
        on_hangup()
    if early is not None and early.name is not None:
        stop(signal.Signals[early.name])
    return await stopped


async def stop_tasks(
    tasks: Collection[asyncio.Task[Any]], what: str, *, within: float = STOP_WAIT
) -> None:
    """Cancel `tasks` and wait up to `within` seconds for them to end.  One that outlives
    it (it swallowed its cancellation: a bug, logged with its name) is left behind rather
    than hanging the shutdown, which must finish within the pod's grace period."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=within)
    if pending:
        names = ", ".join(sorted(task.get_name() for task in pending))
        log.error("%s: tasks did not stop within %g s: %s", what, within, names)
