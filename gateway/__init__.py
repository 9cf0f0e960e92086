"""chargepilot-gateway: a caching, signing, shielding gateway for ChargePilot's Sites API.

Owns the version, the one place it is written (pyproject.toml reads it from here).
"""

__version__ = "0.2.0"
