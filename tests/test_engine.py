"""The fill engine, every outcome driven with an injected clock (no sleeps): hit, refresh
ahead, stale-while-revalidate, stale-if-error, miss, collapsed, negative, another replica's
fill, a holder that never wrote, and an admission step that refuses or fetches itself."""

from __future__ import annotations

import asyncio

import pytest

from gateway.cache import Cache
from gateway.engine import Fill, Filled, FillEngine, Outcome
from gateway.entry import Entry
from gateway.errors import NotFound, UpstreamError, UpstreamUnavailable
from gateway.keys import Keys
from gateway.tier import Tier


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A fill that writes `bodies` (or finds them missing) and counts its runs."""

    def __init__(
        self, cache: Cache, bodies: dict[str, bytes], *, gate: asyncio.Event | None = None
    ):
        self.cache = cache
        self.bodies = bodies
        self.runs = 0
        self.gate = gate
        self.fail: Exception | None = None
        self.missing = False

    async def __call__(self) -> Filled:
        self.runs += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if self.missing:
            await self.cache.put_negative(list(self.bodies), stored_at=self.cache.now())
            return Filled(negative=set(self.bodies))
        return Filled(entries=await self.cache.put_many(self.bodies, stored_at=self.cache.now()))


class Locked:
    """A coordinator whose lock another replica holds; `wait_unlocked` runs `meanwhile`."""

    def __init__(self, meanwhile: object = None) -> None:
        self.meanwhile = meanwhile
        self.waits = 0

    async def try_lock(self, name: str) -> str | None:
        return None

    async def unlock(self, name: str, token: str) -> None:
        return None

    async def wait_unlocked(self, name: str) -> None:
        self.waits += 1
        if callable(self.meanwhile):
            await self.meanwhile()


def make(clock: Clock, *, available: bool = True, coordinator: object = None) -> FillEngine:
    cache = Cache(
        Keys("t"),
        Tier(max_entries=100, max_bytes=1 << 20, clock=clock),
        fresh_ttl=100,
        stale_ttl=1000,
        negative_ttl=30,
        clock=clock,
    )
    return FillEngine(
        cache,
        coordinator=coordinator,  # type: ignore[arg-type]
        upstream_available=lambda: available,
        refresh_ahead=0.1,
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_miss_then_hit_then_refresh_ahead_then_stale() -> None:
    clock = Clock()
    engine = make(clock)
    run = Counting(engine.cache, {"k": b"1"})
    fill = Fill("f", "k", run)
    served = await engine.serve("k", fill)
    assert served.outcome == Outcome("miss", stored=True) and served.entry.body == b"1"
    clock.now += 50
    served = await engine.serve("k", fill)
    assert served.outcome == Outcome("hit", 50.0) and served.age == 50.0 and run.runs == 1
    clock.now += 45  # 5 s of freshness left: below 10 % of the TTL, refreshed ahead
    served = await engine.serve("k", fill)
    assert served.outcome.result == "hit"
    await settle()
    assert run.runs == 2
    clock.now += 150  # stale now (stored 150 s ago, fresh for 100)
    served = await engine.serve("k", fill)
    assert served.outcome == Outcome("stale", -50.0, detail="stale-while-revalidate")
    await settle()
    assert run.runs == 3
    assert (await engine.serve("k", fill)).outcome.result == "hit"


async def test_stale_if_error_while_upstream_is_held_back_and_failed_refresh_keeps_entry() -> None:
    clock = Clock()
    engine = make(clock, available=False)
    run = Counting(engine.cache, {"k": b"good"})
    await engine.fetch("k", Fill("f", "k", run))
    clock.now += 200
    served = await engine.serve("k", Fill("f", "k", run))
    assert served.outcome.detail == "stale-if-error" and served.entry.body == b"good"
    await settle()
    assert run.runs == 1  # upstream held back: no refresh was even tried
    healthy = make(clock)
    healthy.cache = engine.cache
    run.fail = UpstreamError("boom")
    served = await healthy.serve("k", Fill("f", "k", run))
    await settle()
    assert run.runs == 2 and served.entry.body == b"good"
    assert (await healthy.serve("k", Fill("f", "k", run))).entry.body == b"good"


async def test_concurrent_misses_collapse_into_one_run_and_count_exactly() -> None:
    clock = Clock()
    engine = make(clock)
    gate = asyncio.Event()
    run = Counting(engine.cache, {"k": b"x"}, gate=gate)
    fill = Fill("f", "k", run)
    requests = [asyncio.create_task(engine.serve("k", fill)) for _ in range(50)]
    await settle()
    gate.set()
    served = await asyncio.gather(*requests)
    assert run.runs == 1
    collapsed = [s.outcome.collapsed for s in served]
    assert collapsed.count(False) == 1 and collapsed.count(True) == 49


async def test_negative_entries_and_missing_keys() -> None:
    clock = Clock()
    engine = make(clock)
    run = Counting(engine.cache, {"gone": b""})
    run.missing = True
    with pytest.raises(NotFound) as first:
        await engine.serve("gone", Fill("f", "gone", run))
    assert first.value.outcome == Outcome("miss", stored=True)
    clock.now += 10
    with pytest.raises(NotFound) as again:
        await engine.serve("gone", Fill("f", "gone", run))
    assert again.value.outcome == Outcome("negative_hit", 20.0, detail="negative")
    assert run.runs == 1
    clock.now += 25  # the negative entry lived its 30 s
    with pytest.raises(NotFound):
        await engine.serve("gone", Fill("f", "gone", run))
    assert run.runs == 2
    # A fill that ran here and did not write the key: the upstream has no such thing.
    other = Counting(engine.cache, {"a": b"1"})
    with pytest.raises(NotFound):
        await engine.serve("b", Fill("g", "a", other))


async def test_another_replica_fills_and_a_dead_holder_ends_in_503() -> None:
    clock = Clock()

    async def other_replica_writes() -> None:
        await engine.cache.put_many({"k": b"theirs"}, stored_at=clock())

    coordinator = Locked(other_replica_writes)
    engine = make(clock, coordinator=coordinator)
    run = Counting(engine.cache, {"k": b"ours"})
    served = await engine.serve("k", Fill("f", "k", run))
    assert served.entry.body == b"theirs" and served.outcome.collapsed and run.runs == 0
    dead = make(clock, coordinator=Locked())
    with pytest.raises(UpstreamUnavailable) as refused:
        await dead.serve("k2", Fill("f2", "k2", Counting(dead.cache, {"k2": b"x"})))
    assert refused.value.retry_after == 1 and refused.value.outcome is not None


async def test_the_lock_winner_rechecks_the_probe() -> None:
    clock = Clock()
    engine = make(clock)
    await engine.cache.put_many({"probe": b"fresh"}, stored_at=clock())
    run = Counting(engine.cache, {"probe": b"new", "k": b"new"})
    filled = await engine._lead(Fill("f", "probe", run))
    assert filled.remote and run.runs == 0
    clock.now += 95  # in the refresh-ahead window: not "recently filled" any more
    assert not (await engine._lead(Fill("f", "probe", run))).remote and run.runs == 1
    satisfied = Fill("f", "probe", run, satisfied=lambda lookup: lookup.ttl > 100)
    assert not (await engine._lead(satisfied)).remote


async def test_admission_refuses_or_fetches_itself() -> None:
    clock = Clock()
    engine = make(clock)
    run = Counting(engine.cache, {"k": b"x"})

    async def refuse() -> Outcome | None:
        raise NotFound("unknown", outcome=Outcome("negative_hit", 3, detail="negative"))

    with pytest.raises(NotFound):
        await engine.serve("k", Fill("f", "k", run), admit=refuse)
    assert run.runs == 0

    async def fetch_elsewhere() -> Outcome | None:
        await engine.cache.put_many({"k": b"by-admission"}, stored_at=clock())
        return Outcome("miss", collapsed=True, stored=True)

    served = await engine.serve("k", Fill("f", "k", run), admit=fetch_elsewhere)
    assert served.entry.body == b"by-admission" and served.outcome.collapsed and run.runs == 0


async def test_join_waits_for_the_probe_and_close_cancels_fetches() -> None:
    clock = Clock()
    engine = make(clock)
    run = Counting(engine.cache, {"p": b"x"})
    assert await engine.join(Fill("f", "p", run)) == Outcome("miss", stored=True)
    gate = asyncio.Event()
    slow = Counting(engine.cache, {"q": b"x"}, gate=gate)
    engine.refresh(Fill("slow", "q", slow))
    await settle()
    assert engine.running("slow")
    await engine.close()
    assert not engine.running("slow")


def test_entries_are_equal_by_content_not_by_memo() -> None:
    one, two = Entry(b"a", 1.0, "e"), Entry(b"a", 1.0, "e")
    one.memo["headers"] = object()
    assert one == two
