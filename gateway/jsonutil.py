"""JSON encoding and decoding: orjson, with iterative fallbacks for documents nested too
deep for it.

orjson refuses to serialize nesting deeper than 254 levels (and to parse deeper than 1024);
a fuse tree 500 nodes deep is ~1000 levels.  Such documents are rare, so the fast path stays
orjson and only its error takes the slower explicit-stack encoder, which produces the same
bytes (compact, no spaces) without recursion, or the explicit-stack decoder.
"""

from __future__ import annotations

import re
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


_TOKEN = re.compile(
    rb'\s*(?:([\[{])|([\]}])|(,)|(:)|("(?:[^"\\]|\\.)*")'
    rb"|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null))",
    re.DOTALL,
)


def loads(data: bytes) -> Any:
    """The value of a JSON document, however deeply nested (ValueError if it is no JSON)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _loads_iterative(data)


def _loads_iterative(data: bytes) -> Any:
    """A JSON parser with an explicit stack; strings and numbers are orjson's."""
    # Open containers, innermost last, each with the key its next value belongs to.
    stack: list[tuple[dict[str, Any] | list[Any], str | None]] = []
    done = False
    result: Any = None
    position = 0
    expect_value = True  # a value (or a closing bracket of an empty container) comes next
    while True:
        match = _TOKEN.match(data, position)
        if match is None:
            if data[position:].strip() or not done:
                raise ValueError(f"not JSON at byte {position}")
            return result
        if done:
            raise ValueError(f"trailing data at byte {position}")
        position = match.end()
        opening, closing, comma, colon, string, scalar = match.groups()
        value: Any
        if opening is not None and expect_value:
            stack.append(({} if opening == b"{" else [], None))
            continue
        if closing is not None and stack:
            container, key = stack[-1]
            dangling = expect_value and len(container) > 0  # a comma before the bracket
            if (closing == b"}") != isinstance(container, dict) or key is not None or dangling:
                raise ValueError(f"unbalanced {closing!r} at byte {match.start(2)}")
            stack.pop()
            value, expect_value = container, False
        elif comma is not None and stack and not expect_value:
            expect_value = True
            continue
        elif colon is not None and stack and isinstance(stack[-1][0], dict):
            if stack[-1][1] is None:
                raise ValueError(f"unexpected ':' at byte {match.start(4)}")
            expect_value = True
            continue
        elif (string is not None or scalar is not None) and expect_value:
            value = orjson.loads(string if string is not None else scalar)
            container_key = stack[-1] if stack else None
            in_object = container_key is not None and isinstance(container_key[0], dict)
            if in_object and container_key is not None and container_key[1] is None:
                # An object's key: its value follows.
                if string is None:
                    raise ValueError(f"an object key must be a string, byte {match.start()}")
                stack[-1] = (container_key[0], str(value))
                expect_value = False
                continue
            expect_value = False
        else:
            raise ValueError(f"unexpected token at byte {match.start()}")
        if not stack:
            result, done = value, True
            continue
        container, key = stack[-1]
        if isinstance(container, dict):
            assert key is not None
            container[key] = value
            stack[-1] = (container, None)
        else:
            container.append(value)
