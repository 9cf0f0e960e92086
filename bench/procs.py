"""The processes a benchmark starts: pinned to CPUs with `taskset`, their stderr in a log
file, and stopped by pid whatever happens.

`Processes` is the one registry.  Every child goes through `start`; `stop` ends one (SIGTERM,
then SIGKILL after a grace period) together with the children it had forked (gateway
workers, nginx workers), each by its own pid; `close` stops whatever is left, newest first.
Used as a context manager it also runs on Ctrl-C, SIGTERM (see `stop_on_signals`) and
exceptions.  Nothing is ever stopped by name.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

HOST = "127.0.0.1"
STOP_GRACE = 15.0
POLL = 0.02


@dataclass(frozen=True, slots=True)
class Cpus:
    """Where to pin: the server of a single-process run, and its load generator."""

    server: str | None
    client: str | None

    @classmethod
    def detect(cls) -> Cpus:
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(str(available[0]), str(available[1]))

    def describe(self) -> str:
        if self.server is None:
            return "no pinning (fewer than 2 CPUs or no taskset)"
        return (
            f"single-process servers on CPU {self.server}, the load generator on CPU "
            f"{self.client}; two-process servers and their load generator unpinned"
        )


def stop_on_signals() -> None:
    """SIGTERM becomes SystemExit and SIGINT KeyboardInterrupt (even where the shell that
    started us ignores SIGINT), so `finally` blocks and `Processes.close` run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (Linux: /proc/<pid>/task/*/children)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of `pid` in KiB, from /proc/<pid>/status."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far (/proc/<pid>/stat), in seconds: unlike
    wall time, it does not grow when other processes compete for the CPUs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by `pids` and their children (gateway or nginx workers)."""
    total = 0.0
    for pid in pids:
        for member in [pid, *children_of(pid)]:
            with contextlib.suppress(OSError):
                total += cpu_seconds(member)
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs have been busy since boot (/proc/stat: user, nice, system,
    irq, softirq, steal), to tell how much of a measurement's CPU others took."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have been waited for (the load
    generator's runs, once each has ended)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


class Processes:
    """Children of one benchmark run; logs go to `workdir/<name>.log`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def start(
        self,
        name: str,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        cpus: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `command` (under `taskset -c cpus` when given; taskset execs it, so the pid
        is the command's own).  Its stdout and stderr go to `log_path(name)`."""
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]
        with self.log_path(name).open("ab") as log:
            process = subprocess.Popen(
                command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
            )
        self._running.append((name, process))
        return process

    def wait_port(self, process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
        """Until something listens on `port`; fails early if `process` exits."""
        deadline = time.monotonic() + timeout
        while not port_open(port):
            if process.poll() is not None:
                raise RuntimeError(f"{self._name(process)} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self._name(process)} did not listen on {port} in {timeout}s")
            time.sleep(POLL)

    def stop(self, process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
        """SIGTERM `process`, SIGKILL it after `grace`; then the same for any child it
        forked that outlived it (same pid, same command line as before)."""
        children = [(pid, _cmdline(pid)) for pid in children_of(process.pid)]
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid, cmdline in children:
            _stop_pid(pid, cmdline, grace)
        self._running = [(n, p) for n, p in self._running if p is not process]

    def stop_named(self, name: str) -> None:
        """Stop every running child started under `name`."""
        for child_name, process in list(self._running):
            if child_name == name:
                self.stop(process)

    def close(self) -> None:
        for _, process in reversed(list(self._running)):
            self.stop(process)

    def _name(self, process: subprocess.Popen[bytes]) -> str:
        return next((n for n, p in self._running if p is process), str(process.pid))


def _stop_pid(pid: int, cmdline: bytes, grace: float) -> None:
    """Stop a process we did not spawn directly (a worker), by pid, if it is still the one
    we saw (its command line unchanged: the pid was not reused)."""
    if not cmdline or _cmdline(pid) != cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _cmdline(pid) == cmdline and time.monotonic() < deadline:
        time.sleep(POLL)
    if _cmdline(pid) == cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
