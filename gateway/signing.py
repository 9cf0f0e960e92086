"""ChargePilot request signing (HMAC-SHA256), as the upstream's integration guide describes.

    key       = hex string of SHA-256(secret)
    payload   = f"{METHOD}:{URL_PATH}:{TIMESTAMP}:{BODY}"   (BODY empty for GET)
    signature = hex HMAC-SHA256(key, payload)

Pure functions; the secret never leaves this module except as the derived signature.
"""

from __future__ import annotations

import hashlib
import hmac


def signing_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest().encode("ascii")


def signature(key: bytes, method: str, path: str, timestamp: int, body: str = "") -> str:
    payload = f"{method.upper()}:{path}:{timestamp}:{body}"
    return hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_headers(
    api_key: str, key: bytes, method: str, path: str, timestamp: int, body: str = ""
) -> dict[str, str]:
    return {
        "x-api-key": api_key,
        "x-req-timestamp": str(timestamp),
        "x-signature": signature(key, method, path, timestamp, body),
    }
