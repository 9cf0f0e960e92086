"""OpenTelemetry tracing: one server span per request, child spans for Redis and upstream.

On only when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; every other `OTEL_*` variable is read by the SDK
itself).  Off, nothing here is even imported by the request path: the collaborators hold
`None` and skip every tracing call, so the hit path pays one `is None` check.

On: each app owns its `TracerProvider` (no global state; tests build many apps) with a
`BatchSpanProcessor` in front of the OTLP/HTTP exporter.  Spans are exported from the
processor's own thread, never from a request; its queue is bounded (`OTEL_BSP_*`), so when
the collector is down spans are dropped, not memory.  A client's W3C `traceparent` is
continued; upstream calls carry the current context's `traceparent`; the access line carries
the request's `trace_id`.

Span attributes (semantic conventions where they exist): server `http.request.method`,
`http.route`, `http.response.status_code`, `chargepilot.cache.result`; Redis `db.system`,
`db.operation.name`; upstream `http.request.method`, `server.address`, `url.template`,
`http.response.status_code`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import __version__

_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    def __init__(self, exporter: SpanExporter | None = None) -> None:
        resource = Resource.create(
            {"service.name": "chargepilot-gateway", "service.version": __version__}
        )
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("chargepilot-gateway", __version__)

    @contextmanager
    def server_span(self, method: str, route: str, headers: Mapping[str, str]) -> Iterator[Span]:
        """The request's span, continuing the client's `traceparent` when it sent one."""
        parent = _PROPAGATOR.extract(carrier=dict(headers.items()))
        span = self.tracer.start_span(
            f"{method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route},
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield span
        finally:
            otel_context.detach(token)
            span.end()

    @contextmanager
    def redis_span(self, operation: str) -> Iterator[Span]:
        with self.tracer.start_as_current_span(
            f"redis {operation}",
            kind=SpanKind.CLIENT,
            attributes={"db.system": "redis", "db.operation.name": operation},
        ) as span:
            yield span

    @contextmanager
    def upstream_span(self, endpoint: str, host: str) -> Iterator[Span]:
        with self.tracer.start_as_current_span(
            f"GET {endpoint}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "GET",
                "url.template": endpoint,
                "server.address": host,
            },
        ) as span:
            yield span

    @staticmethod
    def inject(headers: dict[str, str]) -> None:
        """Put the current context's `traceparent` into outgoing headers."""
        _PROPAGATOR.inject(carrier=headers)

    @staticmethod
    def finish(span: Span, status: int, attributes: Mapping[str, Any] | None = None) -> None:
        span.set_attribute("http.response.status_code", status)
        for name, value in (attributes or {}).items():
            if value is not None:
                span.set_attribute(name, value)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))

    @staticmethod
    def trace_id(span: Span) -> str:
        return format(span.get_span_context().trace_id, "032x")

    async def close(self) -> None:
        """A last export of what is queued.  It runs in a daemon thread (an executor thread
        would be waited for when the loop closes, with the exporter's retries); callers
        bound the wait, so a dead collector never holds up a shutdown."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def shut_down() -> None:
            try:
                self.provider.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be gone by then
                    loop.call_soon_threadsafe(done.set)

        threading.Thread(target=shut_down, daemon=True).start()
        await done.wait()
