"""Checks on the release files (lock, image, compose, Kubernetes, Prometheus, Grafana).

Real validators first: promtool (a missing one fails: `apt-get install prometheus`),
kubernetes-validate (strict), `kubectl kustomize` (when installed), check-jsonschema with
its compose-spec schema.  Then agreement: PromQL names only the gateway's metrics and
labels, manifests set only its settings, and ports, probes, grace period, memory, version
and the hit-ratio query match the gateway and the READMEs.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway import __version__
from gateway.settings import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_SHUTDOWN_DELAY,
    ENVIRONMENT_VARIABLES,
)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "chargepilot-gateway.json"
RULE_FILES = ("recording.yml", "alerts.yml")
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
NAMESPACE = 'namespace=~"$namespace"'
HIT_RATIO = ('sum(rate(gateway_cache_lookups_total{result="hit"}[5m]))'
             " / sum(rate(gateway_cache_lookups_total[5m]))")  # fmt: skip
# The platforms the image is built for: requirements.lock must cover each of them.
IMAGE_TARGETS = [
    {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
     "implementation_name": "cpython", "platform_python_implementation": "CPython",
     "platform_machine": machine, "python_version": python, "python_full_version": f"{python}.0"}
    for machine in ("x86_64", "aarch64") for python in ("3.11", "3.12")
]  # fmt: skip
# An old and the newest Kubernetes the validator knows.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())

# The gateway's settings, prometheus-client's multiprocess directory, and the standard OTel
# variables the SDK reads beside the endpoint the gateway checks.
GATEWAY_SETTINGS = frozenset(ENVIRONMENT_VARIABLES) | {
    "PROMETHEUS_MULTIPROC_DIR", "OTEL_SERVICE_NAME",
}  # fmt: skip
SECRET_SETTINGS = frozenset({
    "CHARGEPILOT_API_KEY", "CHARGEPILOT_API_SECRET", "GATEWAY_CLIENT_TOKENS", "GATEWAY_ADMIN_TOKEN",
})  # fmt: skip

_COUNTERS = ("http_requests", "cache_lookups", "coalesced_requests", "upstream_requests",
             "redis_errors", "normalization_issues", "changes", "fleet_refreshes")  # fmt: skip
_HISTOGRAMS = ("http_request_duration_seconds", "upstream_request_duration_seconds")
_GAUGES = ("upstream_circuit_open", "site_data_age_seconds", "sites_cached", "connectors_cached",
           "upstream_rate_limit", "upstream_rate_tokens_available", "redis_up",
           "site_connectors", "site_v2g_connectors", "site_oversubscription_ratio",
           "fleet_refresh_lag_seconds", "fleet_refresh_period_seconds", "fleet_refresher_leader",
           "change_streams")  # fmt: skip
GATEWAY_METRICS = frozenset(
    [f"gateway_{name}_total" for name in _COUNTERS] + [f"gateway_{name}" for name in _GAUGES]
    + [f"gateway_{name}{s}" for name in _HISTOGRAMS for s in ("_bucket", "_sum", "_count")]
)  # fmt: skip
METRIC_LABELS = frozenset({"route", "method", "status", "result", "endpoint", "outcome",
                           "operation", "field", "site_id", "account", "le", "kind",
                           "target"})  # fmt: skip
# Target labels added by the scrape configs and the ServiceMonitor.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service"})

# --- PromQL, just enough to find the metric and label names an expression uses ----------
_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
# A name that is neither part of a longer token nor a function call.
_NAME = re.compile(r"(?<![\w:.$])[A-Za-z_:][\w:]*(?![\w:]|\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "bool", "offset", "atan2", "inf", "nan"})  # fmt: skip
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.DOTALL)
_SELECTOR = re.compile(r"\b(gateway_\w+)(?:\{([^}]*)\})?")


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names used in a PromQL expression."""
    code = _STRING.sub('""', expr)
    labels: set[str] = set()
    for matchers in _MATCHERS.findall(code):
        labels.update(_MATCHER_LABEL.findall(matchers))
    code = _MATCHERS.sub(" ", code)
    for grouping in _GROUPING.findall(code):
        labels.update(label.strip() for label in grouping.split(",") if label.strip())
    code = _RANGE.sub(" ", _GROUPING.sub(" ", code))
    return {name for name in _NAME.findall(code) if name not in _KEYWORDS}, labels


