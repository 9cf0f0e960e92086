"""The simulator's aiohttp application: ChargePilot's data routes, knobs, call log, codings.

Owns everything HTTP about the fake upstream's data: ``GET /rest/v1/sites``,
``GET /rest/v1/sites/{id}`` and ``GET /rest/v1/charging-events/site/{id}`` behind HMAC
signature checks (``auth.py``) over the raw request target, the runtime knobs in
``SimulatorConfig`` that tests flip to inject latency, errors and rate limits, the call log,
and compression of answers (``compression.py``). Ids come from the one raw path segment
(``paths.py``), so ``%2F``, ``%25`` and ``%2E%2E`` reach the lookup exactly as sent. The
unsigned ``/_sim/*`` control routes and the change ticker live in ``control.py``.

Every data request is decided on arrival (fail mode, auth, rate limit, error rate, then the
endpoint: lookup, query validation), logged at once with that outcome, then answered after
the configured latency. Logging on arrival means ``count()`` already includes a request the
gateway gave up on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import hdrs, web

from gateway.simulator import events
from gateway.simulator.auth import check_signature
from gateway.simulator.compression import compress, negotiate
from gateway.simulator.control import add_control_routes
from gateway.simulator.data import Site, demo_fleet
from gateway.simulator.paths import MalformedTarget, segment_id, split_target
from gateway.simulator.state import (
    BASE_PATH,
    HANG_SECONDS,
    NO_ANSWER,
    SIM_STATE,
    Call,
    SimulatorConfig,
    SimulatorState,
)

SITES_PREFIX = f"{BASE_PATH}/sites/"
EVENTS_PREFIX = f"{BASE_PATH}/charging-events/site/"
# Above this many bytes a br/zstd body is compressed off the event loop.
OFF_LOOP_BYTES = 64 * 1024

Endpoint = Callable[[SimulatorState, web.Request], web.Response]


def _encode(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:
        # orjson stops at 254 levels; a real API happily sends deeper fuse trees, so fall back
        # to the stdlib encoder with room for them (simulator only, never on a hot path).
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20000))
        try:
            return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        finally:
            sys.setrecursionlimit(limit)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_encode(body), content_type="application/json", headers=headers
    )


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(int(seconds)) if float(seconds).is_integer() else str(seconds)}


def _forced(state: SimulatorState, mode: str) -> web.Response:
    """The response a ``fail_mode`` imposes on every data request."""
    retry_after = _retry_after(state.config.retry_after)
    if mode == "non_json":
        return web.Response(status=200, text="<html>oops</html>", content_type="text/html")
    if mode == "wrong_shape":
        return json_response(200, {"unexpected": True})
    if mode == "429":
        return json_response(429, {"error": "too many requests"}, retry_after)
    if mode == "503_retry_after":
        return json_response(503, {"error": "unavailable"}, retry_after)
    if mode == "401":
        return json_response(401, {"error": "unauthorized"})
    return json_response(int(mode), {"error": f"simulated {mode}"})


def _over_rate_limit(state: SimulatorState, now: float) -> bool:
    rps = state.config.rate_limit_rps
    if rps is None:
        return False
    # Below 1 rps a one-second window would admit nothing; widen it to hold one call.
    window = max(1.0, 1.0 / rps)
    budget = max(1, int(rps * window))
    while state.accepted and state.accepted[0] <= now - window:
        state.accepted.popleft()
    if len(state.accepted) >= budget:
        return True
    state.accepted.append(now)
    return False


def _decide(
    state: SimulatorState, request: web.Request, body: str, endpoint: Endpoint
) -> web.Response | None:
    """The answer to a data request, or None for "hang"; decided on arrival."""
    config = state.config
    if config.fail_mode == "hang":
        return None
    if config.fail_mode is not None:
        return _forced(state, config.fail_mode)
    reason = check_signature(
        config, request.method, request.raw_path, request.headers, body, time.time()
    )
    if reason is not None:
        return json_response(401, {"error": reason})
    if _over_rate_limit(state, time.monotonic()):
        return json_response(429, {"error": "rate limit exceeded"}, _retry_after(1))
    if config.error_rate and state.rng.random() < config.error_rate:
        return json_response(500, {"error": "simulated internal error"})
    return endpoint(state, request)


def _site_list(state: SimulatorState, request: web.Request) -> web.Response:
    sites = list(state.sites.values())
    envelope = state.config.envelope
    return json_response(200, sites if envelope == "bare" else {envelope: sites})


def _site_in(state: SimulatorState, request: web.Request, prefix: str) -> Site | web.Response:
    """The site named by the raw segment after ``prefix``, or the error answer."""
    try:
        site_id = segment_id(request.raw_path, prefix)
    except MalformedTarget as exc:
        return json_response(400, {"error": str(exc)})
    site = None if site_id is None else state.sites.get(site_id)
    return json_response(404, {"error": "not found"}) if site is None else site


def _one_site(state: SimulatorState, request: web.Request) -> web.Response:
    site = _site_in(state, request, SITES_PREFIX)
    return site if isinstance(site, web.Response) else json_response(200, site)


def _charging_events(state: SimulatorState, request: web.Request) -> web.Response:
    site = _site_in(state, request, EVENTS_PREFIX)
    if isinstance(site, web.Response):
        return site
    try:
        query = events.parse_query(split_target(request.raw_path)[1])
    except ValueError as exc:
        return json_response(400, {"error": str(exc)})
    return json_response(200, events.answer(state.events(site), query))


async def _sleep_unless_closing(state: SimulatorState, seconds: float) -> None:
    """Sleep, but wake when the app shuts down so a hung handler can't stall server close."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.closing.wait(), timeout=seconds)


