"""Content codings for the simulator's data answers: negotiation and the br/zstd encoders.

Owns which coding an ``Accept-Encoding`` header gets and how br and zstd bodies are made.
gzip is left to aiohttp's own ``enable_compression``; aiohttp 3.14 has no server-side br or
zstd, so those are compressed here with ``brotli`` and ``backports.zstd`` (``compression.zstd``
from Python 3.14), the same packages aiohttp's client decodes them with.

Negotiation follows RFC 9110 section 12.5.3: the highest q-value among ``zstd``, ``br`` and
``gzip`` wins (``*`` stands for any coding not named; ``q=0`` refuses); on equal q the
cheaper-to-decode coding wins: zstd, then br, then gzip. Nothing acceptable: identity.
"""

from __future__ import annotations

import sys

import brotli

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

CODINGS = ("zstd", "br", "gzip")  # server preference on equal q-values
BROTLI_QUALITY = 5  # brotli's default (11) is far too slow for per-request answers
ZSTD_LEVEL = 3


def _quality(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return 0.0
            return quality if 0.0 <= quality <= 1.0 else 0.0
    return 1.0


def negotiate(accept_encoding: str | None) -> str | None:
    """The coding to answer with (one of ``CODINGS``), or None for identity."""
    if not accept_encoding:
        return None
    offered: dict[str, float] = {}
    for item in accept_encoding.split(","):
        token, *parameters = item.split(";")
        token = token.strip().lower()
        if token:
            offered[token] = _quality(parameters)
    wildcard = offered.get("*", 0.0)
    best, best_quality = None, 0.0
    for coding in CODINGS:
        quality = offered.get(coding, wildcard)
        if quality > best_quality:
            best, best_quality = coding, quality
    return best


def compress(body: bytes, coding: str) -> bytes:
    """``body`` in ``coding`` (``br`` or ``zstd``)."""
    if coding == "br":
        compressed: bytes = brotli.compress(body, quality=BROTLI_QUALITY)
        return compressed
    if coding == "zstd":
        return zstd.compress(body, level=ZSTD_LEVEL)
    raise ValueError(f"compress() handles br and zstd, not {coding!r}")
