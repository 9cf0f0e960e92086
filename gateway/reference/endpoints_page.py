"""The endpoints page (`docs/endpoints.md`) from the OpenAPI document the app serves
(`gateway.openapi.document`): every route with its methods, summary, auth, parameters and
answers, then every schema of the answers.  Prose only where the document has no data."""

from __future__ import annotations

from typing import Any

from .. import normalize
from ..openapi import document
from ..settings import Settings
from .markdown import anchor, code, page, table

INTRO = """
Every route below is also described, machine-readably, by `GET /openapi.json` (OpenAPI
3.1). Lists are `{"data": [...]}` (plus `next_cursor` where paged); single objects are
bare. Every `GET` route also answers `HEAD`: the same status and headers, no body. Data
answers carry the cache headers ([headers](headers.md)); every error is
`application/problem+json` ([errors](errors.md)).

**Auth.** *client*: when `GATEWAY_CLIENT_TOKENS` (or `_FILE`) is set, send
`Authorization: Bearer <token>`; without client tokens these routes are open. *admin*:
`Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`; while no admin token is set the admin routes
answer 404. *none*: never needs a token (health, readiness, metrics, this description).

**Ids.** A site or connector id is 1-200 characters without control characters; anything
else is a 400. It travels upstream as exactly one percent-encoded path segment, so every
valid id (`/` sent as `%2F` included) answers 200 or 404, never 5xx.

**Several accounts** (`CHARGEPILOT_ACCOUNTS_FILE`): every Site and Connector carries
`account`; lists merge every account's data and `?account=` narrows them to one; an id
listed by several accounts is a 409 unless `?account=` names one; when one account's
upstream is down with nothing stale held, lists still answer 200 with the others' data and
`"unavailable_accounts": [...]`. `/changes` is a feed per account: with several accounts
`?account=` is required there (400 without it). With one account, `account` is `default`.
"""

# The settings the page is rendered for: client and admin tokens set, so the auth of each
# route shows; every other setting at its default.
REFERENCE_ENV = {
    "CHARGEPILOT_BASE_URL": "https://chargepilot-api.example/rest/v1",
    "CHARGEPILOT_API_KEY": "reference-key",
    "CHARGEPILOT_API_SECRET": "reference-secret",
    "GATEWAY_CLIENT_TOKENS": "reference-token",
    "GATEWAY_ADMIN_TOKEN": "reference-admin",
}


def reference_settings() -> Settings:
    return Settings.from_env(REFERENCE_ENV)


