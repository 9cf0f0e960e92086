"""Per-request accounting on the hot path: request ids, the access line, the HTTP metrics.

A cache hit costs the framework tens of microseconds; the stdlib logging machinery alone
(record, handler lock, formatter, one unbuffered write per line) cost more than that, so
the access line has its own writer here: one JSON object per request with the request id,
in the same shape and field order as every other log line (`logs.JsonFormatter`),
serialized with orjson and written in batches — lines of one event-loop turn go out in one
write, scheduled with `call_soon`, so a quiet gateway still writes each line at once.  The
batch goes through the same `Redactor` as all other lines.  With `GATEWAY_LOG_LEVEL` above
INFO no access line is built at all.

Metric children are looked up once per label set and kept (prometheus-client's `labels()`
takes a lock and hashes every call); methods outside the HTTP standard count as `OTHER`, so
no client can grow the label set.  Request ids are a per-process random prefix and a
counter: unique across replicas, and far cheaper than `uuid4()`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from typing import Any

import orjson
from prometheus_client.metrics import Counter, Histogram

from .logs import Timestamps, gateway_stream
from .metrics import Metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


class RequestIds:
    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


class AccessLog:
    """Batched JSON access lines on the gateway's log stream (see module docstring): the
    stream `logs.configure` set up, while the `gateway.access` logger is enabled for INFO
    (both looked up as they are now, so reconfiguring logging takes effect at once)."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("gateway.access")
        self._pending: list[bytes] = []
        self._timestamp = Timestamps()

    @property
    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, request_id: str, fields: dict[str, Any]) -> None:
        now = time.time()
        line = {
            "ts": self._timestamp(now),
            "level": "info",
            "logger": "gateway.access",
            "msg": "request",
            "request_id": request_id,
            **fields,
        }
        self._pending.append(orjson.dumps(line))
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (shutting down): write now
                self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        text = b"\n".join(self._pending).decode("utf-8") + "\n"
        self._pending.clear()
        stream, redact = gateway_stream()
        if stream is not None:
            stream.write(redact(text))
            stream.flush()


class Accounting:
    """The metrics and the access line of one finished request."""

    def __init__(self, metrics: Metrics, access: AccessLog) -> None:
        self._metrics = metrics
        self.access = access
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._lookups: dict[tuple[str, str], Counter] = {}
        self._coalesced: dict[str, Counter] = {}

    def record(
        self,
        request_id: str,
        route: str,
        method: str,
        status: int,
        duration: float,
        *,
        result: str | None,
        collapsed: bool,
        client: str,
        error: str | None,
        upstream: str | None,
        trace_id: str | None = None,
    ) -> None:
        if method not in METHODS:
            method = "OTHER"
        key = (route, method, status)
        requests = self._requests.get(key)
        if requests is None:
            requests = self._requests[key] = self._metrics.http_requests.labels(
                route, method, str(status)
            )
        requests.inc()
        histogram = self._durations.get(route)
        if histogram is None:
            histogram = self._durations[route] = self._metrics.http_duration.labels(route)
        histogram.observe(duration)
        if result is not None:
            lookups = self._lookups.get((route, result))
            if lookups is None:
                lookups = self._lookups[(route, result)] = self._metrics.cache_lookups.labels(
                    route, result
                )
            lookups.inc()
        if collapsed:
            coalesced = self._coalesced.get(route)
            if coalesced is None:
                coalesced = self._coalesced[route] = self._metrics.coalesced.labels(route)
            coalesced.inc()
        if self.access.enabled:
            fields: dict[str, Any] = {
                "cache": result,
                "client": client,
                "duration_ms": round(duration * 1000, 3),
                "error": error,
                "method": method,
                "route": route,
                "status": status,
            }
            if trace_id is not None:
                fields["trace_id"] = trace_id
            fields["upstream"] = upstream
            self.access.write(request_id, fields)
