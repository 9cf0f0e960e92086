"""`/connectors` query parameters and the signed opaque cursors that page through them.

A cursor is base64url(tag + JSON): the JSON names the last position returned and a
fingerprint of the query's filters, the tag is an HMAC over it with the cursor key.  The key
is `GATEWAY_CURSOR_SECRET`, or one generated once and shared through Redis (so every replica
accepts every replica's cursors), never the upstream API secret.  A tampered cursor, or one
from another query, is a 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

import orjson

from .errors import BadRequest
from .fleet import DEFAULT_LIMIT, MAX_LIMIT, PositionKey, Query
from .ids import validate_id
from .params import single_values

FILTERS = ("site_id", "charging_station_id", "v2g", "account")
PARAMETERS = frozenset({*FILTERS, "limit", "cursor"})
MAX_CURSOR_LENGTH = 4096


class Cursors:
    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"chargepilot-gateway cursor\x00" + key).digest()

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, query: Query, after: PositionKey, account: str | None = None) -> str:
        """`account`: pages merged across accounts also name the last connector's account."""
        position: dict[str, object] = {"q": _fingerprint(query), "k": list(after)}
        if account is not None:
            position["a"] = account
        payload = orjson.dumps(position)
        return base64.urlsafe_b64encode(self._tag(payload) + payload).decode("ascii").rstrip("=")

    def decode(self, query: Query, cursor: str) -> tuple[PositionKey, str | None]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise BadRequest("cursor is not valid") from None
        tag, payload = raw[:16], raw[16:]
        if len(tag) != 16 or not hmac.compare_digest(tag, self._tag(payload)):
            raise BadRequest("cursor is not valid")
        try:
            data = orjson.loads(payload)
            site_id, rank, connector_id, occurrence = data["k"]
            key = (str(site_id), int(rank), str(connector_id), int(occurrence))
            fingerprint = data["q"]
            account = data.get("a")
            if account is not None and not isinstance(account, str):
                raise TypeError("account")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise BadRequest("cursor is not valid") from None
        if fingerprint != _fingerprint(query):
            raise BadRequest("cursor belongs to another query (filters differ)")
        return key, account


def _fingerprint(query: Query) -> str:
    return hashlib.sha256(orjson.dumps(list(query.filters))).hexdigest()[:16]


def parse_query(params: Mapping[str, str], cursors: Cursors) -> Query:
    """Validate `/connectors` query parameters; any problem is a 400 naming the parameter."""
    params = single_values(params, PARAMETERS, longest={"cursor": MAX_CURSOR_LENGTH})
    v2g: bool | None = None
    if "v2g" in params:
        if params["v2g"] not in ("true", "false"):
            raise BadRequest("v2g must be true or false")
        v2g = params["v2g"] == "true"
    limit = DEFAULT_LIMIT
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            raise BadRequest("limit must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    site_id = params.get("site_id")
    if site_id is not None:
        validate_id(site_id, "site_id")
    query = Query(site_id, params.get("charging_station_id"), v2g, params.get("account"), limit)
    if "cursor" in params:
        after, account = cursors.decode(query, params["cursor"])
        query = Query(*query.filters, limit=limit, after=after, after_account=account)
    return query
