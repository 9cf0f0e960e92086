"""Content codings: which one a client gets (`negotiate`) and how bodies are compressed.

Negotiation follows RFC 9110 §12.5.3: each coding's q-value comes from its own entry in
`Accept-Encoding`, else from `*`, else it is not acceptable (identity is acceptable unless
refused by `identity;q=0` or by `*;q=0` without an identity entry).  The highest q wins; on
a tie the server's preference decides (zstd, br, gzip, then identity).  An absent header
means identity.  Results are remembered per header value: clients send few distinct ones.

Compression happens when an answer is stored, never per request: `variants(body)` builds
every coding that pays (bodies of at least `MIN_SIZE` bytes, kept when at most
`KEEP_RATIO` of the identity size); an entry without a variant it needs gets it built once
and kept with the entry (see `responses.py`).  Levels favour speed: a fill compresses
megabytes at a time (measured in bench/RESULTS.md).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable

import brotli

try:  # the standard library from Python 3.14
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd

CODINGS = ("zstd", "br", "gzip")  # the server's preference on equal q-values
IDENTITY = "identity"
MIN_SIZE = 1024
KEEP_RATIO = 0.9
GZIP_LEVEL = 6
BROTLI_QUALITY = 4
ZSTD_LEVEL = 3

_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda body: gzip.compress(body, GZIP_LEVEL, mtime=0),
    "br": lambda body: brotli.compress(body, quality=BROTLI_QUALITY),
    "zstd": lambda body: zstd.compress(body, level=ZSTD_LEVEL),
}
NOT_ACCEPTABLE = "no acceptable content coding: send identity, gzip, br or zstd"
_NEGOTIATED: dict[str, str | None] = {}
_NEGOTIATED_MAX = 1024


def compress(body: bytes, coding: str) -> bytes:
    return _COMPRESS[coding](body)


def variants(body: bytes) -> dict[str, bytes]:
    """Every coding of `body` worth sending instead of it (none for small bodies)."""
    if len(body) < MIN_SIZE:
        return {}
    found = {}
    for coding in CODINGS:
        compressed = compress(body, coding)
        if len(compressed) <= KEEP_RATIO * len(body):
            found[coding] = compressed
    return found


def negotiate(header: str | None) -> str | None:
    """The coding to send for this `Accept-Encoding` (IDENTITY included), or None when
    the client refuses everything the gateway could send (406)."""
    if header is None:
        return IDENTITY
    known = _NEGOTIATED.get(header, "")
    if known != "":
        return known
    chosen = _choose(header)
    if len(_NEGOTIATED) >= _NEGOTIATED_MAX:
        _NEGOTIATED.clear()
    _NEGOTIATED[header] = chosen
    return chosen


def _choose(header: str) -> str | None:
    weights: dict[str, float] = {}
    for part in header.split(","):
        name, _, parameters = part.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        weight = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = min(1.0, max(0.0, float(value.strip())))
                except ValueError:
                    weight = 0.0  # a malformed q-value accepts nothing
        weights[name] = max(weight, weights.get(name, 0.0)) if name in weights else weight
    star = weights.get("*")
    best, best_weight = None, 0.0
    for coding in (*CODINGS, IDENTITY):
        named = weights.get(coding)
        if named is not None:
            weight = named
        elif star is not None:
            weight = star
        else:  # identity is acceptable unless refused, but the least preferred when unnamed
            weight = 0.001 if coding == IDENTITY else 0.0
        if weight > best_weight:
            best, best_weight = coding, weight
    return best