def with_namespace(expr: str) -> str:
    """`expr` with the dashboard's namespace matcher first in every gateway selector."""
    return _SELECTOR.sub(lambda m: f"{m[1]}{{{', '.join(filter(None, (NAMESPACE, m[2])))}}}", expr)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules(filename: str) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS / filename)["groups"] for rule in group["rules"]]


def dashboard() -> Any:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of the dashboard."""
    board = dashboard()
    for panel in dashboard_panels(board["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            match = _LABEL_VALUES.match(query)
            assert match, f"variable {variable['name']}: expected label_values(), got {query!r}"
            # label_values(selector, label) reads `label` of `selector`: check it as a grouping.
            yield f"variable {variable['name']!r}", f"{match[1]} by ({match[2]})"


def test_promql_helpers() -> None:
    names, labels = promql_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"/sites/{id}",'
        ' job=~"$job"}[$__rate_interval] offset 5m))) > 1e3 * max without(pod)(b:c:d) or'
        " count(e unless on (job) f) > bool g"
    )
    assert names == {"a_bucket", "b:c:d", "e", "f", "g"}
    assert labels == {"le", "route", "job", "pod"}
    assert with_namespace("x(gateway_a[5m]) / gateway_b{le='1'}") == (
        f"x(gateway_a{{{NAMESPACE}}}[5m]) / gateway_b{{{NAMESPACE}, le='1'}}"
    )


# --- promtool ---------------------------------------------------------------------------
def run(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def promtool(*args: str) -> None:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not on the PATH: `apt-get install prometheus`", pytrace=False)
    run(binary, *args, cwd=PROMETHEUS)


PROMTOOL_RUNS = [("check", "config", "prometheus.yml"), ("check", "rules", *RULE_FILES),
                 ("test", "rules", "alerts_test.yml")]  # fmt: skip


@pytest.mark.parametrize("args", PROMTOOL_RUNS)
def test_promtool(args: tuple[str, ...]) -> None:
    promtool(*args)


def test_kubernetes_prometheus_config_scrapes_the_metrics_port(tmp_path: Path) -> None:
    config = load_yaml(PROMETHEUS / "prometheus-k8s.yml")
    assert config["rule_files"] == list(RULE_FILES)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "chargepilot-gateway"
    keep = {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "action": "keep"}
    assert {**keep, "regex": "metrics"} in job["relabel_configs"]
    assert "metrics" in container_ports()
    # Debian's promtool is built without Kubernetes discovery: check everything else, with
    # the discovery block swapped for a static target.
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    job["static_configs"] = [{"targets": ["gateway.invalid:9100"]}]
    config["rule_files"] = [str(PROMETHEUS / name) for name in RULE_FILES]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    promtool("check", "config", str(tmp_path / "prometheus.yml"))


# --- rules ------------------------------------------------------------------------------
def test_every_alert_is_tested_and_has_severity_annotations_and_a_runbook() -> None:
    cases: dict[str, list[bool]] = {}
    for group in load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]:
        for case in group.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    assert set(cases) == {rule["alert"] for rule in rules("alerts.yml")}
    for alert, fires in cases.items():
        assert True in fires and False in fires, f"{alert}: test it firing and silent"
    readme = (DEPLOY / "README.md").read_text("utf-8")
    anchors = {heading.strip().lower() for heading in re.findall(r"^#+ (.+)$", readme, re.M)}
    for rule in rules("alerts.yml"):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        assert rule["annotations"]["runbook"] == f"deploy/README.md#{name.lower()}"
        assert name.lower() in anchors, f"deploy/README.md has no section {name}"


def test_promql_uses_only_gateway_metrics_and_labels() -> None:
    known_metrics = GATEWAY_METRICS | {"up"} | {rule["record"] for rule in rules("recording.yml")}
    queries = [(f"{f} {r.get('alert') or r.get('record')}", r["expr"])
               for f in RULE_FILES for r in rules(f)]  # fmt: skip
    for group in load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]:
        cases = group.get("input_series", []) + group.get("promql_expr_test", [])
        queries += [(f"test {group['name']!r}", c.get("series") or c["expr"]) for c in cases]
    unknown = []
    for where, expr in [*queries, *dashboard_queries()]:
        metrics, labels = promql_names(expr)
        assert metrics, f"{where}: no metric found in {expr!r}"
        unknown += [f"{where}: {name}" for name in sorted(metrics - known_metrics)]
        unknown += [f"{where}: {name}" for name in sorted(labels - METRIC_LABELS - TARGET_LABELS)]
    assert unknown == []


# --- Grafana ----------------------------------------------------------------------------
def test_dashboard_panels_use_its_variables_and_cover_every_metric() -> None:
    board = dashboard()
    assert board["uid"] == "chargepilot-gateway" and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace"}
    datasource, namespace = variables["datasource"], variables["namespace"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    assert (namespace["type"], namespace["datasource"]) == ("query", DS_REF)
    panels = list(dashboard_panels(board["panels"]))
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert panel.get("title") and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DS_REF, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DS_REF) == DS_REF, panel["title"]
            selectors = _SELECTOR.findall(target["expr"])
            assert selectors, panel["title"]
            for metric, matchers in selectors:
                assert NAMESPACE in matchers, f"{panel['title']}: {metric} ignores $namespace"
    used = {name for _, expr in dashboard_queries() for name in promql_names(expr)[0]}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert {re.sub(r"_(bucket|sum|count)$", "", name) for name in GATEWAY_METRICS} <= families


def test_hit_ratio_is_the_same_query_in_readme_and_dashboard() -> None:
    panels = dashboard_panels(dashboard()["panels"])
    ((target,),) = [p["targets"] for p in panels if p["title"] == "Cache hit ratio"]
    assert target["expr"] == with_namespace(HIT_RATIO)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(
        r"Hit ratio in PromQL.*?`([^`]*gateway_cache_lookups_total[^`]*)`", readme, re.S
    )
    assert found and found[1] == target["expr"], "README.md: 'Hit ratio in PromQL: `…`'"


# --- Kubernetes -------------------------------------------------------------------------
def k8s_documents() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def k8s_object(kind: str, name: str = "chargepilot-gateway") -> dict[str, Any]:
    docs = [doc for docs in k8s_documents().values() for doc in docs]
    (found,) = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def pod_spec() -> Any:
    return k8s_object("Deployment")["spec"]["template"]["spec"]


def container_ports() -> dict[str, int]:
    (container,) = pod_spec()["containers"]
    return {port["name"]: port["containerPort"] for port in container["ports"]}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_are_valid(version: str) -> None:
    for name, docs in k8s_documents().items():
        assert docs, f"{name} is empty"
        for doc in docs:
            if doc["apiVersion"] == "monitoring.coreos.com/v1":
                # A CRD: no schema ships with kubernetes-validate, and none could be vendored
                # from a package; the ServiceMonitor is checked field by field below instead.
                continue
            kubernetes_validate.validate(doc, version, strict=True)


def test_kustomize_renders_every_manifest_but_the_secret_example() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the manifests are still validated one by one")
    rendered = [doc for doc in yaml.safe_load_all(run(kubectl, "kustomize", str(K8S))) if doc]
    expected = [(d["kind"], d["metadata"]["name"])
                for name, docs in k8s_documents().items() if name != "secret.example.yaml"
                for d in docs]  # fmt: skip
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(expected)
    (deployment,) = [doc for doc in rendered if doc["kind"] == "Deployment"]
    images = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert images == {f"chargepilot-gateway:{__version__}"}


def test_k8s_sets_only_gateway_settings_and_secrets_as_files() -> None:
    (container,) = pod_spec()["containers"]
    config = k8s_object("ConfigMap")["data"]
    assert container["envFrom"] == [{"configMapRef": {"name": "chargepilot-gateway"}}]
    env = {var["name"]: var for var in container["env"]}
    assert set(config) | set(env) <= GATEWAY_SETTINGS
    assert not set(config) & SECRET_SETTINGS, "secrets belong in the Secret"
    assert config["REDIS_URL"] == "redis+sentinel://redis-sentinel:26379/mymaster/0"
    secret = k8s_object("Secret", "chargepilot-gateway-credentials")
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "credentials"]
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == "credentials"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    files = {item["path"]: item["key"] for item in volume["secret"]["items"]}
    assert set(files.values()) <= set(secret["stringData"])
    for name in ("CHARGEPILOT_API_KEY_FILE", "CHARGEPILOT_API_SECRET_FILE"):
        path = Path(env[name]["value"])
        assert path.parent == Path(mount["mountPath"]) == Path("/var/run/secrets/chargepilot")
        assert path.name in files, name
    for var in env.values():
        if "valueFrom" in var:
            assert var["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
            assert var["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"]
        else:
            assert var["name"] not in SECRET_SETTINGS, f"{var['name']} must not be a literal"
    assert all("REPLACE_ME" in value for value in secret["stringData"].values())


def test_metrics_port_is_off_the_client_service_and_on_the_service_monitor() -> None:
    pod_labels = k8s_object("Deployment")["spec"]["template"]["metadata"]["labels"]
    client, metrics = k8s_object("Service"), k8s_object("Service", "chargepilot-gateway-metrics")
    assert [(p["name"], p["targetPort"]) for p in client["spec"]["ports"]] == [("http", "http")]
    assert [(p["name"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [("metrics",) * 2]
    for service in (client, metrics):
        assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = k8s_object("ServiceMonitor")["spec"]
    selector = monitor["selector"]["matchLabels"].items()
    assert selector <= metrics["metadata"]["labels"].items()
    assert not selector <= client["metadata"]["labels"].items(), "would select the client Service"
    (endpoint,) = monitor["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    # The job label the recording rules and alerts aggregate by, as in prometheus-k8s.yml.
    assert metrics["metadata"]["labels"][monitor["jobLabel"]] == "chargepilot-gateway"


def test_network_policy_admits_clients_to_http_and_prometheus_to_metrics() -> None:
    policy = k8s_object("NetworkPolicy")["spec"]
    pod_labels = k8s_object("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    ingress = [
        (bool(rule.get("from")), [p["port"] for p in rule["ports"]]) for rule in policy["ingress"]
    ]
    ports = container_ports()
    assert sorted(ingress) == [(False, [ports["http"]]), (True, [ports["metrics"]])]
    egress_ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
    assert egress_ports == {53, 6379, 26379, 443}


def test_deployment_scales_with_the_hpa_drains_in_its_grace_period_and_probes() -> None:
    deployment, pod = k8s_object("Deployment"), pod_spec()
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = k8s_object("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] > k8s_object("PodDisruptionBudget")["spec"]["minAvailable"] >= 2
    config = k8s_object("ConfigMap")["data"]
    delay = float(config.get("GATEWAY_SHUTDOWN_DELAY", DEFAULT_SHUTDOWN_DELAY))
    drain = float(config.get("GATEWAY_DRAIN_TIMEOUT", DEFAULT_DRAIN_TIMEOUT))
    assert pod["terminationGracePeriodSeconds"] > delay + drain
    (container,) = pod["containers"]
    assert "lifecycle" not in container, "the gateway delays its own shutdown; no preStop"
    ports = {"http": int(config["GATEWAY_PORT"]), "metrics": int(config["GATEWAY_METRICS_PORT"])}
    assert container_ports() == ports and ports["http"] == DEFAULT_PORT
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):  # fmt: skip
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # The ServiceMonitor scrapes the metrics port; annotation scrapers would do it twice.
    assert "annotations" not in deployment["spec"]["template"]["metadata"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_memory_is_sized_from_the_measurement_in_the_readme() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    found = re.search(r"peak RSS[^*\n]*\*\*(\d+) MiB\*\*", readme)
    assert found, "deploy/README.md: no measured 'peak RSS … **N MiB**'"
    peak = int(found[1])
    (container,) = pod_spec()["containers"]
    resources = container["resources"]
    # The rule in deploy/README.md: request = peak, limit = 1.5 x peak, each rounded up to 100 Mi.
    assert resources["requests"]["memory"] == f"{math.ceil(peak / 100) * 100}Mi"
    assert resources["limits"]["memory"] == f"{math.ceil(1.5 * peak / 100) * 100}Mi"


# --- release metadata, lock and image ---------------------------------------------------
def test_release_metadata_and_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    meta = project["project"]
    assert "version" in meta["dynamic"] and "version" not in meta
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gateway.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert meta["license"] == "Apache-2.0" and meta["license-files"] == ["LICENSE"]
    assert re.match(
        r"\s*Apache License\s+Version 2\.0, January 2004", (ROOT / "LICENSE").read_text()
    )
    assert meta["scripts"]["gateway"] == meta["scripts"]["chargepilot-gateway"] == (
        "gateway.__main__:main")  # fmt: skip
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog and "## [0.1.0] - " in changelog


def locked() -> dict[str, tuple[str, str, list[str]]]:
    """requirements.lock as {name: (version, marker, hashes)}."""
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pins: dict[str, tuple[str, str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9._-]+)==(\S+)(?: ; (.+?))? \\\n", block)
        if head:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            pins[canonicalize_name(head[1])] = (head[2], head[3] or "", hashes)
    return pins


def test_lock_pins_every_runtime_dependency_and_the_build_backend_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = locked()
    assert len(pins) >= 20, "requirements.lock did not parse"
    for name, (version, _, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no hash"
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    for requirement in map(Requirement, wanted):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run scripts/lock"
        version, marker, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version}"
        for target in IMAGE_TARGETS:
            if requirement.marker is None or requirement.marker.evaluate(target):
                assert not marker or Marker(marker).evaluate(target), f"{name} on {target}"


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions of each stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in map(str.strip, text.splitlines()):
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            if instruction.upper() == "FROM":
                stages.append([])
            if stages:
                stages[-1].append((instruction.upper(), " ".join(arguments.split())))
    return stages


def test_dockerfile_installs_the_lock_before_the_source_and_runs_as_non_root() -> None:
    build, *_, final = dockerfile_stages()
    steps = [f"{instruction} {arguments}" for instruction, arguments in build]

    def step(pattern: str) -> int:
        (index,) = [i for i, s in enumerate(steps) if re.fullmatch(pattern, s)]
        return index

    lock = r"RUN pip install (?=.*--require-hashes)(?=.*--no-deps).* -r requirements\.lock"
    assert step(r"COPY requirements\.lock \./?") < step(lock) < step(r"COPY gateway \./gateway/?")
    assert step(r"COPY gateway \./gateway/?") < step(r"RUN pip install (?=.*--no-deps).* \.( .*)?")
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignored[ignored.index("*") + 1 :][:5] == [
        "!requirements.lock", "!pyproject.toml", "!README.md", "!LICENSE", "!gateway/",
    ]  # fmt: skip
    instructions = dict(final)
    assert instructions["USER"].split(":")[0] not in {"", "root", "0"}
    assert json.loads(instructions["CMD"]) == ["python", "-m", "gateway"]
    assert instructions["EXPOSE"] == str(DEFAULT_PORT)
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    assert "urllib" in instructions["HEALTHCHECK"] and "/healthz" in instructions["HEALTHCHECK"]


# --- Compose ----------------------------------------------------------------------------
def test_compose_file_is_valid_against_the_compose_spec() -> None:
    run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
        str(ROOT / "docker-compose.yml"))  # fmt: skip


def test_compose_services() -> None:
    services = load_yaml(ROOT / "docker-compose.yml")["services"]
    assert set(services) == {"redis", "gateway", "demo", "prometheus", "grafana", "jaeger"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", f"{name} has no healthcheck"
    gateway = services["gateway"]
    assert gateway["build"] == "." and gateway["deploy"]["replicas"] == 2
    assert gateway["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert f"127.0.0.1:{DEFAULT_PORT}/healthz" in gateway["healthcheck"]["test"][-1]
    environment = gateway["environment"]
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":-http://jaeger:4318}")
    assert set(environment) <= GATEWAY_SETTINGS
    for name in SECRET_SETTINGS:
        assert environment.get(name) is None, f"{name}: passed through, never written down"
    demo = services["demo"]
    assert demo["profiles"] == ["demo"]
    assert demo["command"] == ["python", "-m", "gateway", "--demo"]
    assert not demo.get("environment") and not demo.get("depends_on")
    for name in ("prometheus", "grafana", "jaeger"):
        assert services[name]["profiles"] == ["observability"], name
        for source in (volume.split(":")[0] for volume in services[name].get("volumes", [])):
            assert not source.startswith(".") or (ROOT / source).exists(), f"{name}: {source}"
