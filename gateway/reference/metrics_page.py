"""The metrics page (`docs/metrics.md`) from a fresh `gateway.metrics.Metrics` registry:
every family the gateway exports, with its type, labels, help text, histogram buckets and
how it is combined across worker processes.  What the registry cannot say (label values,
when a series is set) is in `NOTES`, keyed by metric name; a test keeps the keys real."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.metrics import MetricWrapperBase

from ..metrics import Metrics
from .markdown import code, page, setting_names, table

INTRO = """
Prometheus text exposition on `GET /metrics` (on the main port, or alone on
`GATEWAY_METRICS_PORT`; never behind a client token). Names and labels are stable. Label
values are bounded: routes are templates (`/sites/{id}`, or `unmatched`), never raw paths;
the only ids in labels are site ids; tokens, connector ids and keys never become labels.
With several upstream accounts the metrics marked *account* carry an `account` label (the
account's name); with one account they have no such label.

With `GATEWAY_WORKERS` > 1 every worker writes its samples to `PROMETHEUS_MULTIPROC_DIR`
and `/metrics` shows them combined as the *workers* column says: counters and histograms are
summed; each gauge is the `max`, `min` or `sum` over the live workers.
"""

NOTES: dict[str, str] = {
    "gateway_http_requests_total": "`method` is the request's method (`OTHER` for unknown "
    "ones); a client that leaves before its answer counts as status `499`; requests that "
    "cannot be parsed are not counted here but in `gateway_http_connections_closed_total`.",
    "gateway_cache_lookups_total": "`result`: `hit`, `miss`, `stale`, `negative_hit` "
    "(a remembered upstream 404).",
    "gateway_upstream_requests_total": "`endpoint`: the upstream route template "
    "(`/sites`, `/sites/{id}`, `/charging-events/site/{id}`); `outcome`: the HTTP status, "
    "`timeout` or `connection_error`. The `429` series of `/sites` and `/sites/{id}` exist "
    "from the start, at 0.",
    "gateway_upstream_circuit_open": "Per process: each replica judges upstream health itself.",
    "gateway_redis_errors_total": "`operation`: the Redis operation that failed "
    "(`get`, `set`, `delete`, `ratelimit`, `lock`, `unlock`, `lease`, …).",
    "gateway_normalization_issues_total": "`field`: the upstream field whose value could "
    "not be read as its type and became null (e.g. `parameters.limit`).",
    "gateway_site_data_age_seconds": "One series per listed site, dropped with the site.",
    "gateway_sites_cached": "With several accounts: the sum over the accounts.",
    "gateway_connectors_cached": "With several accounts: the sum over the accounts.",
    "gateway_site_connectors": "Set by fleet and site fills; removed when a site leaves the "
    "list or answers 404 (the same for the two gauges below).",
    "gateway_site_oversubscription_ratio": "Absent for a site without a top-level limit.",
    "gateway_upstream_rate_limit": "`GATEWAY_UPSTREAM_RPS` (with several accounts: the sum "
    "of their budgets). Every replica exports it: aggregate with `max()`, never `sum()`.",
    "gateway_upstream_rate_tokens_available": "As last seen by this process.",
    "gateway_duplicate_connector_ids_total": "`scope`: `site` or `fleet`.",
    "gateway_http_connections_closed_total": "`reason`: `limit`, `header_timeout`, "
    "`body_timeout`, `malformed`.",
    "gateway_changes_total": "`kind`: `site.created`, `site.updated`, `site.deleted` "
    "(all three exist from the start, at 0).",
    "gateway_fleet_refresh_lag_seconds": "Read from the shared state: aggregate with "
    "`max()`. The `GatewayFleetRefreshLagging` alert compares it with the period.",
    "gateway_fleet_refresh_period_seconds": "(sites + 1) / (`GATEWAY_REFRESH_SHARE` x "
    "`GATEWAY_UPSTREAM_RPS`).",
}


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # as exported (counters with `_total`)
    kind: str
    labels: tuple[str, ...]
    account_labelled: bool
    help: str
    buckets: tuple[float, ...]
    workers: str  # how gauges combine across workers ("" for others)


def families() -> list[Family]:
    """Every metric family of a fresh `Metrics`, in the order `Metrics` declares them.

    prometheus-client has no public way to ask a metric for its label names or buckets
    before any child exists, so this reads its attributes (stable across its versions)."""
    plain, with_accounts = Metrics(), Metrics(account_label=True)
    found = []
    for attribute, metric in vars(plain).items():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels: tuple[str, ...] = metric._labelnames
        other: tuple[str, ...] = getattr(with_accounts, attribute)._labelnames
        kind = str(metric._type)
        name: str = metric._name + ("_total" if kind == "counter" else "")
        bounds = tuple(getattr(metric, "_upper_bounds", ()))
        mode = str(getattr(metric, "_multiprocess_mode", "")) if kind == "gauge" else ""
        found.append(
            Family(
                name=name,
                kind=kind,
                labels=labels,
                account_labelled="account" in other and "account" not in labels,
                help=metric._documentation,
                buckets=tuple(b for b in bounds if b != float("inf")),
                workers=str(mode).removeprefix("live").removeprefix("all"),
            )
        )
    return found


def _seconds(value: float) -> str:
    return f"{value * 1000:g} ms" if value < 1 else f"{value:g} s"


def _kind(family: Family) -> str:
    if family.buckets:
        edges = ", ".join(_seconds(bound) for bound in family.buckets)
        return f"histogram (buckets {edges})"
    return family.kind


def _labels(family: Family) -> str:
    shown = [code(label) for label in family.labels]
    if family.account_labelled:
        shown.insert(0, "*account*")
    return ", ".join(shown) or "none"


def render() -> str:
    rows = []
    for family in families():
        meaning = family.help.rstrip(".") + "."
        note = NOTES.get(family.name)
        if note:
            meaning += " " + setting_names(note)
        workers = family.workers or "sum"
        rows.append([code(family.name), _kind(family), _labels(family), workers, meaning])
    listing = table(["metric", "type", "labels", "workers", "meaning"], rows)
    return page("Metrics", INTRO, listing, PROMQL)


PROMQL = """
## Queries

Hit ratio over five minutes (what the dashboard's "Cache hit ratio" panel shows):

```promql
sum(rate(gateway_cache_lookups_total{result="hit"}[5m]))
  / sum(rate(gateway_cache_lookups_total[5m]))
```

Upstream calls against the budget:
`sum(rate(gateway_upstream_requests_total[1m])) / max(gateway_upstream_rate_limit)`.
Replicas sharing one Redis are one fleet: aggregate per Prometheus `job` and `namespace`
(the dashboard, recording rules and alerts in `deploy/` do).
"""
