"""The OpenAPI description of `GET /changes` (the change feed), as plain data; `openapi.py`
puts it in the document."""

from __future__ import annotations

from typing import Any

from .feed import DEFAULT_LIMIT, MAX_LIMIT
from .openapi_schemas import limit_parameter

_EVENT_ID = {"type": "string", "pattern": "^[0-9]+(-[0-9]+)?$", "examples": ["1714650000000-0"]}

CHANGE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "site_id", "kind", "at", "etag", "changes"],
    "properties": {
        "id": {**_EVENT_ID, "description": "increasing; the same on every replica"},
        "site_id": {"type": "string"},
        "account": {"type": "string", "description": "with several upstream accounts only"},
        "kind": {"type": "string", "enum": ["site.created", "site.updated", "site.deleted"]},
        "at": {"type": "string", "format": "date-time", "description": "when it was fetched"},
        "etag": {
            "type": ["string", "null"],
            "description": "the site's new ETag (as /sites/{id} sends it); null when deleted",
        },
        "changes": {
            "type": "array",
            "maxItems": 100,
            "items": {
                "type": "object",
                "required": ["path", "before", "after"],
                "properties": {
                    "path": {
                        "type": "string",
                        "examples": ["fuse_tree/0/children/1/parameters/limit"],
                    },
                    "before": {},
                    "after": {},
                },
            },
        },
        "truncated": {
            "type": "boolean",
            "description": "more than 100 changes, or not known (the previous content was no "
            "longer cached): fetch the site",
        },
    },
}


def changes_path(problem: dict[str, Any]) -> dict[str, Any]:
    event = {"$ref": "#/components/schemas/ChangeEvent"}
    page = {
        "type": "object",
        "required": ["data", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": event},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass as `after` for the next page; null once caught up",
            },
            "reset": {"type": "boolean", "description": "events after `after` were dropped"},
        },
    }
    stream = (
        "Server-Sent Events: `id:` (the event id), `event:` (site.created, site.updated, "
        "site.deleted; `reset` first when the position is older than what is kept), `data:` "
        "(the ChangeEvent JSON); a comment line every 15 s without events"
    )
    return {
        "get": {
            "summary": "The change feed: one event per site created, updated or deleted upstream",
            "parameters": [
                {
                    "name": "after",
                    "in": "query",
                    "schema": _EVENT_ID,
                    "description": "resume after this event id (0: from the oldest kept); a "
                    "stream also takes the Last-Event-ID header",
                },
                limit_parameter(MAX_LIMIT, DEFAULT_LIMIT),
                {"name": "Last-Event-ID", "in": "header", "schema": _EVENT_ID},
            ],
            "responses": {
                "200": {
                    "description": "a page of events, or the event stream",
                    "content": {
                        "application/json": {"schema": page},
                        "text/event-stream": {"schema": {"type": "string", "description": stream}},
                    },
                },
                **{code: problem for code in ("400", "401", "429", "503")},
            },
        }
    }
