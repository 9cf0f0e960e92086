"""Structured logs: one JSON access line per request with what operators need, event lines,
and redaction by construction."""

from __future__ import annotations

import io
import logging

import orjson

from gateway import logs
from gateway.settings import Secret
from tests.conftest import GatewayFactory, Simulator, settings_for


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_access_lines(simulator: Simulator, make_gateway: GatewayFactory) -> None:
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    try:
        gw = await make_gateway(settings_for(simulator))
        await gw.get("/sites/site-0001", headers={"X-Request-ID": "req-miss"})
        await gw.get("/sites/site-0001", headers={"X-Request-ID": "req-hit"})
        await gw.get("/sites/ghost", headers={"X-Request-ID": "req-404"})
    finally:
        logs.configure("INFO")
    access = {
        line["request_id"]: line for line in _lines(stream) if line["logger"] == "gateway.access"
    }
    miss = access["req-miss"]
    assert miss["route"] == "/sites/{id}" and miss["status"] == 200
    assert miss["cache"] == "miss" and miss["upstream"] == "200"
    assert isinstance(miss["duration_ms"], float)
    hit = access["req-hit"]
    assert hit["cache"] == "hit" and hit["upstream"] is None
    missing = access["req-404"]
    # Not in the fleet list fetched a moment ago: answered without an upstream call.
    assert missing["status"] == 404 and missing["upstream"] is None
    assert missing["cache"] == "negative_hit"
    assert missing["error"] == "not-found"


async def test_events_and_level(make_gateway: GatewayFactory, make_simulator: object) -> None:
    stream = io.StringIO()
    logs.configure("WARNING", stream=stream)
    try:
        sim = await make_simulator(fail_mode="429", retry_after=2)  # type: ignore[operator]
        gw = await make_gateway(settings_for(sim, circuit_failures=1))
        await gw.get("/sites/site-0001")
        sim.config.fail_mode = "500"
        await gw.get("/sites/site-0002")  # pause still holds: no upstream call
    finally:
        logs.configure("INFO")
    lines = _lines(stream)
    assert not [line for line in lines if line["logger"] == "gateway.access"]  # below WARNING
    assert any(line["msg"] == "upstream pause" and line["retry_after"] == 2 for line in lines)


def test_redaction_by_construction() -> None:
    stream = io.StringIO()
    logs.configure("INFO", secrets=["the-api-secret"], stream=stream)
    try:
        log = logging.getLogger("gateway.test")
        log.info("value %s", "the-api-secret")
        log.info(
            "unlisted fields are dropped", extra={"authorization": "Bearer x", "route": "/sites"}
        )
        log.info("secret objects render masked: %r", Secret("hidden-value"))
    finally:
        logs.configure("INFO")
    text = stream.getvalue()
    assert "the-api-secret" not in text and "***" in text
    assert "Bearer x" not in text and "authorization" not in text
    assert "hidden-value" not in text


def test_allowed_fields_never_shadow_log_record_attributes() -> None:
    assert not logs.ALLOWED_FIELDS & logs.RESERVED


def test_timestamps() -> None:
    formatter = logs.JsonFormatter()
    record = logging.makeLogRecord({"msg": "x", "created": 1700000000.5, "msecs": 500.0})
    first = orjson.loads(formatter.format(record))["ts"]
    record.created = 1700000001.25
    second = orjson.loads(formatter.format(record))["ts"]
    assert (first, second) == ("2023-11-14T22:13:20.500Z", "2023-11-14T22:13:21.250Z")
