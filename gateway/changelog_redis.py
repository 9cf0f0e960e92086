"""The change log on Redis, shared by every replica of an account (see `changelog.py`).

    cpgw:v2:{<ns>:changes}:etags   hash: site id -> ETag of the recorded content
    cpgw:v2:{<ns>:changes}:ages    sorted set: site id scored by that content's fetch time
    cpgw:v2:{<ns>:changes}:stream  the events (fields k: kind, d: JSON without the id),
                                   trimmed to exactly GATEWAY_CHANGES_RETENTION entries
    cpgw:v2:{<ns>:changes}:floor   the log holds every event after this id: the baseline's
                                   id, then the newest id trimmed away

All four share one hash tag, so each script below runs on one Cluster node.  `_RECORD` is the
compare-and-append: for each site it compares the recorded ETag and fetch time with what the
fill stored and appends at most one event, atomically, so replicas racing to store the same
content append one event between them; it trims the stream itself and moves the floor past
what it trimmed.  `_READ` answers a page with the floor, which decides a reset.

(Redis' own `max-deleted-entry-id` would not do: trimming does not move it.)

`follow` is the blocking read (XREAD BLOCK) for the per-process fan-out; it runs on its own
`RedisStore`, whose socket timeout exceeds the block time, so it never holds one of the
pooled connections the request path uses.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from .changelog import ORIGIN, Event, EventId, Page, Record, Recorded
from .keys import Keys
from .store import RedisStore

RECORDS_PER_CALL = 200

_RECORD = """
local floor = redis.call('GET', KEYS[4])
local quiet = not floor
if quiet and ARGV[2] == '1' then
  local clock = redis.call('TIME')
  local ms = clock[1] .. string.format('%03d', math.floor(tonumber(clock[2]) / 1000))
  redis.call('SET', KEYS[4], ms .. '-0')
