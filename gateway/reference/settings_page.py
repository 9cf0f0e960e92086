"""The settings page (`docs/settings.md`) and the README's short settings table, from
`gateway.settings_specs`: every variable, its default and meaning, in the code's sections.
The prose around the tables lives here; the tables come from `SPECS` alone."""

from __future__ import annotations

from ..settings_specs import SECTIONS, SPECS, Spec, sections
from .markdown import code, page, prose, table

INTRO = """
Environment variables, read once at start and validated there. Durations are in seconds
(floats allowed). A missing or invalid setting (no API key without `--demo`, a bad URL, a
negative TTL, an unknown log level) stops the start: exit status 2 and one line on stderr
that names the variable, for example
`chargepilot-gateway: invalid setting GATEWAY_CACHE_TTL: must be 0 or more, got '-3'`.
The gateway never starts half-configured. `python -m gateway --help` prints this list.

Secrets can come from files: each variable marked with a `_FILE` variant reads its value
from that file instead (surrounding whitespace removed). Setting both forms is an error.
`SIGHUP` re-reads the client and admin token files without dropping a connection.
"""

# Hand-written notes under a section's table: what the table cannot say in one line.
NOTES: dict[str, str] = {
    "Upstream accounts and calls": """
`CHARGEPILOT_BASE_URL` includes `/rest/v1`, e.g. `https://chargepilot-api.tmh.energy/rest/v1`
(EU) or `https://chargepilot-api.tmhusa.energy/rest/v1` (US).
`CHARGEPILOT_ACCOUNTS_FILE` replaces the single account: a JSON list such as

```json
[
  {"name": "eu", "base_url": "https://chargepilot-api.tmh.energy/rest/v1",
   "api_key_file": "/run/secrets/eu-key", "api_secret_file": "/run/secrets/eu-secret"},
  {"name": "us", "base_url": "https://chargepilot-api.tmhusa.energy/rest/v1",
   "api_key": "…", "api_secret": "…", "rps": 2, "sign_path": "relative"}
]
```

Names are 1-32 of `a-z 0-9 _ . -`, starting with a letter or digit, and unique. Each account
has its own namespace, rate budget (`rps`, default `GATEWAY_UPSTREAM_RPS`), Retry-After
pause and circuit. Retries use exponential backoff with full jitter, inside
`GATEWAY_UPSTREAM_TIMEOUT`. The circuit is per process; the rate budget and pauses are
shared by every replica on the same Redis.
""",
    "Cache": """
`REDIS_URL` forms: `redis://host:6379/0`, `rediss://…` (TLS), `unix:///path/redis.sock`,
Sentinel `redis+sentinel://host:26379[,host2:26379]/master-name[/db]`, Cluster
`redis+cluster://node:6379` (any node; TLS: `rediss+sentinel://`, `rediss+cluster://`).
Without it the whole cache lives in the process (`GATEWAY_MEMORY_CACHE_MB`): nothing is
shared between replicas or workers. With it the in-process tier keeps a copy of every
write and serves while Redis is unreachable. The namespace of each account is derived from
its base URL and API key unless `GATEWAY_NAMESPACE` names one (with several accounts:
`<namespace>-<account name>`), so gateways of different accounts or teams sharing one Redis
never see each other's entries, rate budget, pauses or locks.
""",
    "Change feed": """
The fleet refresher (one replica at a time holds its lease in Redis) keeps every listed
site fresh within about `sites / (GATEWAY_REFRESH_SHARE x GATEWAY_UPSTREAM_RPS)` seconds;
client traffic comes first. `0` turns it off: then events are written only when client
requests refetch a site.
""",
    "Server, connections and shutdown": """
After SIGTERM (or SIGINT) `/readyz` answers 503 and every response says `Connection: close`
for `GATEWAY_SHUTDOWN_DELAY` while requests are still served; then the gateway stops
accepting, lets in-flight requests finish for up to `GATEWAY_DRAIN_TIMEOUT`, closes Redis
and upstream connections and exits 0. With `--demo` the delay is 0 unless set. With
`GATEWAY_WORKERS` > 1 a supervisor runs the workers on one port (`SO_REUSEPORT`), forwards
signals, and exits 1 when a worker dies; `/metrics` then shows totals across workers
(`PROMETHEUS_MULTIPROC_DIR`, set by the supervisor unless given). `--demo` ignores it.
""",
    "Clients and access": """
`GATEWAY_CLIENT_TOKENS_FILE` holds one `name:token` per line (`#` comments and blank lines
allowed); the name is what the access log and the quota know the client by. Tokens given
inline in `GATEWAY_CLIENT_TOKENS` are named `client-1`, `client-2`, … by position; both
forms may be set together. A reload (SIGHUP) that cannot
read or parse a file, or that would leave no client token where there were some (which
would open the API), logs one error line and keeps the old tokens.
""",
    "Logs and tracing": """
Every other `OTEL_*` variable (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, …) is read by
the OpenTelemetry SDK itself; a bad one stops the start like any setting.
Without an endpoint no tracing code is loaded.
""",
}

# The settings the README lists itself (the rest: docs/settings.md).
README_SETTINGS = (
    "CHARGEPILOT_BASE_URL",
    "CHARGEPILOT_API_KEY",
    "CHARGEPILOT_API_SECRET",
    "CHARGEPILOT_ACCOUNTS_FILE",
    "REDIS_URL",
    "GATEWAY_NAMESPACE",
    "GATEWAY_PORT",
    "GATEWAY_METRICS_PORT",
    "GATEWAY_CACHE_TTL",
    "GATEWAY_CACHE_STALE",
    "GATEWAY_UPSTREAM_RPS",
    "GATEWAY_REFRESH_SHARE",
    "GATEWAY_CLIENT_TOKENS",
    "GATEWAY_CLIENT_RPS",
    "GATEWAY_ADMIN_TOKEN",
    "GATEWAY_LOG_LEVEL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def _row(spec: Spec) -> list[str]:
    names = code(spec.variable)
    if spec.has_file:
        names += ", " + code(spec.variable + "_FILE")
    default = spec.default
    shown = prose(default) if " " in default or default.startswith("unset") else code(default)
    return [names, shown, prose(spec.meaning)]


def spec_table(specs: tuple[Spec, ...] | list[Spec]) -> str:
    return table(["variable", "default", "meaning"], [_row(spec) for spec in specs])


def render() -> str:
    parts = [INTRO]
    for title, specs in sections():
        parts.append(f"## {title}\n\n{spec_table(specs)}\n\n{NOTES[title].strip()}")
    return page("Settings", *parts)


def readme_table() -> str:
    """The README's table: the settings most deployments touch, in `SPECS` order."""
    chosen = [spec for spec in SPECS if spec.variable in README_SETTINGS]
    return spec_table(chosen)


def section_titles() -> list[str]:
    return [title for title, _ in SECTIONS]
