"""ChargePilot HTTP client: signing, timeouts, retries, Retry-After, and admission control.

Owns everything about talking to ChargePilot and nothing about caching.  One call of
`fetch_sites()` / `fetch_site(id)` is one logical request: it may make up to
`1 + retries` HTTP attempts, all inside one total deadline of `timeout` seconds.

Per attempt:
  1. `admission.admit(deadline)` may hold the call back (a Retry-After pause, an open circuit,
     no rate token within the deadline) by raising `UpstreamUnavailable` (503).
  2. The request is signed and sent on the shared pooled session.
  3. Outcomes: 200 + JSON of the right shape → returned; 404 → `None`; 429, or 503 with
     Retry-After → the pause is recorded (shared with other replicas) and `UpstreamUnavailable`
     raised, never retried; connection errors and 502/503/504 → retried with exponential
     backoff and full jitter while time is left; a timeout → `UpstreamTimeout`; any other
     status, non-JSON, or the wrong shape → `UpstreamError`/`BadUpstreamPayload`.

A site id is percent-encoded into one path segment, so only `{base}/sites` and
`{base}/sites/{id}` can ever be requested.  aiohttp and asyncio exceptions are translated
here and only here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import orjson

from .errors import BadUpstreamPayload, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .logs import upstream_outcomes_var
from .metrics import Metrics
from .settings import Settings
from .signing import signed_headers, signing_key

log = logging.getLogger("gateway.upstream")

BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
DEFAULT_PAUSE = 1.0
RETRIABLE = frozenset({502, 503, 504})
ENVELOPES = ("sites", "data")

SITES_ENDPOINT = "/sites"
SITE_ENDPOINT = "/sites/{id}"


class Admission(Protocol):
    """Decides whether an upstream attempt may go now (pause, circuit, rate budget)."""

    async def admit(self, deadline: float) -> None: ...
    async def pause(self, seconds: float) -> None: ...
    def record(self, healthy: bool) -> None: ...


class OpenAdmission:
    """Admits everything; for tests that exercise only the HTTP behaviour."""

    async def admit(self, deadline: float) -> None:
        return None

    async def pause(self, seconds: float) -> None:
        return None

    def record(self, healthy: bool) -> None:
        return None


class Upstream:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        metrics: Metrics,
        admission: Admission | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[float], float] = lambda cap: random.uniform(0, cap),
    ) -> None:
        self._session = session
        self._base = settings.base_url.rstrip("/")
        base_path = urlsplit(self._base).path.rstrip("/")
        self._strip = len(base_path) if settings.sign_path == "relative" else 0
        self._api_key = settings.api_key.reveal()
        self._key = signing_key(settings.api_secret.reveal())
        self._timeout = settings.upstream_timeout
        self._retries = settings.upstream_retries
        self._metrics = metrics
        self._admission = admission or OpenAdmission()
        self._clock = clock
        self._jitter = jitter

    async def fetch_sites(self) -> list[Any]:
        payload = await self._get(SITES_ENDPOINT, "/sites")
        if isinstance(payload, list):
            return payload
        if isinstance(payload, dict):
            for name in ENVELOPES:
                if isinstance(payload.get(name), list):
                    return list(payload[name])
        raise BadUpstreamPayload("upstream /sites answer is not a list of sites")

    async def fetch_site(self, site_id: str) -> dict[str, Any] | None:
        payload = await self._get(SITE_ENDPOINT, "/sites/" + quote(site_id, safe=""))
        if payload is None or isinstance(payload, dict):
            return payload
        raise BadUpstreamPayload("upstream site answer is not an object")

    async def _get(self, endpoint: str, relative: str) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        url = self._base + relative
        sign_path = urlsplit(url).path[self._strip :]
        attempt = 0
        while True:
            await self._admission.admit(deadline)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UpstreamTimeout("upstream did not answer in time")
            headers = signed_headers(self._api_key, self._key, "GET", sign_path, int(self._clock()))
            started = loop.time()
            try:
                status, retry_after, body = await self._send(url, headers, remaining)
            except TimeoutError:
                self._observe(endpoint, "timeout", started)
                self._admission.record(healthy=False)
                raise UpstreamTimeout(
                    f"upstream did not answer within {self._timeout:g} s"
                ) from None
            except aiohttp.ClientError as exc:
                self._observe(endpoint, "connection_error", started)
                self._admission.record(healthy=False)
                log.warning("upstream connection error", extra={"error": type(exc).__name__})
                error: UpstreamError = UpstreamError("upstream could not be reached")
            else:
                self._observe(endpoint, str(status), started)
                if status == 200:
                    return self._decode(body)
                if status == 404:
                    self._admission.record(healthy=True)
                    return None
                if status == 429 or (status == 503 and retry_after is not None):
                    pause = retry_after if retry_after is not None else DEFAULT_PAUSE
                    await self._admission.pause(pause)
                    log.warning(
                        "upstream asked to pause", extra={"status": status, "retry_after": pause}
                    )
                    raise UpstreamUnavailable(
                        f"upstream asked to pause for {pause:g} s", retry_after=pause
                    )
                self._admission.record(healthy=False)
                error = UpstreamError(f"upstream answered HTTP {status}")
                if status not in RETRIABLE:
                    raise error
            attempt += 1
            delay = self._jitter(min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
            if attempt > self._retries or loop.time() + delay >= deadline:
                raise error
            await asyncio.sleep(delay)

    async def _send(
        self, url: str, headers: dict[str, str], remaining: float
    ) -> tuple[int, float | None, bytes]:
        timeout = aiohttp.ClientTimeout(total=remaining)
        async with self._session.get(
            url, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            body = await response.read()
            return response.status, parse_retry_after(response.headers.get("Retry-After")), body

    def _decode(self, body: bytes) -> Any:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._admission.record(healthy=False)
            raise BadUpstreamPayload("upstream answered with something that is not JSON") from None
        self._admission.record(healthy=True)
        return payload

    def _observe(self, endpoint: str, outcome: str, started: float) -> None:
        outcomes = upstream_outcomes_var.get()
        if outcomes is not None:
            outcomes.append(outcome)
        self._metrics.upstream_requests.labels(endpoint, outcome).inc()
        self._metrics.upstream_duration.labels(endpoint).observe(
            asyncio.get_running_loop().time() - started
        )


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After as seconds (RFC 9110: delta-seconds or an HTTP date); None when absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, 3600.0))
