"""A real Prometheus server scrapes a running gateway; PromQL over what it scraped returns the
hit ratio (with the shipped recording rules loaded, so they are exercised too)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import GatewayFactory, Simulator, free_port, settings_for

REPO = Path(__file__).resolve().parent.parent


async def _query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, object]]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


async def test_prometheus_scrapes_the_gateway_and_computes_the_hit_ratio(
    simulator: Simulator, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: apt-get install prometheus (scripts/setup does)")
    gw = await make_gateway(settings_for(simulator))
    for _ in range(9):
        await gw.get("/sites/site-0001")  # 1 miss, 8 hits
    await gw.get("/sites/ghost")  # not in the list just fetched: a negative hit
    rules = tmp_path / "recording.yml"
    shutil.copy(REPO / "deploy/prometheus/recording.yml", rules)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: ['{rules}']\n"
        "scrape_configs:\n  - job_name: chargepilot-gateway\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{gw.port}']}}]\n"
    )
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            ratio: list[dict[str, object]] = []
            for _ in range(150):
                await asyncio.sleep(0.1)
                try:
                    ratio = await _query(
                        session,
                        base,
                        'sum(gateway_cache_lookups_total{job="chargepilot-gateway",result="hit"})'
                        ' / sum(gateway_cache_lookups_total{job="chargepilot-gateway"})',
                    )
                except aiohttp.ClientError:
                    continue
                if ratio:
                    break
            assert ratio, "Prometheus never scraped the gateway"
            value = float(ratio[0]["value"][1])  # type: ignore[index]
            assert value == pytest.approx(8 / 10)
            up = await _query(session, base, 'up{job="chargepilot-gateway"}')
            assert float(up[0]["value"][1]) == 1  # type: ignore[index]
    finally:
        process.terminate()
        process.wait(10)
