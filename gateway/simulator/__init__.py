"""A standalone fake of ChargePilot's Sites API, for tests, benchmarks and demos.

Owns nothing of the gateway: it imports no ``gateway.*`` module outside this package, so a
bug in the gateway's signer or parser cannot be mirrored here and go unnoticed.
"""

from gateway.simulator.app import SIM_STATE, compute_signature, create_simulator_app
from gateway.simulator.data import build_fleet, demo_fleet, iter_connectors, iter_nodes
from gateway.simulator.state import Call, SimulatorConfig, SimulatorState

__all__ = [
    "SIM_STATE",
    "Call",
    "SimulatorConfig",
    "SimulatorState",
    "build_fleet",
    "compute_signature",
    "create_simulator_app",
    "demo_fleet",
    "iter_connectors",
    "iter_nodes",
]
