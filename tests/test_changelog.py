"""The change log's compare-and-append, paging, resets and fan-out reads, for both
implementations: the in-process ring and the Redis stream (a real redis-server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from gateway.changelog import ORIGIN, ChangeLog, EventId, MemoryChangeLog, Record
from gateway.changelog_redis import RedisChangeLog
from gateway.keys import Keys
from gateway.store import RedisStore, redis_client

MakeLog = Callable[..., ChangeLog]


@pytest.fixture(params=["memory", "redis"])
async def make_log(request: pytest.FixtureRequest) -> AsyncIterator[MakeLog]:
    """A factory of change logs; with Redis, every log made shares one namespace (replicas)."""
    stores: list[RedisStore] = []

    def make(retention: int = 100) -> ChangeLog:
        if request.param == "memory":
            return MemoryChangeLog(retention=retention)
        url = request.getfixturevalue("redis_url")
        store = RedisStore(redis_client(url, timeout=2.0))
        follower = RedisStore(redis_client(url, timeout=5.0))
        stores.extend((store, follower))
        return RedisChangeLog(store, Keys("t"), retention=retention, follower=follower)

    yield make
    for store in stores:
        await store.close()


def record(
    site_id: str,
    etag: str | None,
    *,
    expected: str | None = None,
    at: float = 1000.0,
    changes: bytes | None = b"[]",
) -> Record:
    return Record(site_id, expected, etag, at, b'{"site_id":' + orjson.dumps(site_id),
                  b'"2024-05-02T12:00:00.000Z"', changes)  # fmt: skip


async def baseline(log: ChangeLog, *sites: str) -> None:
    assert await log.record([record(s, f"{s}-v1") for s in sites], baseline=True) == []


async def test_the_baseline_appends_nothing_then_changes_are_events(make_log: MakeLog) -> None:
    log = make_log()
    # Before any fleet list, a site fill records quietly (and sets no baseline).
    assert await log.record([record("a", "a-v0")], baseline=False) == []
    assert (await log.recorded()).baseline is False
    await baseline(log, "a", "b")
    recorded = await log.recorded()
    assert recorded.baseline and recorded.etags == {"a": "a-v1", "b": "b-v1"}
    assert (await log.recorded(["b", "zzz"])).etags == {"b": "b-v1"}
    changed = b'[{"path":"name","before":"x","after":"y"}]'
    appended = await log.record(
        [
            record("a", "a-v1", at=1001),  # same content: only its fetch time moves
            record("b", "b-v2", expected="b-v1", at=1001, changes=changed),
            record("c", "c-v1", at=1001),
        ],
        baseline=True,
    )
    assert [kind for _, kind in appended] == ["site.updated", "site.created"]
    page = await log.read(ORIGIN, 10)
    assert [event.id for event in page.events] == [event_id for event_id, _ in appended]
    assert not page.reset and page.oldest == appended[0][0]
    updated, created = (orjson.loads(event.data) for event in page.events)
    assert updated == {
        "id": str(appended[0][0]),
        "site_id": "b",
        "kind": "site.updated",
        "at": "2024-05-02T12:00:00.000Z",
        "etag": "b-v2",
        "changes": [{"path": "name", "before": "x", "after": "y"}],
    }
    assert created["kind"] == "site.created" and created["changes"] == []
    assert "truncated" not in created
    assert await log.oldest(3) == [("a", 1001.0), ("b", 1001.0), ("c", 1001.0)]
    assert await log.tracked() == 3


async def test_deleted_only_when_recorded_and_not_older_than_the_record(
    make_log: MakeLog,
) -> None:
    log = make_log()
    await baseline(log, "a", "b")
    assert await log.record([record("zzz", None, at=1001)], baseline=False) == []
    assert await log.record([record("a", None, at=999)], baseline=False) == []  # older news
    (_, kind), *rest = await log.record([record("a", None, at=1001)], baseline=False)
    assert kind == "site.deleted" and rest == []
    event = orjson.loads((await log.read(ORIGIN, 10)).events[-1].data)
    assert event["etag"] is None and event["changes"] == []
    assert (await log.recorded()).etags == {"b": "b-v1"}
    assert await log.tracked() == 1
    # It comes back: created again.
    assert [k for _, k in await log.record([record("a", "a-v3", at=1002)], baseline=True)] == [
        "site.created"
    ]


async def test_a_diff_against_another_base_is_not_trusted(make_log: MakeLog) -> None:
    log = make_log()
    await baseline(log, "a")
    # Computed against a-v0, but a-v1 is what is recorded: the changes are unknown.
    await log.record([record("a", "a-v2", expected="a-v0", at=1001, changes=b'[{"x":1}]')],
                     baseline=False)  # fmt: skip
    # Not computed at all (the previous content was not cached): unknown too.
    await log.record([record("a", "a-v3", expected="a-v2", at=1002, changes=None)], baseline=False)
    # More than 100 changes: the recorder says so in the changes it passes.
    await log.record(
        [record("a", "a-v4", expected="a-v3", at=1003, changes=b'[{"p":1}],"truncated":true')],
        baseline=False,
    )
    events = [orjson.loads(e.data) for e in (await log.read(ORIGIN, 10)).events]
    assert [(e["changes"], e.get("truncated")) for e in events] == [
        ([], True),
        ([], True),
        ([{"p": 1}], True),
    ]


async def test_replicas_racing_to_record_the_same_content_append_one_event(
    make_log: MakeLog,
) -> None:
    replicas = [make_log() for _ in range(5)]
    await baseline(replicas[0], "a")
    if isinstance(replicas[0], MemoryChangeLog):
        replicas = [replicas[0]] * 5  # one process: its fills share one log
    changed = b'[{"path":"name","before":"x","after":"y"}]'
    appended = await asyncio.gather(
        *(
            log.record(
                [record("a", "a-v2", expected="a-v1", at=1001 + n / 100, changes=changed)],
                baseline=False,
            )
            for n, log in enumerate(replicas)
        )
    )
    assert sorted(len(found) for found in appended) == [0, 0, 0, 0, 1]
    assert len((await replicas[-1].read(ORIGIN, 10)).events) == 1
    # The newest fetch time is what remains recorded, whoever won.
    assert await replicas[1].oldest(1) == [("a", 1001.04)]


async def test_ids_increase_and_are_the_same_for_every_reader(make_log: MakeLog) -> None:
    writer, reader = make_log(), make_log()
    await baseline(writer, "a")
    ids: list[EventId] = []
    for n in range(2, 12):
        for event_id, _ in await writer.record(
            [record("a", f"a-v{n}", at=1000 + n)], baseline=False
        ):
            ids.append(event_id)
    assert ids == sorted(ids) and len(set(ids)) == 10
    if isinstance(writer, RedisChangeLog):
        reader_page = await reader.read(ORIGIN, 100)
        assert [e.id for e in reader_page.events] == ids
    assert await writer.last_id() == ids[-1]
    page = await writer.read(ids[3], 4)
    assert [e.id for e in page.events] == ids[4:8] and not page.reset


async def test_retention_trims_and_older_positions_are_reset(make_log: MakeLog) -> None:
    log = make_log(retention=3)
    await baseline(log, "a")
    ids = []
    for n in range(2, 8):
        ids += [
            i for i, _ in await log.record([record("a", f"a-v{n}", at=1000 + n)], baseline=False)
        ]
    page = await log.read(ORIGIN, 10)  # 0: from the oldest held, never a reset
    assert [e.id for e in page.events] == ids[-3:] and not page.reset
    stale = await log.read(ids[1], 10)  # ids[2] was trimmed: it may have been missed
    assert stale.reset and [e.id for e in stale.events] == ids[-3:]
    assert stale.vouched == ids[2] and stale.oldest == ids[3]
    assert not (await log.read(ids[2], 10)).reset  # every event after ids[2] is held
    before_baseline = await log.read(EventId(1, 0), 10)  # older than the log's floor
    assert before_baseline.reset


async def test_a_log_without_baseline_resets_any_position(make_log: MakeLog) -> None:
    log = make_log()
    assert (await log.read(EventId(5, 0), 10)).reset
    assert not (await log.read(ORIGIN, 10)).reset


async def test_follow_returns_new_events_as_they_are_appended(make_log: MakeLog) -> None:
    log = make_log()
    await baseline(log, "a")
    start = await log.last_id()
    assert await log.follow(start, 0.05) == []
    waiting = asyncio.create_task(log.follow(start, 5))
    await asyncio.sleep(0.1)  # a while to show it does NOT end: nothing to await
    assert not waiting.done()
    (event_id, _), *_ = await log.record([record("a", "a-v2", at=1001)], baseline=False)
    events = await asyncio.wait_for(waiting, 2)
    assert [e.id for e in events] == [event_id]


def test_event_ids_parse_and_print() -> None:
    assert EventId.parse("1714650000000-3") == EventId(1714650000000, 3)
    assert EventId.parse("17") == EventId(17, 0) and str(EventId(17, 0)) == "17-0"
    assert EventId.parse("0") == ORIGIN
    for bad in ("", "-1", "1-", "a-1", "1-2-3", "1" * 21, "18446744073709551616-0", "1 2"):
        with pytest.raises(ValueError):
            EventId.parse(bad)
