"""The real process: `python -m gateway --demo --demo-accounts 2` serves two simulated
accounts (an EU and a US host) as one fleet."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from gateway.simulator import eu_fleet, us_fleet
from tests.conftest import free_port, metric_value
from tests.processes import clean_env, running


async def test_demo_serves_two_accounts_as_one_fleet(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(GATEWAY_PORT=str(port), GATEWAY_HOST="127.0.0.1")
    args = ["gateway", "--demo", "--demo-accounts", "2"]
    with running(args, env, tmp_path / "demo.log", ports=(port,)) as process:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            response = await session.get(f"{base}/sites")
            assert response.status == 200
            body = await response.json()
            want = sorted(
                (site["id"], name)
                for name, fleet in (("eu", eu_fleet()), ("us", us_fleet()))
                for site in fleet
            )
            assert [(site["id"], site["account"]) for site in body["data"]] == want
            conflict = await session.get(f"{base}/sites/shared-site-0001")
            assert conflict.status == 409
            named = await session.get(f"{base}/sites/shared-site-0001?account=us")
            assert (await named.json())["name"] == "Shared Depot (US view)"
            events = await session.get(f"{base}/sites/eu-site-0001/charging-events?take=2")
            assert (await events.json())["count"] == 2
            text = await (await session.get(f"{base}/metrics")).text()
            for name in ("eu", "us"):
                total = metric_value(
                    text, "gateway_upstream_requests_total", account=name, outcome="200"
                )
                assert total >= 1, name
            assert metric_value(text, "gateway_site_connectors", account="us") > 0
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0


async def test_demo_accounts_needs_demo() -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "--demo-accounts", "2"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "--demo-accounts needs --demo" in result.stderr
