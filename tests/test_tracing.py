"""Tracing against a real OTLP/HTTP receiver started here: a server span per request with
child spans for Redis and the upstream call, a client's traceparent continued and sent
upstream, trace_id in the access line, and a dead collector that costs requests nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway import logs
from tests.conftest import GatewayFactory, Simulator, eventually, free_port, settings_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@dataclasses.dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent: str
    kind: int
    attributes: dict[str, Any]


async def _receiver(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> tuple[TestServer, list[Span]]:
    spans: list[Span] = []

    async def traces(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {
                        a.key: getattr(a.value, a.value.WhichOneof("value"))
                        for a in span.attributes
                    }
                    spans.append(
                        Span(
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.kind,
                            attributes,
                        )
                    )
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    return await aiohttp_server(app, host="127.0.0.1"), spans


async def test_spans_parent_child_attributes_and_propagation(
    simulator: Simulator,
    make_gateway: GatewayFactory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, spans = await _receiver(aiohttp_server)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", str(server.make_url("")).rstrip("/"))
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    try:
        gw = await make_gateway(settings_for(simulator, redis_url=redis_url, tracing=True))
        miss = await gw.get("/sites/site-0003", headers={"traceparent": CLIENT_PARENT})
        assert miss.status == 200
        hit = await gw.get("/sites/site-0003")
        assert hit.status == 200

        async def exported() -> bool:
            return len({s.trace_id for s in spans if s.kind == 2}) >= 2  # two server spans

        await eventually(exported, timeout=10)
    finally:
        logs.configure("INFO")
    server_spans = [s for s in spans if s.kind == 2]  # SPAN_KIND_SERVER
    continued = next(s for s in server_spans if s.trace_id == TRACE_ID)
    assert continued.parent == "00f067aa0ba902b7"  # the client's span is its parent
    assert continued.name == "GET /sites/{id}"
    assert continued.attributes["http.route"] == "/sites/{id}"
    assert continued.attributes["http.response.status_code"] == 200
    assert continued.attributes["chargepilot.cache.result"] == "miss"
    children = [s for s in spans if s.trace_id == TRACE_ID and s.kind == 3]  # CLIENT
    upstream = [s for s in children if s.name.startswith("GET /sites")]
    redis_spans = [s for s in children if s.name.startswith("redis ")]
    assert upstream and redis_spans
    assert all(s.attributes["db.system"] == "redis" for s in redis_spans)
    assert upstream[0].attributes["http.response.status_code"] == 200
    # The upstream call carried the trace onward (the simulator logs the header it got).
    sent = [call.traceparent for call in simulator.state.calls if call.traceparent]
    assert sent and all(TRACE_ID in header for header in sent)
    own = next(s for s in server_spans if s.trace_id != TRACE_ID)
    assert own.attributes["chargepilot.cache.result"] == "hit" and own.parent == ""
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines() if line]
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert {line["trace_id"] for line in access} >= {TRACE_ID, own.trace_id}


async def test_a_dead_collector_costs_requests_nothing(
    simulator: Simulator, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "32")
    # Exports give up within the gateway's shutdown bound, so no export thread outlives the
    # test (and logs into a closed stream at exit).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    gw = await make_gateway(settings_for(simulator, tracing=True))
    assert (await gw.get("/sites/site-0001")).status == 200
    started = time.monotonic()
    statuses = await asyncio.gather(*(gw.get("/sites/site-0001") for _ in range(300)))
    assert {response.status for response in statuses} == {200}
    assert time.monotonic() - started < 10  # nothing waited for the collector


async def test_without_an_endpoint_nothing_of_tracing_is_loaded(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    from gateway.app_keys import TRACING

    gw = await make_gateway(settings_for(simulator))
    assert gw.app[TRACING] is None
    response = await gw.get("/sites/site-0001", headers={"traceparent": CLIENT_PARENT})
    assert response.status == 200
    assert not any(call.traceparent for call in simulator.state.calls)


def test_a_bad_otel_setting_stops_the_start_with_one_line(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
        OTEL_BSP_MAX_QUEUE_SIZE="1",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="5",
        GATEWAY_PORT=str(free_port()),
        GATEWAY_HOST="127.0.0.1",
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    named = [line for line in result.stderr.splitlines() if "invalid setting" in line]
    assert len(named) == 1 and "OTEL_" in named[0] and "Traceback" not in result.stderr
