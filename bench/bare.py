"""The floor to compare the gateway with: a minimal aiohttp app on uvloop that answers
fixed bytes, as the gateway's own process would serve them (AppRunner, no access log,
SO_REUSEPORT so several copies can share one port like the gateway's workers).

    python bench/bare.py --port 8081 --route '/sites/site-0001=body.json' [--route ...]

Each `--route PATH=FILE` (split at the last `=`) answers a GET whose path and query equal
PATH with FILE's bytes as `application/json`; anything else is 404.  Runs until SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from common import run, serve_until_signalled

BODIES = web.AppKey("bodies", dict[str, bytes])


async def answer(request: web.Request) -> web.Response:
    body = request.app[BODIES].get(request.path_qs)
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type="application/json")


async def serve(port: int, bodies: dict[str, bytes]) -> None:
    app = web.Application()
    app[BODIES] = bodies
    app.router.add_get("/{tail:.*}", answer)
    await serve_until_signalled(app, port, reuse_port=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--route", action="append", required=True, help="PATH=FILE")
    args = parser.parse_args(argv)
    bodies: dict[str, bytes] = {}
    for route in args.route:
        path, _, file = route.rpartition("=")  # PATH may hold "=" (a query), FILE does not
        if not path.startswith("/") or not file:
            parser.error(f"--route must be PATH=FILE, got {route!r}")
        bodies[path] = Path(file).read_bytes()
    run(serve(args.port, bodies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
