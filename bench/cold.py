"""Cold keys: what a miss costs on top of the upstream's own latency, and the first fill of
a large fleet (500 sites x 200 connectors) on a Redis this benchmark starts itself.

Miss path: the simulator answers every request after `Plan.miss_latency`.  One client,
one request at a time on a keep-alive session, first asks the simulator directly (signed)
for `Plan.miss_samples` sites, then asks a fresh gateway for the same sites, purging the
site from the gateway's cache (`POST /admin/purge {"site_id": …}`, untimed) before each
request, so every answer is a cold key.  (A purge of everything would also drop the fleet
list, and the known-id gate then refreshes the list before any site: that measures the
list, not a miss.)  Only answers that say `fwd=miss` count as misses; the latency the
gateway adds is the difference of the two distributions at p50 and at p99, and the
simulator's call log says which upstream calls a miss made.

Fleet: time to the first (cold) `/connectors` answer, the gateway's VmRSS after it, every
connector reached by paging (against a count taken from the upstream's own answer), and
whether the gateway logged losing Redis or counted Redis errors.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from common import API_KEY, API_SECRET, HOST, percentile_ms
from model import Plan, Row
from procs import Processes, cpu_seconds, rss_kib
from services import (
    MEASURING_ENV,
    counter_by_label,
    http_get,
    start_gateway,
    start_redis,
    start_simulator,
)
from upstream_auth import signed_headers

REQUEST_TIMEOUT = 60.0
ADMIN_TOKEN = "bench-admin-token"
PAGING_TIME_CAP = 600.0
UPSTREAM = "/rest/v1"


async def _timed_gets(
    urls: list[str],
    headers: Callable[[str], dict[str, str]],
    before_each: Callable[[aiohttp.ClientSession, str], Awaitable[None]] | None = None,
) -> list[tuple[float, int, str]]:
    """GET each URL in turn on one keep-alive session, after `before_each` (untimed):
    (seconds, status, Cache-Status) each."""
    results: list[tuple[float, int, str]] = []
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for url in urls:
            if before_each is not None:
                await before_each(session, url)
            sent = time.perf_counter()
            try:
                async with session.get(url, headers=headers(url)) as response:
                    await response.read()
                    status, cache = response.status, response.headers.get("Cache-Status", "")
            except (aiohttp.ClientError, TimeoutError):
                status, cache = 0, ""
            results.append((time.perf_counter() - sent, status, cache))
    return results


def _upstream_sites(upstream_port: int) -> list[dict[str, Any]]:
    path = f"{UPSTREAM}/sites"
    answer = http_get(f"http://{HOST}:{upstream_port}{path}",
                      signed_headers(API_KEY, API_SECRET, path))  # fmt: skip
    if answer.status != 200:
        raise RuntimeError(f"the simulator answered {answer.status} to a signed GET {path}")
    sites = orjson.loads(answer.body)
    return list(sites if isinstance(sites, list) else next(iter(sites.values())))


def _upstream_calls(upstream_port: int) -> Counter[str]:
    """The simulator's call log by endpoint (`/sites`, `/sites/{id}`)."""
    stats = orjson.loads(http_get(f"http://{HOST}:{upstream_port}/_sim/stats").body)
    calls: Counter[str] = Counter()
    for path, count in stats["by_path"].items():
        endpoint = urlsplit(path).path.removeprefix(UPSTREAM)
        calls["/sites" if endpoint == "/sites" else "/sites/{id}"] += count
    return calls


async def _purge(session: aiohttp.ClientSession, base: str, site_id: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"site_id": site_id}
    async with session.post(f"{base}/admin/purge", json=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"purge answered {response.status}: {await response.text()}")