def reference_document() -> dict[str, Any]:
    return document(reference_settings())


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def describe(schema: dict[str, Any]) -> str:
    """One schema in a few words: type, bounds, choices."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[{name}](#{anchor(name)})"
    if "enum" in schema:
        return "one of " + ", ".join(code(str(value)) for value in schema["enum"])
    kind = schema.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    shown = [k for k in kinds if k != "null"]
    text = " or ".join(shown) or "any"
    if "array" in shown and "items" in schema:
        text = "list of " + describe(schema["items"])
    if "object" in shown and "properties" in schema:
        fields = ", ".join(
            f"{code(name)}: {describe(value)}" for name, value in schema["properties"].items()
        )
        text = "{" + fields + "}"
    bounds = []
    if "minimum" in schema or "maximum" in schema:
        bounds.append(f"{schema.get('minimum', '…')}-{schema.get('maximum', '…')}")
    if "minLength" in schema or "maxLength" in schema:
        bounds.append(f"{schema.get('minLength', 0)}-{schema.get('maxLength', '…')} characters")
    if "maxItems" in schema:
        bounds.append(f"at most {schema['maxItems']}")
    if "default" in schema:
        bounds.append(f"default {code(str(schema['default']))}")
    if bounds:
        text += " (" + ", ".join(bounds) + ")"
    if "null" in kinds:
        text += " or null"
    return text


def _parameter(parameter: dict[str, Any]) -> list[str]:
    schema = parameter.get("schema", {})
    # The account enum is the configured names: say so instead.
    kind = "a configured account name" if parameter["name"] == "account" else describe(schema)
    notes = [parameter.get("description") or schema.get("description") or ""]
    example = parameter.get("example") or (schema.get("examples") or [None])[0]
    if example is not None:
        notes.append(f"e.g. {code(str(example))}")
    return [code(parameter["name"]), parameter["in"], kind, "; ".join(n for n in notes if n)]


def _answer(answer: dict[str, Any]) -> str:
    parts = [answer.get("description", "")]
    for media, content in answer.get("content", {}).items():
        parts.append(f"{code(media)} {describe(content.get('schema', {}))}")
    headers = answer.get("headers")
    if headers:
        parts.append("headers " + ", ".join(code(name) for name in headers))
    return "; ".join(part for part in parts if part)


def _responses(responses: dict[str, Any]) -> list[list[str]]:
    """One row per answer; every problem status in one row."""
    rows = []
    problems = [status for status, answer in responses.items() if "$ref" in answer]
    for status, answer in responses.items():
        if "$ref" not in answer:
            rows.append([code(status), _answer(answer)])
    if problems:
        statuses = ", ".join(code(status) for status in problems)
        rows.append(
            [statuses, "`application/problem+json` [Problem](#problem): see [errors](errors.md)"]
        )
    return rows


def _auth(operation: dict[str, Any]) -> str:
    security = operation.get("security")
    if security == []:
        return "none"
    if security is None:
        return "client"  # not rendered for this page's settings, where tokens are on
    return ", ".join(name for requirement in security for name in requirement)


def _operations(path: str, item: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    methods = [method.upper() for method in item]
    main = item.get("get") or item[next(iter(item))]
    return methods, main


def _route(path: str, item: dict[str, Any]) -> str:
    methods, operation = _operations(path, item)
    lines = [f"## {' '.join(m for m in methods if m != 'HEAD')} {path}", ""]
    lines.append(operation["summary"] + ".")
    lines.append("")
    lines.append(f"Methods: {', '.join(methods)}. Auth: {_auth(operation)}. "
                 f"Operation: {code(operation['operationId'])}.")  # fmt: skip
    parameters = operation.get("parameters", [])
    if parameters:
        rows = [_parameter(parameter) for parameter in parameters]
        lines += ["", table(["parameter", "in", "value", "notes"], rows)]
    body = operation.get("requestBody")
    if body:
        for media, content in body["content"].items():
            lines += ["", f"Request body ({code(media)}): {_object(content['schema'])}"]
    responses = operation["responses"]
    lines += ["", table(["status", "answer"], _responses(responses))]
    return "\n".join(lines)


def _object(schema: dict[str, Any]) -> str:
    fields = ", ".join(
        f"{code(name)} ({describe(value)})" for name, value in schema.get("properties", {}).items()
    )
    closed = " and nothing else" if schema.get("additionalProperties") is False else ""
    return f"an object with {fields or 'any fields'}{closed}"


def _schema(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    rows = [
        [
            code(field),
            describe(value),
            "yes" if field in required else "",
            value.get("description", ""),
        ]
        for field, value in schema.get("properties", {}).items()
    ]
    text = f"### {name}\n\n"
    text += table(["field", "value", "always", "notes"], rows) if rows else "Any JSON object."
    return text


def _overview(paths: dict[str, Any]) -> str:
    rows = []
    for path, item in paths.items():
        methods, operation = _operations(path, item)
        title = f"{' '.join(m for m in methods if m != 'HEAD')} {path}"
        rows.append([f"[{code(title)}](#{anchor(title)})", operation["summary"], _auth(operation)])
    return table(["route", "what", "auth"], rows)


def render() -> str:
    doc = reference_document()
    components = doc["components"]
    routes = [_route(path, item) for path, item in doc["paths"].items()]
    schemas = [_schema(name, schema) for name, schema in components["schemas"].items()]
    return page(
        "Endpoints",
        INTRO,
        _overview(doc["paths"]),
        *routes,
        "## Schemas\n\n" + SCHEMA_NOTES.strip(),
        normalized_fields(),
        *schemas,
    )


SCHEMA_NOTES = """
**Site** is the upstream site normalized: every documented field is present (an absent
scalar is `null`, an absent list `[]`, an absent `meter` or `local_controller` `null`); ids
are strings; numeric strings become numbers and `depth` an integer; a value that cannot be
read as its type becomes `null` and is counted in `gateway_normalization_issues_total`; `type`
is lower snake case (`"charging station"` → `"charging_station"`); `children` are sorted by
`parameters.order` (stable, missing order last); fields the upstream documentation does not
know are kept as they came. `/sites` is sorted by id.
**Connector**: all upstream connector fields, plus its place in the site: `path` runs from
the top of the fuse tree down to the node carrying it, `effective_limit` is the smallest
non-null `limit` on that path, `max_charging_current` the largest `charging_capability`
value, `v2g` is true when `discharge_capability` is not empty. `/connectors` is ordered by
site id, then connector id. **Node** (`/sites/{id}/nodes`, pre-order): `node_id` is the
positional index path (`"0.2.1"`), stable while the tree is unchanged; `depth` is 0 at the
top; `connector_count` counts the node's own connectors, `connector_count_total` its whole
subtree.
"""


def _field_type(name: str, reader: object) -> str:
    basic = {
        normalize._read_string: "string or null",
        normalize._read_number: "number or null",
        normalize._read_integer: "integer or null",
        normalize._read_bool: "boolean or null",
        normalize._read_number_list: "list of numbers",
    }
    if reader in basic:
        return basic[reader]
    if name == "connectors":
        return "list of connector objects"
    return "object or null"


def normalized_fields() -> str:
    """The documented upstream fields the gateway always sends, from `normalize.py`'s
    tables (its private names: the tables are the module's data, read here only)."""
    kinds = (
        ("Site", (*normalize._SITE_FIELDS,)),
        ("`local_controller`", normalize._LOCAL_CONTROLLER_FIELDS),
        ("fuse tree node `parameters`", normalize._PARAMETER_FIELDS),
        ("`meter`", normalize._METER_FIELDS),
        ("connector (in `parameters.connectors`)", normalize._CONNECTOR_FIELDS),
    )
    rows = [
        [kind, ", ".join(f"{code(name)} ({_field_type(name, read)})" for name, read in fields)]
        for kind, fields in kinds
    ]
    rows[0][1] = f"{code('id')} (string), " + rows[0][1] + ", `fuse_tree` (list of nodes)"
    nodes = ", ".join(code(key) for key in normalize._NODE_KEYS)
    rows.insert(2, ["fuse tree node", f"{nodes} (`type` in lower snake case)"])
    return "### Normalized fields\n\n" + table(["object", "fields, always present"], rows)
