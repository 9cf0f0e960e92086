"""A standalone fake of ChargePilot's Sites API, for tests, benchmarks and demos.

Owns nothing of the gateway: it imports no ``gateway.*`` module outside this package, so a
bug in the gateway's signer or parser cannot be mirrored here and go unnoticed.

Modules: ``app`` (data routes, call log, codings), ``control`` (``/_sim/*`` and the change
ticker), ``state`` (knobs, fleet, logs), ``auth`` (signature checks), ``paths`` (ids from
raw targets), ``events`` (charging events), ``changes`` (site mutations), ``compression``,
``data`` (the fleets) and ``sitebuilder`` (how one site is assembled).
"""

from gateway.simulator.app import create_simulator_app
from gateway.simulator.auth import compute_signature
from gateway.simulator.changes import KINDS as CHANGE_KINDS
from gateway.simulator.changes import Change
from gateway.simulator.data import (
    ODD_MULTI_CHAR_IDS,
    build_fleet,
    demo_fleet,
    eu_fleet,
    iter_connectors,
    iter_nodes,
    odd_id_fleet,
    us_fleet,
)
from gateway.simulator.events import site_events
from gateway.simulator.state import SIM_STATE, Call, SimulatorConfig, SimulatorState

__all__ = [
    "CHANGE_KINDS",
    "ODD_MULTI_CHAR_IDS",
    "SIM_STATE",
    "Call",
    "Change",
    "SimulatorConfig",
    "SimulatorState",
    "build_fleet",
    "compute_signature",
    "create_simulator_app",
    "demo_fleet",
    "eu_fleet",
    "iter_connectors",
    "iter_nodes",
    "odd_id_fleet",
    "site_events",
    "us_fleet",
]
