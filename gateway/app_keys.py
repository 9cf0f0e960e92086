"""Typed `web.AppKey`s: where each collaborator of the app lives (no module-level state)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .cursors import Cursors
from .fleetwide import Fleetwide
from .metrics import Metrics
from .service import SiteService
from .settings import Settings

if TYPE_CHECKING:
    from .tracing import Tracing

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", SiteService)  # the first account's (tests reach into it)
FLEET = web.AppKey("fleet", Fleetwide)  # what the routes call: every account as one fleet
CURSORS = web.AppKey("cursors", Cursors)
TRACING: web.AppKey[Tracing | None] = web.AppKey("tracing")
READINESS: web.AppKey[Callable[[], Awaitable[dict[str, Any]]]] = web.AppKey("readiness")
