"""Command line entry point: serve the simulator on a port until SIGINT/SIGTERM.

Owns argument parsing only; the app itself comes from ``create_simulator_app``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from aiohttp import web

from gateway.simulator.app import create_simulator_app
from gateway.simulator.data import Site, build_fleet, demo_fleet, eu_fleet, odd_id_fleet, us_fleet
from gateway.simulator.state import SimulatorConfig

FLEETS: dict[str, Callable[[], list[Site]]] = {
    "demo": demo_fleet,
    "eu": eu_fleet,
    "us": us_fleet,
    "odd": odd_id_fleet,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.simulator", description="Fake ChargePilot Sites API."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--key", default=SimulatorConfig.api_key)
    parser.add_argument("--secret", default=SimulatorConfig.api_secret)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500")
    fleet = parser.add_mutually_exclusive_group()
    fleet.add_argument(
        "--fleet",
        choices=sorted(FLEETS),
        help="built-in fleet: demo (default, 12 sites), eu (eu-site-*), us (us-site-*); eu "
        "and us share only shared-site-0001; odd (ids of every printable character)",
    )
    fleet.add_argument("--sites", type=int, help="serve build_fleet(SITES, ...) instead")
    parser.add_argument("--connectors-per-site", type=int, default=20)
    parser.add_argument("--sign-path", choices=("full", "relative"), default="full")
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed for --sites fleets and for simulated errors, site changes and charging "
        "events (default 1)",
    )
    parser.add_argument(
        "--change-interval",
        type=float,
        default=0.0,
        help="apply one random site change every this many seconds (0: never)",
    )
    parser.add_argument(
        "--no-compress",
        dest="compress",
        action="store_false",
        help="never compress answers (default: gzip, br or zstd as Accept-Encoding asks)",
    )
    args = parser.parse_args(argv)
    if args.connectors_per_site < 1 or (args.sites is not None and args.sites < 0):
        parser.error("--sites must be >= 0 and --connectors-per-site >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = SimulatorConfig(
            api_key=args.key,
            api_secret=args.secret,
            latency=args.latency,
            error_rate=args.error_rate,
            sign_path=args.sign_path,
            change_interval=args.change_interval,
            compress=args.compress,
            seed=args.seed,
        )
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    if args.sites is not None:
        fleet = build_fleet(args.sites, args.connectors_per_site, seed=args.seed)
    else:
        fleet = FLEETS[args.fleet or "demo"]()
    app = create_simulator_app(config, sites=fleet)
    url = f"http://{args.host}:{args.port}/rest/v1"
    line = f"ChargePilot simulator serving {len(fleet)} sites at {url}"

    def announce(_banner: str) -> None:
        # run_app calls this once the socket is listening; a parent process waits for this
        # one flushed line before sending requests, so it must not come any earlier.
        print(line, flush=True)

    web.run_app(app, host=args.host, port=args.port, print=announce, access_log=None)


if __name__ == "__main__":
    main()
