"""The edge's last answers: an exception nobody planned for becomes a 500 problem (no
traceback in the body, one server-side log line with it), and a fetch lock that another
replica never lets go ends, after `MAX_WAIT_ROUNDS` waits, in a 503 problem with
Retry-After instead of a request that hangs."""

from __future__ import annotations

import io
import logging
from typing import Any

import orjson
import pytest

from gateway import logs
from gateway.app_keys import FLEET, SERVICE
from gateway.engine import MAX_WAIT_ROUNDS
from gateway.locks import RedisCoordinator
from gateway.store import RedisStore, redis_client
from tests.conftest import GatewayFactory, RedisProcess, Simulator, eventually, settings_for

PROBLEM_FIELDS = {"type", "title", "status", "detail", "request_id"}
SECRET_DETAIL = "internal state 0xdeadbeef at /srv/gateway/secret.py"


async def test_an_unexpected_exception_is_a_500_problem_with_one_logged_traceback(
    simulator: Simulator,
    make_gateway: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    try:
        gw = await make_gateway(settings_for(simulator))

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(SECRET_DETAIL)

        monkeypatch.setattr(gw.app[FLEET], "site", broken)
        with caplog.at_level(logging.INFO):
            response = await gw.get("/sites/site-0001", headers={"X-Request-ID": "req-boom"})
            raw = await response.read()
            # The process serves on: another route is untouched.
            assert (await gw.get("/sites")).status == 200

        async def access_line_written() -> bool:
            return '"request_id":"req-boom"' in stream.getvalue()

        await eventually(access_line_written)
    finally:
        logs.configure("INFO")

    assert response.status == 500
    assert response.content_type == "application/problem+json"
    assert response.headers["X-Request-ID"] == "req-boom"
    problem = orjson.loads(raw)
    assert set(problem) == PROBLEM_FIELDS
    assert problem["type"] == "/problems/internal" and problem["status"] == 500
    assert problem["request_id"] == "req-boom"
    for leak in ("Traceback", "RuntimeError", "0xdeadbeef", "secret.py"):
        assert leak.encode() not in raw, leak
    # Server-side: exactly one record carries the traceback, and it is this exception.
    with_traceback = [record for record in caplog.records if record.exc_info]
    assert len(with_traceback) == 1
    (record,) = with_traceback
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    logged = [line for line in lines if "exception" in line]
    assert len(logged) == 1
    assert "Traceback" in logged[0]["exception"] and SECRET_DETAIL in logged[0]["exception"]
    assert logged[0]["route"] == "/sites/{id}"
    (access,) = [
        line
        for line in lines
        if line["logger"] == "gateway.access" and line.get("request_id") == "req-boom"
    ]
    assert access["status"] == 500 and access["error"] == "internal"


async def test_a_lock_another_replica_never_releases_ends_in_a_503_problem(
    simulator: Simulator,
    make_gateway: GatewayFactory,
    redis_url: str,
    redis_server: RedisProcess,
) -> None:
    gw = await make_gateway(settings_for(simulator, redis_url=redis_url))
    service = gw.app[SERVICE]
    # The production lock lifetime is the upstream timeout plus a margin (seconds per
    # round); a coordinator on the same Redis with a 0.1 s lifetime makes each of the
    # waiter's rounds short without changing what a round is.
    store = RedisStore(redis_client(redis_url, timeout=0.5))
    waits: list[str] = []

    class Counted(RedisCoordinator):
        async def wait_unlocked(self, name: str) -> None:
            waits.append(name)
            await super().wait_unlocked(name)

    service.engine._coordinator = Counted(store, service.keys, lock_ttl=0.1)
    client = redis_server.client()
    try:
        # Another replica holds the fleet fetch lock and never lets go (no expiry at all).
        client.set(service.keys.lock("fleet"), "another-replica")
        response = await gw.get("/sites", headers={"X-Request-ID": "req-held"})
        assert response.status == 503
        assert response.content_type == "application/problem+json"
        assert int(response.headers["Retry-After"]) >= 1
        problem = await response.json()
        assert set(problem) == PROBLEM_FIELDS and problem["request_id"] == "req-held"
        assert problem["detail"] == "another replica's fetch did not complete"
        assert waits == ["fleet"] * MAX_WAIT_ROUNDS
        assert simulator.data_calls() == 0  # the waiter never went upstream itself
        # The holder lets go: the next request fills normally.
        client.delete(service.keys.lock("fleet"))
        assert (await gw.get("/sites")).status == 200
        assert simulator.data_calls() == 1
    finally:
        client.close()
        await store.close()
