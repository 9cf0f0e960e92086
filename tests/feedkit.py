"""Helpers for the change feed tests: gateways with short feed timings, a Server-Sent Events
reader, fills run on demand, and paths into a normalized site."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.app_keys import SERVICE
from gateway.changefeed import FeedTuning
from gateway.metrics import Metrics
from gateway.settings import Settings

FAST = FeedTuning(heartbeat=0.3, lease_ttl=1.0, follow_block=0.2)
SSE = {"Accept": "text/event-stream"}
MakeClient = Callable[..., Awaitable[TestClient]]


async def feed_gateway(
    aiohttp_client: MakeClient,
    settings: Settings,
    *,
    tuning: FeedTuning = FAST,
    metrics: Metrics | None = None,
) -> TestClient:
    app = create_app(settings, metrics=metrics, tuning=tuning)
    return await aiohttp_client(app, server_kwargs={"host": "127.0.0.1"})


@dataclass
class Frame:
    """One SSE event, or a comment line (`comment` set)."""

    id: str | None = None
    event: str | None = None
    data: str = ""
    comment: str | None = None
    fields: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return orjson.loads(self.data)


async def frames(response: ClientResponse, count: int, *, timeout: float = 5.0) -> list[Frame]:
    """The next `count` frames (events and comments) of an open stream."""
    found: list[Frame] = []
    current = Frame()
    async with asyncio.timeout(timeout):
        while len(found) < count:
            raw = await response.content.readline()
            if not raw:
                raise AssertionError(f"the stream ended after {found}")
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith(":"):
                found.append(Frame(comment=line[1:].strip()))
                continue
            if line == "":
                if current.fields:
                    found.append(current)
                current = Frame()
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            current.fields.append(name)
            if name == "data":
                current.data += value
            elif name in ("id", "event"):
                setattr(current, name, value)
    return found


async def events(response: ClientResponse, count: int, *, timeout: float = 5.0) -> list[Frame]:
    """The next `count` events of an open stream, comments skipped, within `timeout` in all
    (keep-alive comments must not keep a test waiting for an event that never comes)."""
    found: list[Frame] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                frame = (await frames(response, 1, timeout=timeout))[0]
                if frame.comment is None:
                    found.append(frame)
    except TimeoutError:
        raise AssertionError(f"{len(found)} of {count} events in {timeout} s: {found}") from None
    return found


async def listed(client: TestClient, after: str = "0") -> list[dict[str, Any]]:
    response = await client.get(f"/changes?after={after}&limit=1000")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["next_cursor"] is None
    return list(body["data"])


async def fill_site(client: TestClient, site_id: str) -> None:
    """Fetch and store one site now (as a client miss would, without the fetch lock)."""
    await client.app[SERVICE].filler.fill_site(site_id)


async def fill_fleet(client: TestClient) -> None:
    await client.app[SERVICE].filler.fill_fleet()


def node_path(site: dict[str, Any], name: str) -> str:
    """The path of the fuse-tree node named `name` in a normalized site."""
    stack = [(f"fuse_tree/{i}", node) for i, node in enumerate(site["fuse_tree"])]
    while stack:
        path, node = stack.pop()
        if node["parameters"]["name"] == name:
            return path
        stack += [(f"{path}/children/{i}", child) for i, child in enumerate(node["children"])]
    raise AssertionError(f"no node named {name!r}")


def node_at(site: dict[str, Any], path: str) -> dict[str, Any]:
    value: Any = site
    for segment in path.split("/"):
        value = value[int(segment)] if isinstance(value, list) else value[segment]
    return dict(value)
