"""The simulator's aiohttp application: ChargePilot's Sites routes, signing, knobs, call log.

Owns everything HTTP about the fake upstream: ``GET /rest/v1/sites`` and
``GET /rest/v1/sites/{id}`` behind HMAC signature checks (implemented here with
hashlib/hmac, deliberately sharing no code with the gateway's signer), the runtime knobs in
``SimulatorConfig`` that tests flip to inject latency, errors and rate limits, the call log,
and the unsigned ``/_sim/*`` control routes used from other processes.

Every data request is decided on arrival (fail mode, auth, rate limit, error rate, lookup),
logged at once with that outcome, then answered after the configured latency. Logging on
arrival means ``count()`` already includes a request the gateway gave up on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from gateway.simulator.data import Site, demo_fleet
from gateway.simulator.state import (
    BASE_PATH,
    HANG_SECONDS,
    NO_ANSWER,
    Call,
    SimulatorConfig,
    SimulatorState,
    validate_config,
)

SIM_STATE = web.AppKey("sim_state", SimulatorState)


def compute_signature(secret: str, payload: str) -> str:
    """ChargePilot's scheme: the *hex string* of sha256(secret) is the HMAC-SHA256 key."""
    key = hashlib.sha256(secret.encode()).hexdigest()
    return hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signed_path(raw_path: str, sign_path: str) -> str:
    if sign_path == "relative" and raw_path.startswith(BASE_PATH):
        return raw_path[len(BASE_PATH) :]
    return raw_path


def check_signature(
    config: SimulatorConfig,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: str,
    now: float,
) -> str | None:
    """Return why the request is rejected, or None if its signature is valid."""
    api_key = headers.get("x-api-key")
    timestamp = headers.get("x-req-timestamp")
    signature = headers.get("x-signature")
    if not api_key or not timestamp or not signature:
        return "missing x-api-key, x-req-timestamp or x-signature header"
    if not hmac.compare_digest(api_key.encode(), config.api_key.encode()):
        return "unknown api key"
    if not timestamp.isdigit():
        return "x-req-timestamp must be integer unix seconds"
    if abs(now - int(timestamp)) > config.max_skew:
        return "timestamp outside allowed clock skew"
    payload = f"{method}:{signed_path(raw_path, config.sign_path)}:{timestamp}:{body}"
    expected = compute_signature(config.api_secret, payload)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return "invalid signature"
    return None


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


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_encode(body), content_type="application/json", headers=headers
    )


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(int(seconds)) if float(seconds).is_integer() else str(seconds)}


def _forced(state: SimulatorState, mode: str) -> web.Response:
    """The response a ``fail_mode`` imposes on every data request."""
    if mode == "non_json":
        return web.Response(status=200, text="<html>oops</html>", content_type="text/html")
    if mode == "wrong_shape":
        return _json(200, {"unexpected": True})
    if mode == "429":
        return _json(429, {"error": "too many requests"}, _retry_after(state.config.retry_after))
    if mode == "503_retry_after":
        return _json(503, {"error": "unavailable"}, _retry_after(state.config.retry_after))
    if mode == "401":
        return _json(401, {"error": "unauthorized"})
    return _json(int(mode), {"error": f"simulated {mode}"})


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


def _decide(state: SimulatorState, request: web.Request, body: str) -> web.Response | None:
    """The answer to a data request, or None for "hang"; decided on arrival."""
    config = state.config
    site_id = request.match_info.get("site_id")
    if config.fail_mode == "hang":
        return None
    if config.fail_mode is not None:
        return _forced(state, config.fail_mode)
    reason = check_signature(
        config, request.method, request.raw_path, request.headers, body, time.time()
    )
    if reason is not None:
        return _json(401, {"error": reason})
    if _over_rate_limit(state, time.monotonic()):
        return _json(429, {"error": "rate limit exceeded"}, _retry_after(1))
    if config.error_rate and state.rng.random() < config.error_rate:
        return _json(500, {"error": "simulated internal error"})
    if site_id is None:
        sites = list(state.sites.values())
        if config.envelope == "bare":
            return _json(200, sites)
        return _json(200, {config.envelope: sites})
    site = state.sites.get(site_id)
    if site is None:
        return _json(404, {"error": "not found"})
    return _json(200, site)


async def _sleep_unless_closing(state: SimulatorState, seconds: float) -> None:
    """Sleep, but wake when the app shuts down so a hung handler can't stall server close."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.closing.wait(), timeout=seconds)


async def data_handler(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    arrival, wall = time.monotonic(), time.time()
    body = await request.text()
    response = _decide(state, request, body)
    outcome = NO_ANSWER if response is None else response.status
    state.calls.append(Call(arrival, wall, request.method, request.raw_path, outcome))
    if response is None:
        await _sleep_unless_closing(state, HANG_SECONDS)
        return _json(503, {"error": "simulator shutting down"})
    config = state.config
    jitter = state.rng.uniform(0, config.latency_jitter) if config.latency_jitter else 0.0
    await _sleep_unless_closing(state, config.latency + jitter)
    return response


async def stats_handler(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    by_outcome = collections.Counter(str(call.outcome) for call in state.calls)
    by_path = collections.Counter(call.path for call in state.calls)
    return _json(
        200,
        {
            "total": len(state.calls),
            "by_outcome": by_outcome,
            "by_path": by_path,
            "config": dataclasses.asdict(state.config),
        },
    )


async def config_handler(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    try:
        changes = orjson.loads(await request.read())
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object of knob names to values")
        validate_config(changes)
    except (orjson.JSONDecodeError, ValueError) as exc:
        return _json(400, {"error": str(exc)})
    for name, value in changes.items():
        setattr(state.config, name, value)
    if "seed" in changes:
        state.rng.seed(state.config.seed)
    return _json(200, dataclasses.asdict(state.config))


async def reset_handler(request: web.Request) -> web.Response:
    request.app[SIM_STATE].reset()
    return _json(200, {"reset": True})


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
    app.router.add_get(f"{BASE_PATH}/sites", data_handler)
    app.router.add_get(f"{BASE_PATH}/sites/{{site_id}}", data_handler)
    app.router.add_get("/_sim/stats", stats_handler)
    app.router.add_post("/_sim/config", config_handler)
    app.router.add_post("/_sim/reset", reset_handler)
    return app
