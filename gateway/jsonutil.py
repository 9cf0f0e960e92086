"""JSON encoding: orjson, with an iterative fallback for documents nested too deep for it.

orjson refuses to serialize nesting deeper than 254 levels; a fuse tree 500 nodes deep is
~1000 levels.  Such documents are rare, so the fast path stays orjson and only a
`JSONEncodeError` takes the slower explicit-stack encoder, which produces the same bytes
(compact, no spaces) without recursion.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact JSON bytes, sized to fit: orjson's result can carry several KiB of spare
    capacity, which a fill holding 100k small bodies at once turns into hundreds of MiB."""
    try:
        return bytes(memoryview(orjson.dumps(value)))
    except orjson.JSONEncodeError:
        return _dumps_iterative(value)


def _dumps_iterative(value: Any) -> bytes:
    out: list[bytes] = []
    # The stack holds either values still to encode or literal bytes to emit.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, dict):
            parts: list[Any] = [b"{"]
            for index, (key, child) in enumerate(item.items()):
                if index:
                    parts.append(b",")
                parts.append(orjson.dumps(str(key)) + b":")
                parts.append(_Value(child))
            parts.append(b"}")
            stack.extend(reversed(parts))
        elif isinstance(item, list | tuple):
            parts = [b"["]
            for index, child in enumerate(item):
                if index:
                    parts.append(b",")
                parts.append(_Value(child))
            parts.append(b"]")
            stack.extend(reversed(parts))
        elif isinstance(item, _Value):
            stack.append(item.value if not isinstance(item.value, bytes) else _Raw(item.value))
        elif isinstance(item, _Raw):
            out.append(orjson.dumps(item.value.decode("utf-8", "replace")))
        else:
            out.append(orjson.dumps(item))
    return b"".join(out)


class _Value:
    """A value to encode (distinguishes it from literal output bytes on the stack)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Raw:
    """A bytes *value* (encoded as a string), as opposed to output bytes."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value
