"""HTTP load for the comparison: wrk when it is installed, a Python load generator otherwise.

Both keep `connections` keep-alive connections busy for `seconds` against one URL, send no
`Accept-Encoding` unless a caller passes one in `headers` (so by default every server sends
the same identity bytes), and report the same `Load`: completed requests, errors (non-2xx/3xx
answers and socket errors), req/s, p50 and p99 latency.  wrk runs with one thread (`-t1`)
and `--latency`; the fallback is this file run as its own process (so it can be pinned like
wrk):

    python bench/loadgen.py URL --connections 64 --seconds 5     # prints one JSON object
    python bench/loadgen.py URL --header 'Accept-Encoding: gzip'  # extra request headers

The fallback is much slower than wrk (one Python process drives the load), so its req/s
are a floor on the server's; they are only meant for smoke runs on machines without wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from common import percentile_ms

THIS = Path(__file__).resolve()
REQUEST_TIMEOUT = 10.0
SLACK = 30.0  # on top of the run's own duration before a load process counts as hung
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_LATENCY = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclasses.dataclass(frozen=True, slots=True)
class Load:
    tool: str  # "wrk" or "python"
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float


def parse_wrk(text: str) -> Load:
    """A `Load` from the output of `wrk --latency`; raises ValueError if it is not there."""
    rps, total = _RPS.search(text), _TOTAL.search(text)
    latency = {p: float(v) * _MS[unit] for p, v, unit in _LATENCY.findall(text)}
    if rps is None or total is None or set(latency) != {"50", "99"}:
        raise ValueError(f"not the output of wrk --latency: {text!r}")
    non_2xx = _NON_2XX.search(text)
    sockets = _SOCKET.search(text)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    return Load(
        tool="wrk",
        requests=int(total.group(1)),
        errors=errors,
        seconds=round(float(total.group(2)) * _MS[total.group(3)] / 1000, 3),
        rps=float(rps.group(1)),
        p50_ms=round(latency["50"], 3),
        p99_ms=round(latency["99"], 3),
    )


def _run(command: list[str], seconds: float) -> str:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + SLACK, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done.stdout


def run_seconds(tool: str, seconds: float) -> float:
    """How long a run asked for `seconds` lasts: wrk takes whole seconds only (at least 1)."""
    return float(max(1, round(seconds))) if tool == "wrk" else seconds


def run_load(
    url: str,
    *,
    tool: str,
    connections: int,
    seconds: float,
    cpus: str | None,
    headers: dict[str, str] | None = None,
) -> Load:
    """One load run of `run_seconds(tool, seconds)` with `tool` ("wrk" or "python"),
    pinned to `cpus`, every request carrying `headers` too."""
    pin = ["taskset", "-c", cpus] if cpus is not None else []
    seconds = run_seconds(tool, seconds)
    extra = [f"{name}: {value}" for name, value in (headers or {}).items()]
    if tool == "wrk":
        options = [f"-H{header}" for header in extra]
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", *options, url]
        return parse_wrk(_run([*pin, *command], seconds))
    command = [sys.executable, str(THIS), url, f"--connections={connections}",
               f"--seconds={seconds:g}", *(f"--header={header}" for header in extra)]  # fmt: skip
    return Load(**json.loads(_run([*pin, *command], seconds)))


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` -> (name, value); ValueError when there is no name."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"a header is 'Name: value', got {text!r}")
    return name.strip(), value.strip()


async def drive(
    url: str, connections: int, seconds: float, headers: dict[str, str] | None = None
) -> Load:
    """The Python fallback: `connections` workers in a loop until `seconds` have passed."""
    latencies: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    started = time.perf_counter()
    stop_at = started + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    failed = response.status >= 400
            except (aiohttp.ClientError, TimeoutError):
                failed = True
            latencies.append(time.perf_counter() - sent)
            errors += failed

    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Load(
        tool="python",
        requests=len(latencies),
        errors=errors,
        seconds=round(elapsed, 3),
        rps=round(len(latencies) / elapsed, 1),
        p50_ms=percentile_ms(latencies, 0.50),
        p99_ms=percentile_ms(latencies, 0.99),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.seconds <= 0:
        parser.error("--connections must be >= 1 and --seconds > 0")
    try:
        headers = dict(parse_header(text) for text in args.header)
    except ValueError as error:
        parser.error(str(error))
    runner_options: dict[str, Any] = {}
    with contextlib.suppress(ImportError):
        import uvloop

        runner_options["loop_factory"] = uvloop.new_event_loop
    with asyncio.Runner(**runner_options) as runner:
        load = runner.run(drive(args.url, args.connections, args.seconds, headers))
    print(json.dumps(dataclasses.asdict(load)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
