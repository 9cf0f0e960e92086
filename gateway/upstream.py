"""ChargePilot HTTP client for one account: signing, timeouts, retries, Retry-After, and
admission control.  Owns everything about talking to ChargePilot and nothing about caching.

One call of `fetch_sites()`, `fetch_site(id)` or `fetch_events(id, query)` is one logical
request: up to `1 + retries` HTTP attempts, all inside one total deadline of `timeout`
seconds (enforced with `asyncio.timeout` on our own clock, so it is honoured to within a
scheduling tick; aiohttp's own timeouts round up to whole seconds).

Signing = wire: the URL is built percent-encoded by us (an id is exactly one path segment,
query values encoded the same way) and handed to aiohttp as `encoded=True`, and the
signature covers `url.raw_path_qs` — the very bytes of the request line.  Nothing can
re-normalize the path after it was signed.

Per attempt:
  1. `admission.admit(deadline)` may hold the call back (a Retry-After pause, an open
     circuit, no rate token within the deadline) by raising `UpstreamUnavailable` (503); it
     returns a `Permit`, settled below with the attempt's `Health` (`circuit.classify`).
  2. Outcomes: 200 + JSON of the right shape → returned; 404 → `None`; 429, or 503 with
     Retry-After → the pause is recorded (shared with other replicas) and
     `UpstreamUnavailable` raised, never retried; connection errors and 502/503/504 →
     retried with exponential backoff and full jitter while time is left; a timeout →
     `UpstreamTimeout` (504); any other status, non-JSON, or the wrong shape →
     `UpstreamError`/`BadUpstreamPayload` (502).
aiohttp and asyncio exceptions are translated here and only here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from yarl import URL

from .accounts import Account
from .circuit import Health, Permit, classify
from .errors import BadUpstreamPayload, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .logs import upstream_outcomes_var
from .metrics import Metrics
from .signing import signed_headers, signing_key

if TYPE_CHECKING:
    from .tracing import Tracing

log = logging.getLogger("gateway.upstream")

BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
DEFAULT_PAUSE = 1.0
RETRIABLE = frozenset({502, 503, 504})
ENVELOPES = ("sites", "data")

SITES_ENDPOINT = "/sites"
SITE_ENDPOINT = "/sites/{id}"
EVENTS_ENDPOINT = "/charging-events/site/{id}"
T = TypeVar("T")


def path_segment(value: str) -> str:
    """`value` as exactly one percent-encoded path segment (dot segments encoded too)."""
    if value in (".", ".."):
        return "%2E" * len(value)
    return quote(value, safe="")


def query_string(pairs: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in pairs)


class Admission(Protocol):
    """Decides whether an upstream attempt may go now (pause, circuit, rate budget)."""

    async def admit(self, deadline: float) -> Permit: ...
    async def pause(self, seconds: float) -> None: ...


class OpenAdmission:
    """Admits everything; for tests that exercise only the HTTP behaviour."""

    async def admit(self, deadline: float) -> Permit:
        return Permit(None, probe=False)

    async def pause(self, seconds: float) -> None:
        return None


class Upstream:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        account: Account,
        *,
        timeout: float,
        retries: int,
        metrics: Metrics,
        admission: Admission | None = None,
        labels: tuple[str, ...] = (),
        tracing: Tracing | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[float], float] = lambda cap: random.uniform(0, cap),
    ) -> None:
        self._session = session
        self.account = account
        self._base = account.base_url.rstrip("/")
        base_path = urlsplit(self._base).path.rstrip("/")
        self._strip = len(base_path) if account.sign_path == "relative" else 0
        self._api_key = account.api_key.reveal()
        self._key = signing_key(account.api_secret.reveal())
        self._timeout = timeout
        self._retries = retries
        self._metrics = metrics
        self._labels = labels  # leading metric labels (the account, with several)
        self._tracing = tracing
        self._host = urlsplit(self._base).hostname or ""
        self._admission = admission or OpenAdmission()
        self._clock = clock
        self._jitter = jitter

    async def fetch_sites(self) -> list[Any]:
        sites = await self._get(SITES_ENDPOINT, "/sites", _site_list)
        assert sites is not None  # a 404 of the list itself is unusable
        return sites

    async def fetch_site(self, site_id: str) -> dict[str, Any] | None:
        return await self._get(SITE_ENDPOINT, "/sites/" + path_segment(site_id), _object)

    async def fetch_events(
        self, site_id: str, query: Sequence[tuple[str, str]]
    ) -> dict[str, Any] | None:
        path = "/charging-events/site/" + path_segment(site_id)
        if query:
            path += "?" + query_string(query)
        return await self._get(EVENTS_ENDPOINT, path, _object)

    async def _get(self, endpoint: str, relative: str, shape: Callable[[Any], T]) -> T | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        url = URL(self._base + relative, encoded=True)
        sign_path = url.raw_path_qs[self._strip :]
        attempt = 0
        while True:
            permit = await self._admission.admit(deadline)
            with permit:
                found, error = await self._attempt(
                    endpoint, url, sign_path, permit, deadline, shape
                )
                if error is None:
                    return found
            attempt += 1
            delay = self._jitter(min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
            if attempt > self._retries or loop.time() + delay >= deadline:
                raise error
            await asyncio.sleep(delay)

    async def _attempt(
        self,
        endpoint: str,
        url: URL,
        sign_path: str,
        permit: Permit,
        deadline: float,
        shape: Callable[[Any], T],
    ) -> tuple[T | None, UpstreamError | None]:
        """(the answer, None), or (None, a retriable error); raises what is final."""
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise UpstreamTimeout(f"upstream did not answer within {self._timeout:g} s")
        headers = signed_headers(self._api_key, self._key, "GET", sign_path, int(self._clock()))
        started = loop.time()
        try:
            async with asyncio.timeout(remaining):
                if self._tracing is None:
                    status, retry_after, body = await self._send(url, headers)
                else:
                    with self._tracing.upstream_span(endpoint, self._host) as span:
                        self._tracing.inject(headers)
                        status, retry_after, body = await self._send(url, headers)
                        span.set_attribute("http.response.status_code", status)
        except TimeoutError:
            self._observe(endpoint, "timeout", started)
            permit.record(Health.FAILURE)
            raise UpstreamTimeout(f"upstream did not answer within {self._timeout:g} s") from None
        except aiohttp.ClientError as exc:
            self._observe(endpoint, "connection_error", started)
            permit.record(Health.FAILURE)
            log.warning("upstream connection error", extra={"error": type(exc).__name__})
            return None, UpstreamError("upstream could not be reached")
        self._observe(endpoint, str(status), started)
        health = classify(status, retry_after=retry_after)
        if status == 200:
            try:
                found = shape(orjson.loads(body))
            except (orjson.JSONDecodeError, BadUpstreamPayload) as exc:
                permit.record(Health.FAILURE)
                if isinstance(exc, BadUpstreamPayload):
                    raise
                raise BadUpstreamPayload(
                    "upstream answered with something that is not JSON"
                ) from None
            permit.record(health)
            return found, None
        permit.record(health)
        if status == 404:
            return None, None
        if status == 429 or (status == 503 and retry_after is not None):
            pause = retry_after if retry_after is not None else DEFAULT_PAUSE
            await self._admission.pause(pause)
            log.warning("upstream asked to pause", extra={"status": status, "retry_after": pause})
            raise UpstreamUnavailable(f"upstream asked to pause for {pause:g} s", retry_after=pause)
        error = UpstreamError(f"upstream answered HTTP {status}")
        if status not in RETRIABLE:
            raise error
        return None, error

    async def _send(self, url: URL, headers: dict[str, str]) -> tuple[int, float | None, bytes]:
        async with self._session.get(url, headers=headers, allow_redirects=False) as response:
            body = await response.read()
            return response.status, parse_retry_after(response.headers.get("Retry-After")), body

    def _observe(self, endpoint: str, outcome: str, started: float) -> None:
        outcomes = upstream_outcomes_var.get()
        if outcomes is not None:
            outcomes.append(outcome)
        labels = (*self._labels, endpoint)
        self._metrics.upstream_requests.labels(*labels, outcome).inc()
        self._metrics.upstream_duration.labels(*labels).observe(
            asyncio.get_running_loop().time() - started
        )


def _site_list(payload: Any) -> list[Any]:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for name in ENVELOPES:
            if isinstance(payload.get(name), list):
                return list(payload[name])
    raise BadUpstreamPayload("upstream /sites answer is not a list of sites")


def _object(payload: Any) -> dict[str, Any]:
    if isinstance(payload, dict):
        return payload
    raise BadUpstreamPayload("upstream answer is not an object")


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
