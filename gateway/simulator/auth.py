"""ChargePilot's request signing, checked the way the upstream checks it.

Owns the HMAC scheme on the simulator's side, written out with hashlib/hmac and sharing no
code with the gateway's signer, so a bug there cannot be mirrored here. The payload is
``METHOD:PATH:TIMESTAMP:BODY`` where PATH is the request target exactly as it arrived (raw
percent-encoding and ``?query`` included; ``relative`` mode drops the ``/rest/v1`` prefix).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from gateway.simulator.state import BASE_PATH, SimulatorConfig


def compute_signature(secret: str, payload: str) -> str:
    """ChargePilot's scheme: the *hex string* of sha256(secret) is the HMAC-SHA256 key."""
    key = hashlib.sha256(secret.encode()).hexdigest()
    return hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signed_path(raw_path: str, sign_path: str) -> str:
    """The part of the raw request target that the signature covers."""
    if sign_path == "relative" and raw_path.startswith(BASE_PATH):
        return raw_path[len(BASE_PATH) :]
    return raw_path


def check_signature(
    config: SimulatorConfig,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: str,
    now: float,
) -> str | None:
    """Return why the request is rejected, or None if its signature is valid."""
    api_key = headers.get("x-api-key")
    timestamp = headers.get("x-req-timestamp")
    signature = headers.get("x-signature")
    if not api_key or not timestamp or not signature:
        return "missing x-api-key, x-req-timestamp or x-signature header"
    if not hmac.compare_digest(api_key.encode(), config.api_key.encode()):
        return "unknown api key"
    if not timestamp.isdigit():
        return "x-req-timestamp must be integer unix seconds"
    if abs(now - int(timestamp)) > config.max_skew:
        return "timestamp outside allowed clock skew"
    payload = f"{method}:{signed_path(raw_path, config.sign_path)}:{timestamp}:{body}"
    expected = compute_signature(config.api_secret, payload)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return "invalid signature"
    return None
