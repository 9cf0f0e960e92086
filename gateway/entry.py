"""Cache entries: bytes plus the metadata that decides freshness, and their wire format.

    b"CPG3" | stored_at: f64 big-endian | flags: u8 | etag: 32 ascii hex     (the header)
            | variant count: u8 | per variant: coding id u8, length u32 | variant bytes…
            | body bytes

`stored_at` is wall-clock time, so replicas agree on an entry's age.  The ETag is a hash of
the body alone: the same content stored twice has the same tag, whatever its age.  Variants
are the body's content codings (gzip, br, zstd) built when it was stored, where that pays
(`encodings.py`).  A negative entry (an upstream 404) has an empty body.  Bytes of another
format decode to None and count as a miss, never as data; the fixed-size header comes first
so a header-only read (`HEADER_LENGTH` bytes) can revalidate an entry.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"CPG3"
_HEADER = struct.Struct("!dB")
_VARIANT = struct.Struct("!BI")
CODING_IDS = {"gzip": 1, "br": 2, "zstd": 3}
_CODINGS = {number: name for name, number in CODING_IDS.items()}
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
    variants: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    # What the HTTP edge prebuilt for this entry (headers, encodings): built once, reused by
    # every hit.  Not part of the entry's identity.
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(variant) for variant in self.variants.values())

    def encode(self) -> bytes:
        flags = FLAG_NEGATIVE if self.negative else 0
        parts = [MAGIC, _HEADER.pack(self.stored_at, flags), self.etag.encode("ascii")]
        parts.append(bytes((len(self.variants),)))
        parts.extend(
            _VARIANT.pack(CODING_IDS[coding], len(data)) for coding, data in self.variants.items()
        )
        parts.extend(self.variants.values())
        parts.append(self.body)
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """The entry, or None.  A header-only read gives an entry without body or variants."""
        if len(raw) < HEADER_LENGTH or not raw.startswith(MAGIC):
            return None
        stored_at, flags = _HEADER.unpack_from(raw, len(MAGIC))
        start = len(MAGIC) + _HEADER.size
        etag = raw[start : start + ETAG_LENGTH].decode("ascii", "replace")
        negative = bool(flags & FLAG_NEGATIVE)
        if len(raw) == HEADER_LENGTH:
            return cls(b"", stored_at, etag, negative)
        try:
            count = raw[HEADER_LENGTH]
            offset = HEADER_LENGTH + 1
            table = []
            for _ in range(count):
                coding, length = _VARIANT.unpack_from(raw, offset)
                table.append((_CODINGS[coding], length))
                offset += _VARIANT.size
        except (IndexError, KeyError, struct.error):
            return None
        variants = {}
        for coding, length in table:
            variants[coding] = raw[offset : offset + length]
            offset += length
        if offset > len(raw):
            return None
        return cls(raw[offset:], stored_at, etag, negative, variants)

    @classmethod
    def for_body(
        cls, body: bytes, stored_at: float, variants: dict[str, bytes] | None = None
    ) -> Entry:
        return cls(body, stored_at, make_etag(body), variants=variants or {})

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
