"""Structured JSON logs: one object per line, the request id of the current request in each.

Redaction by construction: a record's extra fields are emitted only if their names are in
`ALLOWED_FIELDS`, and no code path puts headers, credentials or tokens there; `Secret`
values render as `***`; and as a last guard, `Redactor` replaces every registered secret
string (API key, API secret, client and admin tokens) wherever it would appear in a line.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
# Upstream outcomes of the current request: a list the middleware creates per request; fetch
# tasks started by the request inherit the same list object, so their outcomes reach the
# request's access line.
upstream_outcomes_var: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "upstream_outcomes", default=None
)

ALLOWED_FIELDS = frozenset(
    {
        "route",
        "method",
        "status",
        "duration_ms",
        "cache",
        "upstream",
        "client",
        "error",
        "fill",
        "scope",
        "count",
        "sample",
        "retry_after",
        "state",
        "operation",
        "failures",
        "url",
        "workers",
        "redis",
        "listen",
        "site_id",
        "keys",
        "signal",
        "detail",
        "trace_id",
        "delay",
        "soft_limit",
        "hard_limit",
        "max_connections",
    }
)
# Names LogRecord itself uses; an allowed field must never shadow one of them (tested).
RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


class Timestamps:
    """`2026-12-01T06:45:32.426Z` for a Unix time; the seconds part is formatted once a
    second (the hit path writes thousands of lines in each)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redactor or Redactor()
        self._timestamp = Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
        fields = record.__dict__
        for name in sorted(ALLOWED_FIELDS.intersection(fields)):  # stable order for readers
            line[name] = fields[name]
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = self.formatException(record.exc_info)
        text = orjson.dumps(line, default=repr).decode("utf-8")
        return self._redact(text)


def configure(level: str, *, secrets: Iterable[str] = (), stream: Any = None) -> None:
    """Route all logging through one JSON handler at `level` (idempotent)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    redactor = Redactor(secrets)
    handler.setFormatter(JsonFormatter(redactor))
    handler._redactor = redactor  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_gateway", False):
            root.removeHandler(old)
    handler._gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's own access log is replaced by ours (one structured line per request).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def gateway_stream() -> tuple[Any, Redactor]:
    """The stream and redactor of the handler `configure` installed (for the access log's
    own writer, `access.py`); (None, an empty redactor) before `configure` ran."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_gateway", False) and isinstance(handler, logging.StreamHandler):
            return handler.stream, getattr(handler, "_redactor", Redactor())
    return None, Redactor()
