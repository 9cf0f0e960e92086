"""Upstream health in one place: `classify` for every kind of answer, and every exit path of
an admitted attempt settling its permit — with an injected clock, no sleeps.  A half-open
probe that times out, is cancelled, or ends without a verdict always frees its slot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway.circuit import Circuit, Health, Permit, classify
from gateway.errors import UpstreamTimeout


@pytest.mark.parametrize(
    ("status", "retry_after", "health"),
    [
        (200, None, Health.SUCCESS),
        (204, None, Health.SUCCESS),
        (404, None, Health.SUCCESS),
        (429, None, Health.NEUTRAL),
        (429, 3.0, Health.NEUTRAL),
        (503, 3.0, Health.NEUTRAL),
        (503, None, Health.FAILURE),
        (500, None, Health.FAILURE),
        (502, None, Health.FAILURE),
        (504, None, Health.FAILURE),
        (400, None, Health.NEUTRAL),
        (401, None, Health.NEUTRAL),
        (403, None, Health.NEUTRAL),
        (409, None, Health.NEUTRAL),
        (301, None, Health.NEUTRAL),
    ],
)
def test_classify(status: int, retry_after: float | None, health: Health) -> None:
    assert classify(status, retry_after=retry_after) is health


def _open_then_half_open() -> tuple[Circuit, list[float], Permit]:
    now = [0.0]
    circuit = Circuit(failures=1, cooldown=5, clock=lambda: now[0])
    first = circuit.allow()
    assert first is not None
    first.record(Health.FAILURE)
    assert circuit.state == "open" and circuit.allow() is None
    now[0] = 6
    probe = circuit.allow()
    assert probe is not None and probe.probe and circuit.state == "half_open"
    assert circuit.allow() is None  # one probe at a time
    return circuit, now, probe


@pytest.mark.parametrize(
    ("ending", "reopens"),
    [
        (asyncio.CancelledError, True),
        (TimeoutError, True),
        (lambda: UpstreamTimeout("no answer"), True),
        (lambda: RuntimeError("anything else"), False),
        (None, False),  # left without a verdict: frees the slot, says nothing
    ],
)
def test_every_way_a_probe_ends_frees_its_slot(
    ending: Callable[[], BaseException] | type[BaseException] | None, reopens: bool
) -> None:
    circuit, now, probe = _open_then_half_open()
    if ending is None:
        with probe:
            pass
    else:
        error = ending() if callable(ending) else ending
        with pytest.raises(type(error) if isinstance(error, BaseException) else error), probe:
            raise error
    assert probe.settled
    if reopens:
        assert circuit.state == "open" and circuit.allow() is None
        now[0] += 6
    assert circuit.allow() is not None  # the next probe may go


def test_a_recorded_verdict_is_not_overridden_by_the_exit() -> None:
    circuit, _, probe = _open_then_half_open()
    with pytest.raises(TimeoutError), probe:
        probe.record(Health.SUCCESS)
        raise TimeoutError
    assert circuit.state == "closed"


async def test_time_spent_waiting_for_a_token_frees_the_probe() -> None:
    """The old wedge: a probe admitted, its time budget spent waiting, then raising at
    `remaining <= 0` without settling.  Now the attempt's `with` settles it."""
    from gateway.upstream import Upstream

    circuit, now, _ = _open_then_half_open()
    _.record(Health.NEUTRAL)

    class SlowAdmission:
        async def admit(self, deadline: float) -> Permit:
            permit = circuit.allow()
            assert permit is not None and permit.probe
            await asyncio.sleep(0.05)  # the whole (tiny) budget goes here
            return permit

        async def pause(self, seconds: float) -> None:
            return None

    from gateway.accounts import Account
    from gateway.metrics import Metrics
    from gateway.settings import Secret

    account = Account("a", "http://127.0.0.1:9/rest/v1", Secret("k"), Secret("s"), "full", 5, "n")
    upstream = Upstream(
        None,  # type: ignore[arg-type]  # never reached: the deadline passes first
        account,
        timeout=0.01,
        retries=0,
        metrics=Metrics(),
        admission=SlowAdmission(),
    )
    with pytest.raises(UpstreamTimeout):
        await upstream.fetch_site("x")
    assert circuit.state == "open"  # the timed-out probe counted as a failure...
    now[0] += 6
    assert circuit.allow() is not None  # ...and freed its slot: the circuit cannot wedge
