"""The table of every setting: variable, default as shown to people, and meaning.

One source for `--help`, the settings reference in `docs/` (`gateway.reference`), and the
deployment checks; `Settings.from_env` reads exactly these variables (a test holds it to
that, and another checks that each shown default is the default `from_env` really applies).
`SECTIONS` groups the table for people: each section is the run of `SPECS` from its first
variable to the next section's, so a new setting added beside its neighbours joins their
section.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Spec:
    variable: str
    default: str  # as people read it
    meaning: str
    attribute: str | None = None  # the `Settings` field it sets, where there is one
    has_file: bool = False  # a `<variable>_FILE` variant reads the value from a file


SPECS: tuple[Spec, ...] = (
    Spec("CHARGEPILOT_BASE_URL", "required unless --demo",
         "upstream base URL including /rest/v1", "base_url"),
    Spec("CHARGEPILOT_API_KEY", "required unless --demo", "upstream API key", has_file=True),
    Spec("CHARGEPILOT_API_SECRET", "required unless --demo",
         "upstream API secret (never sent, only signs)", has_file=True),
    Spec("CHARGEPILOT_SIGN_PATH", "full",
         "full: sign /rest/v1/sites...; relative: sign /sites...", "sign_path"),
    Spec("CHARGEPILOT_ACCOUNTS_FILE", "unset: the one account above",
         'JSON list of accounts {"name", "base_url", "api_key" or "api_key_file", '
         '"api_secret" or "api_secret_file", "rps"?, "sign_path"?} served as one fleet'),
    Spec("GATEWAY_UPSTREAM_TIMEOUT", "10",
         "total time for one upstream request, retries included", "upstream_timeout"),
    Spec("GATEWAY_UPSTREAM_RPS", "5",
         "ceiling on upstream requests per second, shared by every replica", "upstream_rps"),
    Spec("GATEWAY_UPSTREAM_RETRIES", "2",
         "retries for connection errors and 502/503/504 without Retry-After", "upstream_retries"),
    Spec("GATEWAY_CIRCUIT_FAILURES", "5",
         "consecutive upstream failures that open the circuit", "circuit_failures"),
    Spec("GATEWAY_CIRCUIT_COOLDOWN", "30",
         "how long the circuit stays open before one probe", "circuit_cooldown"),
    Spec("REDIS_URL", "unset: embedded in-process cache",
         "redis://, rediss://, unix://, redis+sentinel://host:port[,host:port]/service[/db], "
         "redis+cluster://host:port", "redis_url"),
    Spec("GATEWAY_NAMESPACE", "derived from the upstream base URL and API key",
         "prefix of every Redis key (letters, digits, . _ -; at most 64)", "namespace"),
    Spec("GATEWAY_REDIS_TIMEOUT", "0.5",
         "bound on one Redis command; past it the gateway serves degraded", "redis_timeout"),
    Spec("GATEWAY_CACHE_TTL", "300", "how long a cached response is fresh", "cache_ttl"),
    Spec("GATEWAY_CACHE_STALE", "86400",
         "how long past freshness it may still be served", "cache_stale"),
    Spec("GATEWAY_NEGATIVE_TTL", "30",
         "how long an upstream 404 (and the known-id list) is trusted", "negative_ttl"),
    Spec("GATEWAY_REFRESH_AHEAD", "0.1",
         "fraction of the fresh TTL: a key requested in its last part is refreshed early",
         "refresh_ahead"),
    Spec("GATEWAY_EVENTS_TTL", "30",
         "how long a charging-events answer is fresh", "events_ttl"),
    Spec("GATEWAY_MEMORY_CACHE_MB", "256",
         "bytes of the in-process tier (the whole cache without REDIS_URL)", "memory_cache_mb"),
    Spec("GATEWAY_MEMORY_CACHE_ENTRIES", "100000",
         "entries of the in-process tier", "memory_cache_entries"),
    Spec("GATEWAY_REFRESH_SHARE", "0.5",
         "share of GATEWAY_UPSTREAM_RPS the fleet refresher may spend (0: off)", "refresh_share"),
    Spec("GATEWAY_CHANGES_RETENTION", "10000",
         "change events kept for /changes", "changes_retention"),
    Spec("GATEWAY_MAX_STREAMS", "1000",
         "concurrent /changes event streams per process; past it 503", "max_streams"),
    Spec("GATEWAY_HOST", "0.0.0.0", "listen address", "host"),
    Spec("GATEWAY_PORT", "8080", "listen port", "port"),
    Spec("GATEWAY_HEADER_TIMEOUT", "10",
         "a connection that has not sent a complete request head in this time is closed",
         "header_timeout"),
    Spec("GATEWAY_KEEPALIVE_TIMEOUT", "75",
         "an idle keep-alive connection is closed after this", "keepalive_timeout"),
    Spec("GATEWAY_MAX_CONNECTIONS", "10000",
         "open client connections per process; past it new ones are closed at once "
         "(also capped by the file limit)", "max_connections"),
    Spec("GATEWAY_SHUTDOWN_DELAY", "5",
         "after SIGTERM: not ready, still serving, for this long", "shutdown_delay"),
    Spec("GATEWAY_DRAIN_TIMEOUT", "25",
         "after the delay: how long in-flight requests may take to finish", "drain_timeout"),
    Spec("GATEWAY_WORKERS", "1", "worker processes sharing the port", "workers"),
    Spec("GATEWAY_METRICS_PORT", "unset: /metrics on the main port",
         "serve /metrics on its own port instead", "metrics_port"),
    Spec("GATEWAY_CLIENT_TOKENS", "unset: data endpoints open",
         "comma-separated bearer tokens; GATEWAY_CLIENT_TOKENS_FILE: lines of name:token",
         has_file=True),
    Spec("GATEWAY_CLIENT_RPS", "0 (off)",
         "per-client quota, requests/s (burst 2 s, per process); a client is its token name, "
         "or its address when tokens are off", "client_rps"),
    Spec("GATEWAY_TRUSTED_PROXIES", "unset: none",
         "comma-separated addresses or CIDRs whose X-Forwarded-For names the client",
         "trusted_proxies"),
    Spec("GATEWAY_ADMIN_TOKEN", "unset: admin endpoints disabled",
         "bearer token for /admin/*", has_file=True),
    Spec("GATEWAY_CURSOR_SECRET", "unset: generated once and shared through Redis",
         "key that signs /connectors cursors (/changes positions are event ids)", has_file=True),
    Spec("GATEWAY_LOG_LEVEL", "INFO",
         "DEBUG, INFO (one access line per request), WARNING, ERROR", "log_level"),
    Spec("OTEL_EXPORTER_OTLP_ENDPOINT", "unset: no tracing",
         "OTLP/HTTP collector; traces go to <endpoint>/v1/traces (other OTEL_* as the SDK reads)"),
    Spec("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "unset",
         "OTLP/HTTP traces endpoint, used as given"),
)  # fmt: skip

# (title, first variable of the section), in `SPECS` order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("Upstream accounts and calls", "CHARGEPILOT_BASE_URL"),
    ("Cache", "REDIS_URL"),
    ("Change feed", "GATEWAY_REFRESH_SHARE"),
    ("Server, connections and shutdown", "GATEWAY_HOST"),
    ("Clients and access", "GATEWAY_CLIENT_TOKENS"),
    ("Logs and tracing", "GATEWAY_LOG_LEVEL"),
)


def sections() -> list[tuple[str, tuple[Spec, ...]]]:
    """`SPECS` cut into `SECTIONS`: every spec in exactly one, in table order."""
    starts = [next(i for i, spec in enumerate(SPECS) if spec.variable == first)
              for _, first in SECTIONS]  # fmt: skip
    if starts[0] != 0 or starts != sorted(starts):
        raise ValueError("SECTIONS must start at the first spec and follow SPECS order")
    ends = [*starts[1:], len(SPECS)]
    titles = [title for title, _ in SECTIONS]
    return [
        (title, SPECS[start:end]) for title, start, end in zip(titles, starts, ends, strict=True)
    ]


# Every variable `Settings.from_env` reads, *_FILE variants included.
ENVIRONMENT_VARIABLES: tuple[str, ...] = tuple(
    name
    for spec in SPECS
    for name in ((spec.variable, f"{spec.variable}_FILE") if spec.has_file else (spec.variable,))
)


def help_text() -> str:
    """The settings as `--help` lists them."""
    width = max(len(spec.variable) for spec in SPECS)
    lines = ["settings (environment variables; durations in seconds):"]
    for title, specs in sections():
        lines.append(f" {title.lower()}:")
        for spec in specs:
            lines.append(f"  {spec.variable:<{width}}  {spec.meaning} [default: {spec.default}]")
            if spec.has_file:
                variant = spec.variable + "_FILE"
                lines.append(f"  {variant:<{width}}  read {spec.variable} from a file")
    return "\n".join(lines)
