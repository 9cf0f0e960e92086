"""Cache entries: bytes plus the metadata that decides freshness, and their wire format.

    b"CPG2" | stored_at: f64 big-endian | flags: u8 | etag: 32 ascii hex | body bytes

`stored_at` is wall-clock time, so replicas agree on an entry's age.  The ETag is a hash of
the body alone: the same content stored twice has the same tag, whatever its age.  A
negative entry (an upstream 404) has an empty body.  Bytes of another format decode to
None and count as a miss, never as data.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"CPG2"
_HEADER = struct.Struct("!dB")
ETAG_LENGTH = 32
HEADER_LENGTH = len(MAGIC) + _HEADER.size + ETAG_LENGTH
FLAG_NEGATIVE = 1
NEGATIVE_ETAG = "0" * ETAG_LENGTH


def make_etag(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes
    stored_at: float
    etag: str  # 32 hex characters, without quotes
    negative: bool = False
    # What the HTTP edge prebuilt for this entry (headers, encodings): built once, reused by
    # every hit.  Not part of the entry's identity.
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def encode(self) -> bytes:
        flags = FLAG_NEGATIVE if self.negative else 0
        return b"".join(
            (MAGIC, _HEADER.pack(self.stored_at, flags), self.etag.encode("ascii"), self.body)
        )

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """The entry (the body may be cut short for a header-only read), or None."""
        if len(raw) < HEADER_LENGTH or not raw.startswith(MAGIC):
            return None
        stored_at, flags = _HEADER.unpack_from(raw, len(MAGIC))
        start = len(MAGIC) + _HEADER.size
        etag = raw[start : start + ETAG_LENGTH].decode("ascii", "replace")
        return cls(raw[HEADER_LENGTH:], stored_at, etag, bool(flags & FLAG_NEGATIVE))

    @classmethod
    def for_body(cls, body: bytes, stored_at: float) -> Entry:
        return cls(body, stored_at, make_etag(body))

    @classmethod
    def missing(cls, stored_at: float) -> Entry:
        return cls(b"", stored_at, NEGATIVE_ETAG, negative=True)


@dataclass(frozen=True, slots=True)
class Lookup:
    entry: Entry
    ttl: float  # seconds of freshness left; negative once stale

    @property
    def fresh(self) -> bool:
        return self.ttl > 0
