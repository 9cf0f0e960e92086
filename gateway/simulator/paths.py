"""Ids read out of raw request targets, byte for byte as they arrived.

Owns how a path segment becomes an id. aiohttp's router matches on a half-decoded path
(``%2F`` kept, other escapes decoded), so a route like ``/sites/{site_id}`` would treat
``%2E%2E`` as ``..`` and disagree with the bytes the client signed. The simulator's routes
therefore match ``{raw:.*}`` and this module reads the one segment from
``request.raw_path`` itself: exactly one segment (an encoded ``%2F`` is part of the id, a
raw ``/`` is not), percent-decoded as UTF-8. A raw ``.`` or ``..`` segment is no id: any
proxy in front of the real upstream would have removed it as a dot segment.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class MalformedTarget(ValueError):
    """The request target has a ``%`` not followed by two hex digits."""


def split_target(raw_path: str) -> tuple[str, str]:
    """``(path, query)`` of a raw request target; query is "" when absent."""
    path, _, query = raw_path.partition("?")
    return path, query


def segment_id(raw_path: str, prefix: str) -> str | None:
    """The id in the single raw segment that follows ``prefix`` (which ends in ``/``), or
    None when the target holds no such segment (an unknown resource: 404).

    Raises ``MalformedTarget`` for a broken percent-escape (bad input: 400).
    """
    path, _ = split_target(raw_path)
    if not path.startswith(prefix):
        return None
    segment = path[len(prefix) :]
    if segment in ("", ".", "..") or "/" in segment:
        return None
    if _BAD_ESCAPE.search(segment):
        raise MalformedTarget(f"malformed percent-encoding in {segment!r}")
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        return None  # no id is a byte string that is not UTF-8
