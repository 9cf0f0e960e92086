"""Gateway settings for the benchmarks that run the gateway app inside their own process
(`storm_bench.py`, `hit_path_bench.py`, `connectors_bench.py`).  `compare.py` does not use
this: it drives `python -m gateway` through its environment variables only."""

from __future__ import annotations

import dataclasses
from typing import Any

from common import API_KEY, API_SECRET, HOST

from gateway.settings import Secret, Settings


def gateway_settings(simulator_url: str, **overrides: Any) -> Settings:
    """Settings for a gateway in front of the simulator at `simulator_url`, fresh for the
    whole run (nothing may turn stale and refresh in the middle of a measurement)."""
    base = Settings(
        base_url=f"{simulator_url}/rest/v1",
        api_key=Secret(API_KEY),
        api_secret=Secret(API_SECRET),
        host=HOST,
        port=0,
        cache_ttl=3600.0,
        upstream_rps=1000.0,
        refresh_share=0.0,  # no fleet refresher competing with what is measured
    )
    return dataclasses.replace(base, **overrides)
