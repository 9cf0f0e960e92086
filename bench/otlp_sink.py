"""A local OTLP/HTTP trace sink for the tracing rows: it answers 200 to every
`POST /v1/traces` and counts what it received, so a benchmark can set what reached the
collector against the requests it sent.

    python bench/otlp_sink.py --port 4318        # runs until SIGTERM or SIGINT

`GET /stats` answers one JSON object: `exports` (POSTs received), `bytes` (their bodies,
decoded: aiohttp unpacks a `Content-Encoding: gzip` body, as the exporter sends with
`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`), `spans` (all spans), `spans_by_name` (e.g.
`{"GET /sites/{id}": 1234}`) and `errors` (bodies that were not an
`ExportTraceServiceRequest`; answered 400).  Protobuf bodies only (the exporter sends
`application/x-protobuf`).  No state but the counters; nothing is kept.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from aiohttp import web
from common import run, serve_until_signalled
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

COUNTS = web.AppKey("counts", Counter[str])
BY_NAME = web.AppKey("by_name", Counter[str])
ANSWER = ExportTraceServiceResponse().SerializeToString()


async def traces(request: web.Request) -> web.Response:
    counts, by_name = request.app[COUNTS], request.app[BY_NAME]
    body = await request.read()
    counts["exports"] += 1
    counts["bytes"] += len(body)
    export = ExportTraceServiceRequest()
    try:
        export.ParseFromString(body)
    except DecodeError:
        counts["errors"] += 1
        raise web.HTTPBadRequest() from None
    for resource in export.resource_spans:
        for scope in resource.scope_spans:
            counts["spans"] += len(scope.spans)
            by_name.update(span.name for span in scope.spans)
    return web.Response(body=ANSWER, content_type="application/x-protobuf")


async def stats(request: web.Request) -> web.Response:
    counts = request.app[COUNTS]
    return web.json_response(
        {
            **{name: counts[name] for name in ("exports", "bytes", "spans", "errors")},
            "spans_by_name": dict(request.app[BY_NAME]),
        }
    )


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[COUNTS], app[BY_NAME] = Counter(), Counter()
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    run(serve_until_signalled(make_app(), args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
