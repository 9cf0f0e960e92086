"""Prometheus metrics: the CONTRACT's names and labels, owned by one `Metrics` object per app.

No module-level metric objects: each app gets its own `CollectorRegistry`, so tests can build
many apps and read exact values.  With several worker processes (`GATEWAY_WORKERS > 1`)
prometheus-client's multiprocess mode is used: `PROMETHEUS_MULTIPROC_DIR` is set by the
launcher before any worker imports prometheus_client, every process writes its samples to
files there, and `render()` aggregates them, so `/metrics` shows totals across workers.

Label values are bounded by construction: routes are templates (or "unmatched"), upstream
outcomes are status codes or two fixed words, normalization fields come from a fixed set
in `normalize.py`, and only site ids appear as ids (`gateway_site_data_age_seconds` and the
fleet gauges of `gauges.py`), account names only with several accounts.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# The hit path answers in well under a millisecond; the upstream path can take the full
# upstream timeout (default 10 s), so the two histograms get different resolutions.
HTTP_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, account_label: bool = False
    ) -> None:
        """`account_label`: with several upstream accounts, the upstream metrics and the
        circuit gauge carry an `account` label (the contract); with one they don't."""
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        account = ["account"] if account_label else []
        self.account_label = account_label
        self._reported_ages: set[str] = set()
        self.http_requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=reg,
        )
        self.cache_lookups = Counter(
            "gateway_cache_lookups_total",
            "Cache lookups by result",
            ["route", "result"],
            registry=reg,
        )
        self.coalesced = Counter(
            "gateway_coalesced_requests_total",
            "Requests that joined another request's fetch",
            ["route"],
            registry=reg,
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests_total",
            "Calls to the ChargePilot API",
            [*account, "endpoint", "outcome"],
            registry=reg,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_request_duration_seconds",
            "Duration of ChargePilot API calls",
            [*account, "endpoint"],
            buckets=UPSTREAM_BUCKETS,
            registry=reg,
        )
        self.circuit_open = Gauge(
            "gateway_upstream_circuit_open",
            "1 while the upstream circuit is open",
            account,
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.redis_errors = Counter(
            "gateway_redis_errors_total", "Failed Redis operations", ["operation"], registry=reg
        )
        self.redis_up = Gauge(
            "gateway_redis_up",
            "1 when the last cache call succeeded (always 1 when embedded)",
            registry=reg,
            multiprocess_mode="livemin",
        )
        self.normalization_issues = Counter(
            "gateway_normalization_issues_total",
            "Upstream values repaired to null",
            ["field"],
            registry=reg,
        )
        self.site_data_age = Gauge(
            "gateway_site_data_age_seconds",
            "Age of the cached data of each site",
            ["site_id"],
            registry=reg,
            multiprocess_mode="livemin",
        )
        self.sites_cached = Gauge(
            "gateway_sites_cached", "Sites in the cache", registry=reg, multiprocess_mode="livemax"
        )
        self.connectors_cached = Gauge(
            "gateway_connectors_cached",
            "Connectors in the cache",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.site_connectors = Gauge(
            "gateway_site_connectors",
            "Connectors of each site",
            [*account, "site_id"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.site_v2g_connectors = Gauge(
            "gateway_site_v2g_connectors",
            "V2G-capable connectors of each site",
            [*account, "site_id"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.site_oversubscription = Gauge(
            "gateway_site_oversubscription_ratio",
            "Sum of the connectors' max charging current over the top-level fuse limit "
            "(the worst top-level fuse when there are several)",
            [*account, "site_id"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.rate_limit = Gauge(
            "gateway_upstream_rate_limit",
            "Configured upstream budget (requests/s)",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.rate_tokens = Gauge(
            "gateway_upstream_rate_tokens_available",
            "Tokens left in the upstream bucket",
            registry=reg,
            multiprocess_mode="livemin",
        )
        self.duplicate_connectors = Counter(
            "gateway_duplicate_connector_ids_total",
            "Connector ids seen more than once when filling the cache",
            ["scope"],
            registry=reg,
        )
        self.http_connections = Gauge(
            "gateway_http_connections",
            "Open client connections",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.http_connections_closed = Counter(
            "gateway_http_connections_closed_total",
            "Client connections the gateway closed: over the connection limit (limit), no "
            "complete request head in time (header_timeout), unparsable request (malformed)",
            ["reason"],
            registry=reg,
        )
        self.changes = Counter(
            "gateway_changes_total",
            "Change events this process appended to the change feed",
            ["kind"],
            registry=reg,
        )
        self.refresh_lag = Gauge(
            "gateway_fleet_refresh_lag_seconds",
            "Age of the oldest listed site's data",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.refresh_period = Gauge(
            "gateway_fleet_refresh_period_seconds",
            "How often the fleet refresher can refresh every listed site and the list, at its "
            "share of the upstream budget (absent while the refresher is off)",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.refresher_leader = Gauge(
            "gateway_fleet_refresher_leader",
            "1 while this process holds the refresher lease",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.fleet_refreshes = Counter(
            "gateway_fleet_refreshes_total",
            "Refresher fetches: target list or site; outcome ok, or failed (see the log)",
            ["target", "outcome"],
            registry=reg,
        )
        self.change_streams = Gauge(
            "gateway_change_streams",
            "Open /changes event streams",
            registry=reg,
            multiprocess_mode="livesum",
        )

        self.build_info = Gauge(
            "gateway_build_info",
            "Always 1; the labels say which build runs",
            ["version", "python"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        from . import __version__

        self.build_info.labels(__version__, platform.python_version()).set(1)

    def prime_account(self, labels: tuple[str, ...]) -> None:
        """Series alerts rely on exist from the start (at 0), so `increase()` sees the
        first one; `labels` is the account's leading labels (empty with one account)."""
        for endpoint in ("/sites", "/sites/{id}"):
            self.upstream_requests.labels(*labels, endpoint, "429")
        for kind in ("site.created", "site.updated", "site.deleted"):
            self.changes.labels(kind)

    def report_site_ages(self, stored_at: Mapping[str, float], now: float) -> None:
        """Set the data-age gauge of every known site; drop the series of sites gone."""
        for site_id, when in stored_at.items():
            self.site_data_age.labels(site_id).set(round(now - when, 3))
        for gone in self._reported_ages - stored_at.keys():
            self.site_data_age.remove(gone)
        self._reported_ages = set(stored_at)

    def render(self) -> bytes:
        """The text exposition; aggregated over all workers in multiprocess mode."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        collector_registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(collector_registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(collector_registry)
