"""`GATEWAY_WORKERS > 1`: one supervisor process running the workers on one port.

The supervisor prepares the shared Prometheus multiprocess directory, checks the port once
(one line naming `GATEWAY_PORT` instead of N workers failing), starts the workers (each
binds the port with SO_REUSEPORT) and forwards SIGTERM, SIGINT and SIGHUP to them.  It
exits 0 once all have drained after a SIGTERM/SIGINT; a worker that dies on its own takes
the others down and the supervisor exits 1, so the orchestrator restarts the whole (a
half-dead pod must not keep passing its probes).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .settings import Settings

log = logging.getLogger("gateway")
WORKER_ENV = "GATEWAY_WORKER_PROCESS"
POLL_INTERVAL = 0.2


def cannot_listen(settings: Settings, error: OSError) -> int:
    """A taken port is a settings problem: one line naming the variable, exit 2."""
    print(
        f"chargepilot-gateway: GATEWAY_PORT: cannot listen on {settings.host}:{settings.port}: "
        f"{error.strerror}",
        file=sys.stderr,
    )
    return 2


def supervise(settings: Settings) -> int:
    """Run `settings.workers` worker processes (`python -m gateway`) until they exit."""
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
        return cannot_listen(settings, error)
    # Workers inherit an ignored SIGHUP across exec (a handler would become the default,
    # fatal, disposition): one while they import cannot kill them, and they read the tokens
    # only after their own handler is in place.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    workers = [
        subprocess.Popen([sys.executable, "-m", "gateway"], env=env)
        for _ in range(settings.workers)
    ]
    log.info("supervisor started", extra={"workers": len(workers)})
    stopping = False

    def forward(signum: int, _frame: object = None) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    def stop(signum: int, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        forward(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward)
    failed = False
    while any(worker.poll() is None for worker in workers):
        if not stopping and any(worker.poll() is not None for worker in workers):
            log.error("a worker exited; stopping the others")
            failed = True
            stop(signal.SIGTERM)
        time.sleep(POLL_INTERVAL)
    if owned_dir is not None:
        owned_dir.cleanup()
    # A worker still starting (importing, before its handlers exist) dies of the stop signal
    # we forwarded: it served nothing yet, so that is a clean stop too.
    clean = {0} | ({-signal.SIGTERM, -signal.SIGINT} if stopping and not failed else set())
    ok = not failed and all(worker.returncode in clean for worker in workers)
    return 0 if ok else 1
