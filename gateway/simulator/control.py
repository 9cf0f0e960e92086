"""The simulator's unsigned control surface and its change ticker.

Owns what steers a running simulator from outside (tests in other processes, benchmarks):
``GET /_sim/stats`` (call counts by outcome, path and api key; changes applied),
``POST /_sim/config`` (flip knobs), ``POST /_sim/reset`` (clear the call log) and
``POST /_sim/mutate`` (apply one change, see ``changes.py``); and the background task that
applies a random change every ``change_interval`` seconds while the app runs. None of these
routes is logged as a data call.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from gateway.simulator.changes import NothingToChange, UnknownKind, UnknownSite
from gateway.simulator.state import SIM_STATE, SimulatorState, validate_config

log = logging.getLogger(__name__)

# How often the ticker looks at ``change_interval``, so a knob flipped while it waits (or
# while it is off) takes effect within this time.
TICK_POLL_SECONDS = 0.1


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def _json_object(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    value = orjson.loads(body) if body.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("body must be a JSON object (of knob names to values, for config)")
    return value


async def stats_handler(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    by_outcome = collections.Counter(str(call.outcome) for call in state.calls)
    by_path = collections.Counter(call.path for call in state.calls)
    by_api_key = collections.Counter(call.api_key or "" for call in state.calls)
    return _json(
        200,
        {
            "total": len(state.calls),
            "by_outcome": by_outcome,
            "by_path": by_path,
            "by_api_key": by_api_key,  # "" counts calls without an x-api-key header
            "mutations": len(state.mutations),
            "sites": len(state.sites),
            "config": dataclasses.asdict(state.config),
        },
    )


async def config_handler(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    try:
        changes = await _json_object(request)
        validate_config(changes)
    except (orjson.JSONDecodeError, ValueError) as exc:
        return _json(400, {"error": str(exc)})
    for name, value in changes.items():
        setattr(state.config, name, value)
    if "seed" in changes:
        state.reseed()
    return _json(200, dataclasses.asdict(state.config))


async def reset_handler(request: web.Request) -> web.Response:
    request.app[SIM_STATE].reset()
    return _json(200, {"reset": True})


async def mutate_handler(request: web.Request) -> web.Response:
    """Body ``{"kind"?: str, "site_id"?: str}``; answers the change applied."""
    state = request.app[SIM_STATE]
    try:
        body = await _json_object(request)
        unknown = set(body) - {"kind", "site_id"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; known: kind, site_id")
        kind, site_id = body.get("kind"), body.get("site_id")
        if not isinstance(kind, str | None) or not isinstance(site_id, str | None):
            raise ValueError("kind and site_id must be strings")
        return _json(200, state.mutate(kind, site_id=site_id))
    except (orjson.JSONDecodeError, ValueError, UnknownKind) as exc:
        return _json(400, {"error": str(exc)})
    except UnknownSite as exc:
        return _json(404, {"error": str(exc)})
    except NothingToChange as exc:
        return _json(409, {"error": str(exc)})


async def run_changes(state: SimulatorState) -> None:
    """Apply one random change every ``config.change_interval`` seconds (0: none), forever."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        interval, now = state.config.change_interval, loop.time()
        if interval <= 0:
            last = now
        elif now >= last + interval:
            last = now
            try:
                change = state.mutate()
            except Exception:  # a bug in a change must not stop the ticker; it is logged
                log.exception("simulator change failed")
            else:
                log.info("simulator change applied: %s", change)
            continue
        wait = TICK_POLL_SECONDS if interval <= 0 else last + interval - now
        await asyncio.sleep(min(wait, TICK_POLL_SECONDS))


async def change_ticker(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the change ticker runs exactly while the app does."""
    task = asyncio.create_task(run_changes(app[SIM_STATE]), name="simulator-changes")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/stats", stats_handler)
    app.router.add_post("/_sim/config", config_handler)
    app.router.add_post("/_sim/reset", reset_handler)
    app.router.add_post("/_sim/mutate", mutate_handler)
    app.cleanup_ctx.append(change_ticker)
