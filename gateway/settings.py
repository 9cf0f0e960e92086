"""Settings: one frozen dataclass, parsed and validated from the environment once at start.

Every variable of the CONTRACT is read here, including those only later features act on,
so a typo or a bad value stops the process at start with one line naming the variable
(`SettingsError`), never half-way through serving.  Secrets are wrapped in `Secret`, whose
repr and str are redacted, so a settings object can be logged without leaking them.
The list of variables, with their defaults and meanings for people, is `settings_specs.py`;
several upstream accounts come from `accounts.py`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .accounts import ACCOUNTS_FILE, NAMESPACE, Account, derived_namespace, load_accounts
from .secret import Secret, SettingsError
from .settings_specs import ENVIRONMENT_VARIABLES

__all__ = ["ENVIRONMENT_VARIABLES", "Account", "Secret", "Settings", "SettingsError"]

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8080
DEFAULT_CACHE_TTL = 300.0
DEFAULT_CACHE_STALE = 86400.0
DEFAULT_NEGATIVE_TTL = 30.0
DEFAULT_UPSTREAM_TIMEOUT = 10.0
DEFAULT_UPSTREAM_RPS = 5.0
DEFAULT_UPSTREAM_RETRIES = 2
DEFAULT_CIRCUIT_FAILURES = 5
DEFAULT_CIRCUIT_COOLDOWN = 30.0
DEFAULT_REDIS_TIMEOUT = 0.5
DEFAULT_REFRESH_AHEAD = 0.1
DEFAULT_REFRESH_SHARE = 0.5
DEFAULT_CLIENT_RPS = 0.0
DEFAULT_MEMORY_CACHE_MB = 256
DEFAULT_MEMORY_CACHE_ENTRIES = 100_000
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_SHUTDOWN_DELAY = 5.0
DEFAULT_DRAIN_TIMEOUT = 25.0
DEFAULT_CHANGES_RETENTION = 10_000
DEFAULT_MAX_STREAMS = 1000
DEFAULT_EVENTS_TTL = 30.0

REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Settings:
    base_url: str
    api_key: Secret
    api_secret: Secret
    sign_path: Literal["full", "relative"] = "full"
    # Empty: the one account above; else CHARGEPILOT_ACCOUNTS_FILE's accounts.
    accounts_file: tuple[Account, ...] = ()
    redis_url: str | None = None
    namespace: str | None = None  # None: derived per account
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    shutdown_delay: float = DEFAULT_SHUTDOWN_DELAY
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    workers: int = 1
    metrics_port: int | None = None
    cache_ttl: float = DEFAULT_CACHE_TTL
    cache_stale: float = DEFAULT_CACHE_STALE
    negative_ttl: float = DEFAULT_NEGATIVE_TTL
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    upstream_rps: float = DEFAULT_UPSTREAM_RPS
    upstream_retries: int = DEFAULT_UPSTREAM_RETRIES
    circuit_failures: int = DEFAULT_CIRCUIT_FAILURES
    circuit_cooldown: float = DEFAULT_CIRCUIT_COOLDOWN
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT
    refresh_ahead: float = DEFAULT_REFRESH_AHEAD
    refresh_share: float = DEFAULT_REFRESH_SHARE
    changes_retention: int = DEFAULT_CHANGES_RETENTION
    max_streams: int = DEFAULT_MAX_STREAMS
    events_ttl: float = DEFAULT_EVENTS_TTL
    client_rps: float = DEFAULT_CLIENT_RPS
    trusted_proxies: tuple[str, ...] = ()
    # name -> token; empty: data endpoints are open.
    client_tokens: Mapping[str, Secret] = field(default_factory=dict)
    admin_token: Secret | None = None
    cursor_secret: Secret | None = None
    memory_cache_mb: int = DEFAULT_MEMORY_CACHE_MB
    memory_cache_entries: int = DEFAULT_MEMORY_CACHE_ENTRIES
    log_level: str = "INFO"
    tracing: bool = False  # an OTLP endpoint is configured
    demo: bool = False

    @property
    def accounts(self) -> tuple[Account, ...]:
        """The upstream accounts served as one fleet (one, unless an accounts file is set)."""
        if self.accounts_file:
            return self.accounts_file
        namespace = self.namespace or derived_namespace(self.base_url, self.api_key.reveal())
        return (
            Account(
                "default",
                self.base_url,
                self.api_key,
                self.api_secret,
                self.sign_path,
                self.upstream_rps,
                namespace,
            ),
        )

    @property
    def multi_account(self) -> bool:
        return len(self.accounts_file) > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, demo: bool = False) -> Settings:
        """Build settings from `env`; raise `SettingsError` naming the first bad variable."""
        reader = _Reader(env)
        accounts_path = reader.string(ACCOUNTS_FILE)
        needs_single = accounts_path is None and not demo
        base_url = reader.string("CHARGEPILOT_BASE_URL")
        if base_url is None:
            if needs_single:
                raise SettingsError("CHARGEPILOT_BASE_URL", "required (or run with --demo)")
            base_url = "http://127.0.0.1:0/rest/v1"  # replaced by the simulator's address
        api_key = reader.secret("CHARGEPILOT_API_KEY", required=needs_single)
        api_secret = reader.secret("CHARGEPILOT_API_SECRET", required=needs_single)
        port = reader.integer("GATEWAY_PORT", DEFAULT_PORT, low=0, high=65535)
        metrics_port = reader.optional_integer("GATEWAY_METRICS_PORT", low=0, high=65535)
        if metrics_port is not None and metrics_port == port and port != 0:
            raise SettingsError("GATEWAY_METRICS_PORT", "must differ from GATEWAY_PORT")
        sign_path: Literal["full", "relative"] = reader.choice(  # type: ignore[assignment]
            "CHARGEPILOT_SIGN_PATH", "full", ("full", "relative")
        )
        upstream_rps = reader.duration("GATEWAY_UPSTREAM_RPS", DEFAULT_UPSTREAM_RPS, positive=True)
        namespace = reader.string("GATEWAY_NAMESPACE")
        if namespace is not None and not NAMESPACE.match(namespace):
            raise SettingsError(
                "GATEWAY_NAMESPACE", "must be 1-64 letters, digits, '.', '_' or '-'"
            )
        accounts: tuple[Account, ...] = ()
        if accounts_path is not None:
            accounts = load_accounts(
                accounts_path,
                default_rps=upstream_rps,
                default_sign_path=sign_path,
                namespace=namespace,
                validate_url=_validate_base_url,
            )
        return cls(
            base_url=_validate_base_url(base_url),
            api_key=api_key or Secret("demo-key"),
            api_secret=api_secret or Secret("demo-secret"),
            sign_path=sign_path,
            accounts_file=accounts,
            redis_url=_validate_redis_url(reader.string("REDIS_URL")),
            namespace=namespace,
            host=reader.string("GATEWAY_HOST") or DEFAULT_HOST,
            port=port,
            header_timeout=reader.duration(
                "GATEWAY_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT, positive=True
            ),
            keepalive_timeout=reader.duration(
                "GATEWAY_KEEPALIVE_TIMEOUT", DEFAULT_KEEPALIVE_TIMEOUT, positive=True
            ),
            max_connections=reader.integer(
                "GATEWAY_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, low=1, high=1_000_000
            ),
            shutdown_delay=reader.duration("GATEWAY_SHUTDOWN_DELAY", DEFAULT_SHUTDOWN_DELAY),
            drain_timeout=reader.duration(
                "GATEWAY_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT, positive=True
            ),
            workers=reader.integer("GATEWAY_WORKERS", 1, low=1, high=256),
            metrics_port=metrics_port,
            cache_ttl=reader.duration("GATEWAY_CACHE_TTL", DEFAULT_CACHE_TTL),
            cache_stale=reader.duration("GATEWAY_CACHE_STALE", DEFAULT_CACHE_STALE),
            negative_ttl=reader.duration("GATEWAY_NEGATIVE_TTL", DEFAULT_NEGATIVE_TTL),
            upstream_timeout=reader.duration(
                "GATEWAY_UPSTREAM_TIMEOUT", DEFAULT_UPSTREAM_TIMEOUT, positive=True
            ),
            upstream_rps=upstream_rps,
            upstream_retries=reader.integer(
                "GATEWAY_UPSTREAM_RETRIES", DEFAULT_UPSTREAM_RETRIES, low=0, high=10
            ),
            circuit_failures=reader.integer(
                "GATEWAY_CIRCUIT_FAILURES", DEFAULT_CIRCUIT_FAILURES, low=1, high=1000
            ),
            circuit_cooldown=reader.duration(
                "GATEWAY_CIRCUIT_COOLDOWN", DEFAULT_CIRCUIT_COOLDOWN, positive=True
            ),
            redis_timeout=reader.duration(
                "GATEWAY_REDIS_TIMEOUT", DEFAULT_REDIS_TIMEOUT, positive=True
            ),
            refresh_ahead=reader.fraction("GATEWAY_REFRESH_AHEAD", DEFAULT_REFRESH_AHEAD),
            refresh_share=reader.fraction(
                "GATEWAY_REFRESH_SHARE", DEFAULT_REFRESH_SHARE, inclusive=True
            ),
            changes_retention=reader.integer(
                "GATEWAY_CHANGES_RETENTION", DEFAULT_CHANGES_RETENTION, low=1, high=10_000_000
            ),
            max_streams=reader.integer(
                "GATEWAY_MAX_STREAMS", DEFAULT_MAX_STREAMS, low=0, high=1_000_000
            ),
            events_ttl=reader.duration("GATEWAY_EVENTS_TTL", DEFAULT_EVENTS_TTL),
            client_rps=reader.duration("GATEWAY_CLIENT_RPS", DEFAULT_CLIENT_RPS),
            trusted_proxies=reader.networks("GATEWAY_TRUSTED_PROXIES"),
            client_tokens=reader.client_tokens(),
            admin_token=reader.secret("GATEWAY_ADMIN_TOKEN", required=False),
            cursor_secret=reader.secret("GATEWAY_CURSOR_SECRET", required=False),
            memory_cache_mb=reader.integer(
                "GATEWAY_MEMORY_CACHE_MB", DEFAULT_MEMORY_CACHE_MB, low=1, high=1 << 20
            ),
            memory_cache_entries=reader.integer(
                "GATEWAY_MEMORY_CACHE_ENTRIES", DEFAULT_MEMORY_CACHE_ENTRIES, low=1, high=1 << 30
            ),
            log_level=reader.choice("GATEWAY_LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
            tracing=reader.otlp_endpoint() is not None,
            demo=demo,
        )


class _Reader:
    """Typed reads of single variables; each failure names its variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def string(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def secret(self, name: str, *, required: bool) -> Secret | None:
        direct = self.string(name)
        path = self.string(f"{name}_FILE")
        if direct is not None and path is not None:
            raise SettingsError(name, f"set either {name} or {name}_FILE, not both")
        if path is not None:
            try:
                direct = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SettingsError(f"{name}_FILE", f"cannot read {path}: {exc.strerror}") from None
            if not direct:
                raise SettingsError(f"{name}_FILE", f"{path} is empty")
        if direct is None:
            if required:
                raise SettingsError(name, f"required (or {name}_FILE)")
            return None
        return Secret(direct)

    def choice(
        self, name: str, default: str, allowed: tuple[str, ...], *, upper: bool = False
    ) -> str:
        value = self.string(name)
        if value is None:
            return default
        value = value.upper() if upper else value.lower()
        if value not in allowed:
            raise SettingsError(name, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        number = self.optional_integer(name, low=low, high=high)
        return default if number is None else number

    def optional_integer(self, name: str, *, low: int, high: int) -> int | None:
        value = self.string(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(name, f"must be an integer, got {value!r}") from None
        if not low <= number <= high:
            raise SettingsError(name, f"must be between {low} and {high}, got {number}")
        return number

    def duration(self, name: str, default: float, *, positive: bool = False) -> float:
        value = self.string(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(name, f"must be a number of seconds, got {value!r}") from None
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            bound = "greater than 0" if positive else "0 or more"
            raise SettingsError(name, f"must be {bound}, got {value!r}")
        return number

    def fraction(self, name: str, default: float, *, inclusive: bool = False) -> float:
        number = self.duration(name, default)
        if number > 1 or (number == 1 and not inclusive):
            bounds = "[0, 1]" if inclusive else "[0, 1)"
            raise SettingsError(name, f"must be a fraction in {bounds}, got {number}")
        return number

    def networks(self, name: str) -> tuple[str, ...]:
        value = self.string(name)
        if value is None:
            return ()
        found: list[str] = []
        for item in (part.strip() for part in value.split(",")):
            try:
                found.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise SettingsError(name, f"{item!r} is not an address or CIDR") from None
        return tuple(found)

    def otlp_endpoint(self) -> str | None:
        traces = self.string("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        general = self.string("OTEL_EXPORTER_OTLP_ENDPOINT")
        endpoint = traces or general
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            variable = (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" if traces else "OTEL_EXPORTER_OTLP_ENDPOINT"
            )
            raise SettingsError(variable, f"must be an http(s) URL, got {endpoint!r}")
        return endpoint

    def client_tokens(self) -> dict[str, Secret]:
        tokens: dict[str, Secret] = {}
        inline = self.string("GATEWAY_CLIENT_TOKENS")
        path = self.string("GATEWAY_CLIENT_TOKENS_FILE")
        if inline is not None:
            for index, token in enumerate(t.strip() for t in inline.split(",")):
                if not token:
                    raise SettingsError("GATEWAY_CLIENT_TOKENS", "contains an empty token")
                tokens[f"client-{index + 1}"] = Secret(token)
        if path is not None:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise SettingsError(
                    "GATEWAY_CLIENT_TOKENS_FILE", f"cannot read {path}: {exc.strerror}"
                ) from None
            for number, line in enumerate(lines, start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name, sep, token = line.partition(":")
                if not sep or not _TOKEN_NAME.match(name.strip()) or not token.strip():
                    raise SettingsError(
                        "GATEWAY_CLIENT_TOKENS_FILE", f"line {number} is not name:token"
                    )
                tokens[name.strip()] = Secret(token.strip())
        return tokens


def _validate_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError("CHARGEPILOT_BASE_URL", f"must be an http(s) URL, got {url!r}")
    if parts.query or parts.fragment:
        raise SettingsError("CHARGEPILOT_BASE_URL", "must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise SettingsError("CHARGEPILOT_BASE_URL", f"has an invalid port: {url!r}") from None
    return url.rstrip("/")


def _validate_redis_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise SettingsError("REDIS_URL", f"scheme must be one of {', '.join(REDIS_SCHEMES)}")
    if parts.scheme != "unix" and not parts.netloc:
        raise SettingsError("REDIS_URL", "needs a host")
    if parts.scheme == "unix" and not parts.path:
        raise SettingsError("REDIS_URL", "unix:// needs a socket path")
    return url


def read_tokens(env: Mapping[str, str]) -> tuple[dict[str, Secret], Secret | None]:
    """The client tokens and the admin token, read again as at start (SIGHUP re-reads their
    `*_FILE`s); raises `SettingsError` naming the variable when one cannot be read."""
    reader = _Reader(env)
    return reader.client_tokens(), reader.secret("GATEWAY_ADMIN_TOKEN", required=False)
