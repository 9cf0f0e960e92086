"""Query parameters of the data routes: the one check every route's parameters pass.

A route names the parameters it accepts; each may be given at most once, must not be empty,
and holds no control character (nor more than `MAX_VALUE_LENGTH` characters, unless the
route allows more for it).  Anything else is a 400 naming the parameter, before any cache
or upstream work.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from .errors import BadRequest

MAX_VALUE_LENGTH = 256


def single_values(
    params: Mapping[str, str],
    allowed: Collection[str],
    *,
    longest: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """`params` (a multidict: repeated names are seen) as a dict, or a 400."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; allowed: {known}")
    if len(params) != len(set(params)):
        raise BadRequest("a query parameter is given more than once")
    values: dict[str, str] = {}
    for name, value in params.items():
        limit = (longest or {}).get(name, MAX_VALUE_LENGTH)
        if not value or len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise BadRequest(f"query parameter {name!r} is empty or malformed")
        values[name] = value
    return values