end
local appended = {}
for i = 3, #ARGV, 7 do
  local site, expected, etag = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local stored_at = tonumber(ARGV[i + 3])
  local current = redis.call('HGET', KEYS[1], site)
  local newest = tonumber(redis.call('ZSCORE', KEYS[2], site))
  local kind, changes = nil, '[]'
  if newest and newest > stored_at then
    kind = nil  -- a newer copy is recorded already: this one tells nothing new
  elseif etag == '' then
    if current then
      redis.call('HDEL', KEYS[1], site)
      redis.call('ZREM', KEYS[2], site)
      kind = 'site.deleted'
    end
  else
    redis.call('ZADD', KEYS[2], ARGV[i + 3], site)
    if current ~= etag then
      redis.call('HSET', KEYS[1], site, etag)
      if not current then
        kind = 'site.created'
      else
        kind = 'site.updated'
        if current == expected and ARGV[i + 6] ~= '' then
          changes = ARGV[i + 6]
        else
          changes = '[],"truncated":true'
        end
      end
    end
  end
  if kind and not quiet then
    local etag_json = 'null'
    if etag ~= '' then etag_json = '"' .. etag .. '"' end
    local body = ARGV[i + 4] .. ',"kind":"' .. kind .. '","at":' .. ARGV[i + 5] ..
      ',"etag":' .. etag_json .. ',"changes":' .. changes .. '}'
    local id = redis.call('XADD', KEYS[3], '*', 'k', kind, 'd', body)
    local excess = redis.call('XLEN', KEYS[3]) - tonumber(ARGV[1])
    if excess > 0 then
      local gone = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', excess)
      redis.call('XTRIM', KEYS[3], 'MAXLEN', ARGV[1])
      redis.call('SET', KEYS[4], gone[#gone][1])
    end
    appended[#appended + 1] = id
    appended[#appended + 1] = kind
  end
end
return appended
"""

_RECORDED = """
local floor = redis.call('GET', KEYS[2])
local values
if #ARGV == 0 then
  values = redis.call('HGETALL', KEYS[1])
else
  values = redis.call('HMGET', KEYS[1], unpack(ARGV))
end
return {floor and 1 or 0, values}
"""

_READ = """
local floor = redis.call('GET', KEYS[2]) or ''
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local oldest = ''
if first[1] then oldest = first[1][1] end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {floor, oldest, entries}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _event(entry: Any) -> Event:
    raw_id, fields = entry
    if isinstance(fields, dict):
        values = {_text(k): v for k, v in fields.items()}
    else:
        values = {_text(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
    return Event.stored(EventId.parse(_text(raw_id)), _text(values["k"]), bytes(values["d"]))


class RedisChangeLog:
    def __init__(
        self,
        store: RedisStore,
        keys: Keys,
        *,
        retention: int,
        follower: RedisStore | None = None,
    ) -> None:
        self._store = store
        self._follower = follower or store
        self._keys = keys
        self._retention = retention

    def _eval(self, operation: str, script: str, keys: list[str], args: Sequence[Any]) -> Any:
        client = self._store.client
        return self._store.call(operation, lambda: client.eval(script, len(keys), *keys, *args))

    async def recorded(self, site_ids: Collection[str] | None = None) -> Recorded:
        keys = self._keys
        wanted = [] if site_ids is None else list(site_ids)
        if site_ids is not None and not wanted:
            return Recorded({}, True)
        baseline, values = await self._eval(
            "changes_recorded", _RECORDED, [keys.changes_etags, keys.changes_floor], wanted
        )
        if site_ids is None:
            pairs = zip(values[::2], values[1::2], strict=True)
        else:
            pairs = zip(wanted, values, strict=True)
        etags = {_text(site): _text(etag) for site, etag in pairs if etag is not None}
        return Recorded(etags, bool(int(baseline)))

    async def record(
        self, records: Sequence[Record], *, baseline: bool
    ) -> list[tuple[EventId, str]]:
        keys = self._keys
        names = [keys.changes_etags, keys.changes_ages, keys.changes_stream, keys.changes_floor]
        appended: list[tuple[EventId, str]] = []
        for start in range(0, len(records), RECORDS_PER_CALL):
            args: list[Any] = [self._retention, "1" if baseline else "0"]
            for record in records[start : start + RECORDS_PER_CALL]:
                args += [
                    record.site_id,
                    record.expected or "",
                    record.etag or "",
                    repr(record.stored_at),
                    record.prefix,
                    record.at,
                    b"" if record.changes is None else record.changes,
                ]
            result = await self._eval("changes_record", _RECORD, names, args)
            appended += [
                (EventId.parse(_text(result[i])), _text(result[i + 1]))
                for i in range(0, len(result), 2)
            ]
        return appended

    async def read(self, after: EventId, limit: int) -> Page:
        keys = self._keys
        floor, oldest, entries = await self._eval(
            "changes_read",
            _READ,
            [keys.changes_stream, keys.changes_floor],
            [str(after), limit],
        )
        floor_text, oldest_text = _text(floor), _text(oldest)
        vouched = EventId.parse(floor_text) if floor_text else ORIGIN
        reset = after != ORIGIN and (not floor_text or after < vouched)
        events = [_event(entry) for entry in entries]
        oldest_id = EventId.parse(oldest_text) if oldest_text else None
        return Page(events, reset, oldest_id, vouched)

    async def follow(self, after: EventId, wait: float) -> list[Event]:
        follower = self._follower
        stream = self._keys.changes_stream
        answer = await follower.call(
            "changes_follow",
            lambda: follower.client.xread(
                {stream: str(after)}, count=1000, block=max(1, int(wait * 1000))
            ),
        )
        if not answer:
            return []
        (_, entries), *_ = answer  # [[stream, [(id, fields), …]]]: one stream asked
        return [_event(entry) for entry in entries]

    async def last_id(self) -> EventId:
        stream = self._keys.changes_stream
        client = self._store.client
        found = await self._store.call(
            "changes_last", lambda: client.xrevrange(stream, "+", "-", count=1)
        )
        return EventId.parse(_text(found[0][0])) if found else ORIGIN

    async def oldest(self, count: int) -> list[tuple[str, float]]:
        ages = self._keys.changes_ages
        client = self._store.client
        found = await self._store.call(
            "changes_oldest", lambda: client.zrange(ages, 0, count - 1, withscores=True)
        )
        return [(_text(site), float(score)) for site, score in found]

    async def tracked(self) -> int:
        ages = self._keys.changes_ages
        client = self._store.client
        count: int = await self._store.call("changes_tracked", lambda: client.zcard(ages))
        return count

    async def close(self) -> None:
        if self._follower is not self._store:
            await self._follower.close()
