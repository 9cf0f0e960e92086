"""chargepilot-gateway: a caching, signing, shielding gateway for ChargePilot's Sites API."""

__version__ = "0.2.0"
