"""Several accounts in the real process: `python -m gateway` with
`CHARGEPILOT_ACCOUNTS_FILE` in front of two simulator processes (EU and US keys and ports),
a malformed file stopping the start with one line naming it, and
`python -m gateway --demo --demo-accounts 2`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from gateway.simulator import eu_fleet, us_fleet
from tests.conftest import free_port, metric_value
from tests.processes import clean_env, running, simulator_args

ACCOUNTS_FILE = "CHARGEPILOT_ACCOUNTS_FILE"


async def test_accounts_file_serves_two_hosts_as_one_fleet(tmp_path: Path) -> None:
    eu_port, us_port, port = free_port(), free_port(), free_port()
    (tmp_path / "us.secret").write_text("us-process-secret\n")
    accounts = [
        {"name": "eu", "base_url": f"http://127.0.0.1:{eu_port}/rest/v1",
         "api_key": "eu-process-key", "api_secret": "eu-process-secret", "rps": 50},
        {"name": "us", "base_url": f"http://127.0.0.1:{us_port}/rest/v1",
         "api_key": "us-process-key", "api_secret_file": str(tmp_path / "us.secret")},
    ]  # fmt: skip
    (tmp_path / "accounts.json").write_text(json.dumps(accounts))
    env = clean_env(GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port),
                    **{ACCOUNTS_FILE: str(tmp_path / "accounts.json")})  # fmt: skip
    eu_args = simulator_args(eu_port, "eu-process-key", "eu-process-secret", "--fleet", "eu")
    us_args = simulator_args(us_port, "us-process-key", "us-process-secret", "--fleet", "us")
    log_path = tmp_path / "gateway.log"
    with (
        running(eu_args, clean_env(), tmp_path / "eu.log", ports=(eu_port,)),
        running(us_args, clean_env(), tmp_path / "us.log", ports=(us_port,)),
        running(["gateway"], env, log_path, ports=(port,)) as process,
    ):
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            body = await (await session.get(f"{base}/sites")).json()
            accounts_seen = {site["account"] for site in body["data"]}
            assert accounts_seen == {"eu", "us"} and "unavailable_accounts" not in body
            assert (await session.get(f"{base}/sites/shared-site-0001")).status == 409
            us_site = await (await session.get(f"{base}/sites/us-site-0002")).json()
            assert us_site["account"] == "us"
            for sim_port, key in ((eu_port, "eu-process-key"), (us_port, "us-process-key")):
                stats = await (await session.get(f"http://127.0.0.1:{sim_port}/_sim/stats")).json()
                assert set(stats["by_api_key"]) == {key} and stats["by_outcome"] == {"200": 1}
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
    logged = log_path.read_text()
    for secret in ("eu-process-secret", "us-process-secret", "eu-process-key", "us-process-key"):
        assert secret not in logged


async def test_a_malformed_accounts_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    path.write_text('[{"name": "eu", "base_url": "ftp://x", "api_key": "k", "api_secret": "s"}]')
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway"],
        env=clean_env(**{ACCOUNTS_FILE: str(path)}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ACCOUNTS_FILE in lines[0] and "'eu'" in lines[0], result.stderr


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
