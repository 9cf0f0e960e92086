"""`--demo --demo-accounts 2`: two simulated upstream accounts served as one fleet.

Starts two ChargePilot simulators on free loopback ports in this event loop, an EU host
(`eu_fleet()`) and a US host (`us_fleet()`), each with its own key pair, and returns the
settings with both as accounts (`eu`, `us`), as an accounts file would give them.  The two
fleets share one site id, `shared-site-0001`, so the demo also shows the 409 and
`?account=`.
"""

from __future__ import annotations

import dataclasses
import logging

from aiohttp import web

from .accounts import Account, derived_namespace
from .settings import Secret, Settings

log = logging.getLogger("gateway")
MAX_DEMO_ACCOUNTS = 2


async def start_account_simulators(settings: Settings, runners: list[web.AppRunner]) -> Settings:
    """Start the EU and US simulators (their runners appended to `runners`, for cleanup)."""
    from .simulator import SimulatorConfig, create_simulator_app, eu_fleet, us_fleet

    accounts = []
    for name, fleet in (("eu", eu_fleet()), ("us", us_fleet())):
        config = SimulatorConfig(
            api_key=f"demo-{name}-key",
            api_secret=f"demo-{name}-secret",
            latency=0.05,
            latency_jitter=0.05,
        )
        runner = web.AppRunner(create_simulator_app(config, sites=fleet), access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        base_url = f"http://127.0.0.1:{port}/rest/v1"
        namespace = (
            f"{settings.namespace}-{name}"
            if settings.namespace
            else derived_namespace(base_url, config.api_key)
        )
        accounts.append(
            Account(
                name,
                base_url,
                Secret(config.api_key),
                Secret(config.api_secret),
                config.sign_path,
                settings.upstream_rps,
                namespace,
            )
        )
        log.info("demo simulator started", extra={"account": name, "url": base_url})
    first = accounts[0]
    return dataclasses.replace(
        settings,
        base_url=first.base_url,
        api_key=first.api_key,
        api_secret=first.api_secret,
        accounts_file=tuple(accounts),
    )