async def _compress(state: SimulatorState, request: web.Request, response: web.Response) -> None:
    if not state.config.compress:
        return
    response.headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
    coding = negotiate(request.headers.get(hdrs.ACCEPT_ENCODING))
    body = response.body
    if coding is None or not isinstance(body, bytes) or not body:
        return
    if coding == "gzip":
        response.enable_compression(web.ContentCoding.gzip)
        return
    if len(body) > OFF_LOOP_BYTES:
        body = await asyncio.get_running_loop().run_in_executor(None, compress, body, coding)
    else:
        body = compress(body, coding)
    response.body = body
    response.headers[hdrs.CONTENT_ENCODING] = coding


async def _serve(request: web.Request, endpoint: Endpoint) -> web.Response:
    state = request.app[SIM_STATE]
    arrival, wall = time.monotonic(), time.time()
    body = await request.text()
    response = _decide(state, request, body, endpoint)
    headers = request.headers
    state.calls.append(
        Call(
            arrival,
            wall,
            request.method,
            request.raw_path,
            NO_ANSWER if response is None else response.status,
            api_key=headers.get("x-api-key"),
            traceparent=headers.get("traceparent"),
            accept_encoding=headers.get(hdrs.ACCEPT_ENCODING),
        )
    )
    if response is None:
        await _sleep_unless_closing(state, HANG_SECONDS)
        return json_response(503, {"error": "simulator shutting down"})
    config = state.config
    jitter = state.rng.uniform(0, config.latency_jitter) if config.latency_jitter else 0.0
    await _compress(state, request, response)
    await _sleep_unless_closing(state, config.latency + jitter)
    return response


async def sites_handler(request: web.Request) -> web.Response:
    return await _serve(request, _site_list)


async def site_handler(request: web.Request) -> web.Response:
    return await _serve(request, _one_site)


async def charging_events_handler(request: web.Request) -> web.Response:
    return await _serve(request, _charging_events)


async def _wake_sleepers(app: web.Application) -> None:
    app[SIM_STATE].closing.set()


def create_simulator_app(
    config: SimulatorConfig | None = None, *, sites: list[Site] | None = None
) -> web.Application:
    """A fresh simulator app serving ``sites`` (default: ``demo_fleet()``)."""
    fleet = demo_fleet() if sites is None else sites
    app = web.Application()
    app[SIM_STATE] = SimulatorState(
        config=config or SimulatorConfig(), sites={site["id"]: site for site in fleet}
    )
    app.on_shutdown.append(_wake_sleepers)
    app.router.add_get(f"{BASE_PATH}/sites", sites_handler)
    # {raw:.*}: the id is read from request.raw_path (paths.py), never from the router's
    # half-decoded match, which would turn %2E%2E into ".." and %2F into "/".
    app.router.add_get(f"{SITES_PREFIX}{{raw:.*}}", site_handler)
    app.router.add_get(f"{EVENTS_PREFIX}{{raw:.*}}", charging_events_handler)
    add_control_routes(app)
    return app