def miss_rows(procs: Processes, plan: Plan) -> list[Row]:
    upstream = start_simulator(procs, "simulator-miss", sites=plan.miss_sites,
                               connectors=plan.connectors_per_site, latency=plan.miss_latency,
                               cpus=plan.cpus.client, source=plan.source)  # fmt: skip
    ids = [str(site["id"]) for site in _upstream_sites(upstream)]
    sample_ids = [ids[i % len(ids)] for i in range(plan.miss_samples)]

    def signed(url: str) -> dict[str, str]:
        return signed_headers(API_KEY, API_SECRET, urlsplit(url).path)

    direct_urls = [f"http://{HOST}:{upstream}{UPSTREAM}/sites/{i}" for i in sample_ids]
    direct = asyncio.run(_timed_gets(direct_urls, signed))
    settings = {**MEASURING_ENV, "GATEWAY_LOG_LEVEL": plan.log_level,
                "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN}  # fmt: skip
    gateway, base = start_gateway(procs, "gateway-miss", upstream_port=upstream,
                                  settings=settings, cpus=plan.cpus.server,
                                  source=plan.source)  # fmt: skip
    http_get(f"{base}/sites/{ids[0]}")  # opens the upstream connection pool; not measured
    calls_before = _upstream_calls(upstream)

    async def purge(session: aiohttp.ClientSession, url: str) -> None:
        await _purge(session, base, url.rsplit("/", 1)[1])

    urls = [f"{base}/sites/{i}" for i in sample_ids]
    through = asyncio.run(_timed_gets(urls, lambda _: {}, purge))
    calls = _upstream_calls(upstream) - calls_before
    procs.stop(gateway)
    procs.stop_named("simulator-miss")

    own = sorted(seconds for seconds, status, _ in direct if status == 200)
    misses = sorted(
        seconds
        for seconds, status, cache in through
        if status == 200 and "fwd=miss" in cache and "collapsed" not in cache
    )
    label = f"{plan.miss_latency * 1000:g} ms latency, fleet of {len(ids)}"
    upstream_row = Row(
        key="upstream-miss", kind="upstream",
        label=f"upstream alone ({label}): signed GET /rest/v1/sites/{{id}}",
        requests=len(direct), errors=len(direct) - len(own), p50_ms=percentile_ms(own, 0.5),
        p99_ms=percentile_ms(own, 0.99), tool="aiohttp", notes="one at a time",
    )  # fmt: skip
    row = Row(
        key="gateway-miss", kind="miss",
        label="gateway, 1 worker: cold GET /sites/{id} (that site purged before each)",
        requests=len(through), errors=sum(status != 200 for _, status, _ in through),
        p50_ms=percentile_ms(misses, 0.5), p99_ms=percentile_ms(misses, 0.99), tool="aiohttp",
    )  # fmt: skip
    added = {
        "p50": percentile_ms(misses, 0.5) - percentile_ms(own, 0.5),
        "p99": percentile_ms(misses, 0.99) - percentile_ms(own, 0.99),
    }
    per_miss = {endpoint: round(n / max(1, len(through)), 2) for endpoint, n in calls.items()}
    row.details = {"misses": len(misses), "not_misses": len(through) - len(misses),
                   "added_p50_ms": round(added["p50"], 3),
                   "added_p99_ms": round(added["p99"], 3),
                   "upstream_calls_per_request": per_miss}  # fmt: skip
    row.ratio = f"{added['p50']:+.2f} ms p50, {added['p99']:+.2f} ms p99"
    made = ", ".join(f"GET {e} x{n:g}" for e, n in sorted(per_miss.items())) or "none"
    row.notes = f"{len(misses)} of {len(through)} answers were misses; upstream calls each: {made}"
    return [upstream_row, row]


def _count_connectors(sites: list[dict[str, Any]]) -> int:
    """Connectors in the upstream's own fuse trees (an explicit stack: trees can be deep)."""
    total = 0
    stack: list[Any] = [node for site in sites for node in site.get("fuse_tree") or []]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            total += len((node.get("parameters") or {}).get("connectors") or [])
            stack.extend(node.get("children") or [])
    return total


def _page_through(base: str, limit: int, max_pages: int) -> dict[str, Any]:
    """Follow `next_cursor` from the first page: pages, connectors, distinct ids."""
    path: str | None = f"/connectors?limit={limit}"
    pages, total = 0, 0
    seen: set[str] = set()
    stop_at = time.monotonic() + PAGING_TIME_CAP
    while path is not None and pages < max_pages and time.monotonic() < stop_at:
        answer = http_get(base + path)
        if answer.status != 200:
            raise RuntimeError(f"GET {path} answered {answer.status}: {answer.body[:300]!r}")
        body = orjson.loads(answer.body)
        pages += 1
        total += len(body["data"])
        seen.update(str(connector["id"]) for connector in body["data"])
        cursor = body.get("next_cursor")
        path = None if cursor is None else f"/connectors?limit={limit}&cursor={cursor}"
    return {"pages": pages, "connectors": total, "distinct_ids": len(seen),
            "complete": path is None}  # fmt: skip


def _redis_log_events(log_text: str) -> list[str]:
    """Log lines in which the gateway reports losing Redis or a Redis error, shortened to
    `LEVEL msg operation=... error=...`."""
    events = []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = {"msg": line, "level": "?"}
        if not isinstance(record, dict):
            continue
        message = str(record.get("msg", ""))
        level = str(record.get("level", "")).upper()
        fields = " ".join(f"{k}={record[k]}" for k in ("operation", "error") if k in record)
        if "redis" in f"{message} {fields}".lower() and level in ("WARNING", "ERROR", "?"):
            events.append(f"{level} {message} {fields}".strip()[:200])
    return events


def fleet_row(procs: Processes, plan: Plan) -> Row:
    redis_url = start_redis(procs, "redis-fleet")
    upstream = start_simulator(procs, "simulator-fleet", sites=plan.fleet_sites,
                               connectors=plan.fleet_connectors,
                               cpus=plan.cpus.client, source=plan.source)  # fmt: skip
    sites = _upstream_sites(upstream)
    expected = {"sites": len(sites), "connectors": _count_connectors(sites)}
    del sites
    # No fleet refresher: the first request must meet a cold cache, and its fill the CPU alone.
    settings = {"REDIS_URL": redis_url, "GATEWAY_SHUTDOWN_DELAY": "0",
                "GATEWAY_REFRESH_SHARE": "0", "GATEWAY_LOG_LEVEL": plan.log_level}  # fmt: skip
    gateway, base = start_gateway(procs, "gateway-fleet", upstream_port=upstream,
                                  settings=settings, cpus=plan.cpus.server,
                                  source=plan.source)  # fmt: skip
    rss_before, cpu_before = rss_kib(gateway.pid), cpu_seconds(gateway.pid)
    started = time.perf_counter()
    first = http_get(f"{base}/connectors?limit={plan.fleet_page_limit}")
    first_seconds = time.perf_counter() - started
    rss_after, fill_cpu = rss_kib(gateway.pid), cpu_seconds(gateway.pid) - cpu_before
    cold = first.headers.get("cache-status", "")
    pages = _page_through(base, plan.fleet_page_limit,
                          expected["connectors"] // plan.fleet_page_limit + 10)  # fmt: skip
    readiness = http_get(f"{base}/readyz")
    redis_errors = counter_by_label(base, "gateway_redis_errors", "operation")
    procs.stop(gateway)
    events = _redis_log_events(procs.log_path("gateway-fleet").read_text(errors="replace"))
    procs.stop_named("simulator-fleet")
    procs.stop_named("redis-fleet")

    reachable = (
        pages["complete"] and pages["distinct_ids"] == pages["connectors"] == expected["connectors"]
    )
    details = {
        "expected": expected, "first_status": first.status, "first_cache_status": cold,
        "first_answer_seconds": round(first_seconds, 3),
        "gateway_cpu_seconds_during_fill": round(fill_cpu, 2), "rss_kib_before": rss_before,
        "rss_kib_after": rss_after, "paging": pages, "all_connectors_reachable": reachable,
        "redis_errors_by_operation": redis_errors, "redis_log_events": events,
        "readyz": orjson.loads(readiness.body) if readiness.status == 200 else readiness.status,
    }  # fmt: skip
    mib = rss_after.get("VmRSS", 0) / 1024
    notes = (
        f"first answer {first_seconds:.2f} s ({fill_cpu:.2f} s gateway CPU; {first.status}, "
        f"{cold or 'no Cache-Status'}); "
        f"VmRSS {mib:,.0f} MiB after it (peak {rss_after.get('VmHWM', 0) / 1024:,.0f}); "
        f"{pages['distinct_ids']:,}/{expected['connectors']:,} connectors in {pages['pages']} "
        f"pages{'' if reachable else ' (NOT all reachable)'}; Redis: "
        + ("no error logged or counted" if not events and not redis_errors
           else f"{'; '.join(events) or 'nothing logged'}; errors counted: "
                + (", ".join(f"{op} {n:g}" for op, n in redis_errors.items()) or "none"))
    )  # fmt: skip
    return Row(
        key="fleet", kind="fleet", workers=1, path=f"/connectors?limit={plan.fleet_page_limit}",
        label=f"gateway + Redis, fleet {plan.fleet_sites} x {plan.fleet_connectors}: cold "
        f"GET /connectors?limit={plan.fleet_page_limit}",
        body_bytes=len(first.body), notes=notes, details=details,
    )  # fmt: skip
