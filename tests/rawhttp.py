"""HTTP/1.1 over a bare `asyncio` stream: for tests that must control every byte and keep
one connection (a browser-like client would hide a closed or reused connection)."""

from __future__ import annotations

import asyncio
import contextlib


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body: status, headers (lower-case names), body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """`read_response` over bytes already received."""
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    return await read_response(reader)


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes; fails if it stays open `timeout`."""
    return await asyncio.wait_for(reader.read(), timeout)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def get(path: str, **headers: str) -> bytes:
    """A GET request's bytes (Host set)."""
    lines = [f"GET {path} HTTP/1.1", "Host: gateway"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
