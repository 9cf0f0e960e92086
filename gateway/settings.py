"""Settings: one frozen dataclass, parsed and validated from the environment once at start.

Every variable of the CONTRACT is read here, including those only later features act on,
so a typo or a bad value stops the process at start with one line naming the variable
(`SettingsError`), never half-way through serving.  Secrets are wrapped in `Secret`, whose
repr and str are redacted, so a settings object can be logged without leaking them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

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
DEFAULT_CLIENT_RPS = 0.0
DEFAULT_MEMORY_CACHE_MB = 256

# Every variable `Settings.from_env` reads (a test holds it to that), for docs and manifests.
ENVIRONMENT_VARIABLES = (
    "CHARGEPILOT_BASE_URL", "CHARGEPILOT_API_KEY", "CHARGEPILOT_API_KEY_FILE",
    "CHARGEPILOT_API_SECRET", "CHARGEPILOT_API_SECRET_FILE", "CHARGEPILOT_SIGN_PATH",
    "REDIS_URL", "GATEWAY_HOST", "GATEWAY_PORT", "GATEWAY_WORKERS", "GATEWAY_METRICS_PORT",
    "GATEWAY_CACHE_TTL", "GATEWAY_CACHE_STALE", "GATEWAY_NEGATIVE_TTL",
    "GATEWAY_UPSTREAM_TIMEOUT", "GATEWAY_UPSTREAM_RPS", "GATEWAY_UPSTREAM_RETRIES",
    "GATEWAY_CIRCUIT_FAILURES", "GATEWAY_CIRCUIT_COOLDOWN", "GATEWAY_REDIS_TIMEOUT",
    "GATEWAY_REFRESH_AHEAD", "GATEWAY_CLIENT_RPS", "GATEWAY_CLIENT_TOKENS",
    "GATEWAY_CLIENT_TOKENS_FILE", "GATEWAY_ADMIN_TOKEN", "GATEWAY_ADMIN_TOKEN_FILE",
    "GATEWAY_LOG_LEVEL", "GATEWAY_MEMORY_CACHE_MB",
)  # fmt: skip
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


class SettingsError(ValueError):
    """A setting is missing or invalid; the message starts with the variable's name."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Settings:
    base_url: str
    api_key: Secret
    api_secret: Secret
    sign_path: Literal["full", "relative"] = "full"
    redis_url: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
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
    client_rps: float = DEFAULT_CLIENT_RPS
    # name -> token; empty: data endpoints are open.
    client_tokens: Mapping[str, Secret] = field(default_factory=dict)
    admin_token: Secret | None = None
    log_level: str = "INFO"
    memory_cache_mb: int = DEFAULT_MEMORY_CACHE_MB
    demo: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, demo: bool = False) -> Settings:
        """Build settings from `env`; raise `SettingsError` naming the first bad variable."""
        reader = _Reader(env)
        base_url = reader.string("CHARGEPILOT_BASE_URL")
        if base_url is None:
            if not demo:
                raise SettingsError("CHARGEPILOT_BASE_URL", "required (or run with --demo)")
            base_url = "http://127.0.0.1:0/rest/v1"  # replaced by the simulator's address
        api_key = reader.secret("CHARGEPILOT_API_KEY", required=not demo)
        api_secret = reader.secret("CHARGEPILOT_API_SECRET", required=not demo)
        port = reader.integer("GATEWAY_PORT", DEFAULT_PORT, low=0, high=65535) or 0
        metrics_port = reader.integer("GATEWAY_METRICS_PORT", None, low=0, high=65535)
        if metrics_port is not None and metrics_port == port and port != 0:
            raise SettingsError("GATEWAY_METRICS_PORT", "must differ from GATEWAY_PORT")
        return cls(
            base_url=_validate_base_url(base_url),
            api_key=api_key or Secret("demo-key"),
            api_secret=api_secret or Secret("demo-secret"),
            sign_path=reader.choice("CHARGEPILOT_SIGN_PATH", "full", ("full", "relative")),  # type: ignore[arg-type]
            redis_url=_validate_redis_url(reader.string("REDIS_URL")),
            host=reader.string("GATEWAY_HOST") or DEFAULT_HOST,
            port=port,
            workers=reader.integer("GATEWAY_WORKERS", 1, low=1, high=256) or 1,
            metrics_port=metrics_port,
            cache_ttl=reader.duration("GATEWAY_CACHE_TTL", DEFAULT_CACHE_TTL),
            cache_stale=reader.duration("GATEWAY_CACHE_STALE", DEFAULT_CACHE_STALE),
            negative_ttl=reader.duration("GATEWAY_NEGATIVE_TTL", DEFAULT_NEGATIVE_TTL),
            upstream_timeout=reader.duration(
                "GATEWAY_UPSTREAM_TIMEOUT", DEFAULT_UPSTREAM_TIMEOUT, positive=True
            ),
            upstream_rps=reader.duration(
                "GATEWAY_UPSTREAM_RPS", DEFAULT_UPSTREAM_RPS, positive=True
            ),
            upstream_retries=reader.integer(
                "GATEWAY_UPSTREAM_RETRIES", DEFAULT_UPSTREAM_RETRIES, low=0, high=10
            )
            or 0,
            circuit_failures=reader.integer(
                "GATEWAY_CIRCUIT_FAILURES", DEFAULT_CIRCUIT_FAILURES, low=1, high=1000
            )
            or DEFAULT_CIRCUIT_FAILURES,
            circuit_cooldown=reader.duration(
                "GATEWAY_CIRCUIT_COOLDOWN", DEFAULT_CIRCUIT_COOLDOWN, positive=True
            ),
            redis_timeout=reader.duration(
                "GATEWAY_REDIS_TIMEOUT", DEFAULT_REDIS_TIMEOUT, positive=True
            ),
            refresh_ahead=reader.fraction("GATEWAY_REFRESH_AHEAD", DEFAULT_REFRESH_AHEAD),
            client_rps=reader.duration("GATEWAY_CLIENT_RPS", DEFAULT_CLIENT_RPS),
            client_tokens=reader.client_tokens(),
            admin_token=reader.secret("GATEWAY_ADMIN_TOKEN", required=False),
            log_level=reader.choice("GATEWAY_LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
            memory_cache_mb=reader.integer(
                "GATEWAY_MEMORY_CACHE_MB", DEFAULT_MEMORY_CACHE_MB, low=1, high=1 << 20
            )
            or DEFAULT_MEMORY_CACHE_MB,
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

    def integer(self, name: str, default: int | None, *, low: int, high: int) -> int | None:
        value = self.string(name)
        if value is None:
            return default
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

    def fraction(self, name: str, default: float) -> float:
        number = self.duration(name, default)
        if number >= 1:
            raise SettingsError(name, f"must be a fraction in [0, 1), got {number}")
        return number

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
