"""Upstream accounts: who the gateway signs as, where it sends, and under which namespace.

An `Account` is one upstream host with one key pair: the single account of the
`CHARGEPILOT_*` settings, or each entry of `CHARGEPILOT_ACCOUNTS_FILE` (an EU and a US host,
or one key per customer).  Each account has its own Redis namespace, so gateways of
different accounts sharing one Redis never see each other's entries, rate budget, pauses
or locks; the namespace is derived from the base URL and API key unless
`GATEWAY_NAMESPACE` names one.

The file is read once at start (and validated there): a malformed file stops the start
with one line naming `CHARGEPILOT_ACCOUNTS_FILE`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from .secret import Secret, SettingsError

ACCOUNTS_FILE = "CHARGEPILOT_ACCOUNTS_FILE"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_KEYS = frozenset(
    {"name", "base_url", "api_key", "api_key_file", "api_secret", "api_secret_file", "rps",
     "sign_path"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    base_url: str
    api_key: Secret
    api_secret: Secret
    sign_path: Literal["full", "relative"]
    rps: float
    namespace: str


def derived_namespace(base_url: str, api_key: str) -> str:
    """A stable, non-reversible namespace for one upstream account."""
    digest = hashlib.sha256(f"{base_url}\n{api_key}".encode()).hexdigest()
    return digest[:16]


def load_accounts(
    path: str,
    *,
    default_rps: float,
    default_sign_path: Literal["full", "relative"],
    namespace: str | None,
    validate_url: Any,
) -> tuple[Account, ...]:
    """Parse and validate the accounts file; every problem names the file's variable."""
    try:
        raw = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise SettingsError(ACCOUNTS_FILE, f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise SettingsError(ACCOUNTS_FILE, f"{path} is not JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise SettingsError(ACCOUNTS_FILE, f"{path} must hold a non-empty JSON list of accounts")
    accounts: list[Account] = []
    for index, item in enumerate(raw, start=1):
        accounts.append(
            _account(item, index, default_rps, default_sign_path, namespace, validate_url)
        )
    names = [account.name for account in accounts]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise SettingsError(ACCOUNTS_FILE, f"account name {duplicate!r} is used twice")
    return tuple(accounts)


def _account(
    item: Any,
    index: int,
    default_rps: float,
    default_sign_path: Literal["full", "relative"],
    namespace: str | None,
    validate_url: Any,
) -> Account:
    where = f"account {index}"
    if not isinstance(item, dict):
        raise SettingsError(ACCOUNTS_FILE, f"{where} must be an object")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise SettingsError(ACCOUNTS_FILE, f"{where} has unknown field {unknown[0]!r}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SettingsError(
            ACCOUNTS_FILE, f"{where}: name must be 1-32 of a-z 0-9 _ . - (starting alphanumeric)"
        )
    where = f"account {name!r}"
    base_url = item.get("base_url")
    if not isinstance(base_url, str):
        raise SettingsError(ACCOUNTS_FILE, f"{where}: base_url must be a string")
    try:
        base_url = validate_url(base_url)
    except SettingsError as error:
        raise SettingsError(ACCOUNTS_FILE, f"{where}: {error}") from None
    api_key = _credential(item, "api_key", where)
    api_secret = _credential(item, "api_secret", where)
    rps = item.get("rps", default_rps)
    if isinstance(rps, bool) or not isinstance(rps, int | float) or not 0 < rps < 1e6:
        raise SettingsError(ACCOUNTS_FILE, f"{where}: rps must be a number greater than 0")
    sign_path = item.get("sign_path", default_sign_path)
    if sign_path not in ("full", "relative"):
        raise SettingsError(ACCOUNTS_FILE, f"{where}: sign_path must be full or relative")
    own = f"{namespace}-{name}" if namespace else derived_namespace(base_url, api_key.reveal())
    return Account(name, base_url, api_key, api_secret, sign_path, float(rps), own)


def _credential(item: dict[str, Any], field: str, where: str) -> Secret:
    direct, path = item.get(field), item.get(f"{field}_file")
    if (direct is None) == (path is None):
        raise SettingsError(ACCOUNTS_FILE, f"{where}: give exactly one of {field}, {field}_file")
    if path is not None:
        if not isinstance(path, str):
            raise SettingsError(ACCOUNTS_FILE, f"{where}: {field}_file must be a path")
        try:
            direct = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(
                ACCOUNTS_FILE, f"{where}: cannot read {field}_file {path}: {exc.strerror}"
            ) from None
    if not isinstance(direct, str) or not direct.strip():
        raise SettingsError(ACCOUNTS_FILE, f"{where}: {field} is empty")
    return Secret(direct.strip())
