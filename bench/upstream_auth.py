"""ChargePilot's request signing, written again for the benchmarks (from the upstream's
documentation, with hashlib/hmac; it shares no code with the gateway's signer): the
headers that make a GET of one exact upstream path acceptable for the next few minutes."""

from __future__ import annotations

import hashlib
import hmac
import time


def signature(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256 of `payload`, keyed with the hex string of sha256(secret)."""
    key = hashlib.sha256(secret.encode()).hexdigest()
    return hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signed_headers(
    api_key: str, secret: str, path: str, *, method: str = "GET", now: float | None = None
) -> dict[str, str]:
    """`x-api-key`, `x-req-timestamp`, `x-signature` for `method path` with an empty body.
    `path` is what is signed: the full request path with `/rest/v1` and any query."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        "x-api-key": api_key,
        "x-req-timestamp": timestamp,
        "x-signature": signature(secret, f"{method}:{path}:{timestamp}:"),
    }
