"""Content codings and HEAD: every coding decodes to exactly the identity JSON, q-value
negotiation (`*`, `q=0`, ties), a strong ETag and a 304 per coding, `Vary` everywhere,
and HEAD on every GET route with the same status and headers and no body."""

from __future__ import annotations

import gzip
import os

import brotli
import pytest

from gateway.encodings import negotiate, variants
from gateway.entry import Entry
from tests.conftest import GatewayFactory, Simulator, settings_for

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

DECODE = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "zstd": zstd.decompress,
}
DATA_PATHS = [
    "/sites",
    "/sites/site-0002",
    "/sites/site-0002/connectors",
    "/sites/site-0002/nodes",
    "/connectors?limit=50",
    "/connectors/site-0002-cs-001-c1",
]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "identity"),
        ("", "identity"),
        ("gzip", "gzip"),
        ("gzip, br", "br"),
        ("gzip, br, zstd", "zstd"),
        ("br;q=0.5, gzip;q=0.8", "gzip"),
        ("zstd;q=0, br;q=0, gzip;q=0", "identity"),
        ("*", "zstd"),
        ("*;q=0.5, br", "br"),
        ("*;q=0, gzip;q=0.1", "gzip"),
        ("*;q=0", None),
        ("identity;q=0", None),
        ("identity;q=0, gzip", "gzip"),
        ("deflate, compress", "identity"),
        ("GZIP;Q=1", "gzip"),
        ("gzip;q=nonsense, br;q=0.3", "br"),
        ("identity, gzip;q=0.5", "identity"),
    ],
)
def test_negotiation(header: str | None, expected: str | None) -> None:
    assert negotiate(header) == expected
    assert negotiate(header) == expected  # remembered, same answer


def test_variants_only_where_they_pay() -> None:
    assert variants(b"x" * 100) == {}
    built = variants(b'{"a":' + b"1" * 5000 + b"}")
    assert set(built) == {"gzip", "br", "zstd"}
    assert variants(os.urandom(4096)) == {}  # incompressible: nothing kept
    entry = Entry.for_body(b"y" * 4000, 1.0, built)
    assert Entry.decode(entry.encode()) == entry
    assert Entry.decode(entry.encode()).variants == built  # type: ignore[union-attr]


async def test_every_coding_decodes_to_the_identity_json(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator))
    for path in DATA_PATHS:
        plain = await gw.get(path, headers={"Accept-Encoding": "identity"})
        assert plain.status == 200, path
        identity = await plain.read()
        assert "Content-Encoding" not in plain.headers
        assert plain.headers["Vary"] == "Accept-Encoding"
        tags = {plain.headers["ETag"]}
        for coding, decode in DECODE.items():
            response = await gw.get(
                path, headers={"Accept-Encoding": coding}, auto_decompress=False
            )
            assert response.status == 200
            assert response.headers["Vary"] == "Accept-Encoding"
            raw = await response.read()
            if len(identity) < 1024 and "Content-Encoding" not in response.headers:
                assert raw == identity  # small bodies may go uncompressed
                continue
            assert response.headers["Content-Encoding"] == coding, (path, coding)
            assert decode(raw) == identity
            assert len(raw) < len(identity)
            tag = response.headers["ETag"]
            assert tag.startswith('"') and not tag.startswith("W/")
            tags.add(tag)
            # 304 only for the tag of the representation that would be sent.
            same = await gw.get(path, headers={"Accept-Encoding": coding, "If-None-Match": tag})
            assert same.status == 304 and same.headers["ETag"] == tag
            other = await gw.get(
                path,
                headers={"Accept-Encoding": coding, "If-None-Match": plain.headers["ETag"]},
            )
            assert other.status == 200
        assert len(tags) in (1, 4), path  # one tag per representation


async def test_nothing_acceptable_is_a_406_problem(
    simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(settings_for(simulator))
    response = await gw.get("/sites", headers={"Accept-Encoding": "*;q=0"})
    assert response.status == 406
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        *DATA_PATHS,
        "/sites/nowhere",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/changes",
        "/no/such/route",
        "/sites/a%01b",
    ],
)
async def test_head_on_every_get_route(
    simulator: Simulator, make_gateway: GatewayFactory, path: str
) -> None:
    gw = await make_gateway(settings_for(simulator))
    await gw.get(path)  # warm: the HEAD below is then a cache hit where there is a cache
    get = await gw.get(path, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    head = await gw.head(path, headers={"Accept-Encoding": "gzip"})
    assert head.status == get.status
    assert await head.read() == b""
    ignored = {"Date", "X-Request-ID", "Age", "Cache-Status", "Content-Length"}
    for name in set(get.headers) - ignored:
        if path == "/metrics" or path == "/readyz":
            continue  # their values change between two requests
        assert head.headers.get(name) == get.headers[name], (path, name)
    if get.status == 200 and "Content-Length" in get.headers and path != "/metrics":
        assert head.headers["Content-Length"] == get.headers["Content-Length"]
