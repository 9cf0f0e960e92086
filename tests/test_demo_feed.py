"""`python -m gateway --demo`, a real process: the simulator changes sites, the refresher
finds the changes, and `/changes` shows them within a minute, as a stream and as a page."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateway.changelog import KINDS
from tests.conftest import free_port
from tests.feedkit import SSE, events
from tests.processes import clean_env, running

pytestmark = pytest.mark.slow


async def test_the_demo_shows_changes_within_a_minute(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(GATEWAY_PORT=str(port), GATEWAY_HOST="127.0.0.1")
    del env["GATEWAY_REFRESH_SHARE"]  # the demo's own refresher finds the changes
    with running(["gateway", "--demo"], env, tmp_path / "demo.log", ports=(port,)):
        base = f"http://127.0.0.1:{port}"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/changes?after=0", headers=SSE) as stream,
        ):
            assert stream.status == 200
            (event,) = await events(stream, 1, timeout=60)
            page = await (await session.get(f"{base}/changes?after=0")).json()
    assert event.event in KINDS and event.json == page["data"][0]
    assert event.json["site_id"] and event.json["at"].endswith("Z")
    if event.event == "site.updated":
        assert event.json["changes"] and all("path" in c for c in event.json["changes"])
    assert "watch the sites change" in (tmp_path / "demo.log").read_text()
