"""The contract's rule for site and connector ids: 1-200 characters, no control character.

Anything else is a 400.  Every valid id can be asked for: it travels upstream as exactly one
percent-encoded path segment (`upstream.path_segment`) and into keys percent-encoded
(`keys.py`), so `/`, `%`, `{`, dots and non-ASCII ids are data, never structure.
"""

from __future__ import annotations

import re

from .errors import BadRequest

MAX_ID_LENGTH = 200
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def validate_id(value: str, what: str) -> str:
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise BadRequest(f"{what} must be 1 to {MAX_ID_LENGTH} characters")
    if _CONTROL.search(value):
        raise BadRequest(f"{what} must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: percent-escapes that were not UTF-8
        raise BadRequest(f"{what} must be valid UTF-8") from None
    return value
