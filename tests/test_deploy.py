"""Checks on the deployment files: Dockerfile, docker-compose.yml and everything in deploy/.

The Prometheus rules and configs go through `promtool` (a missing promtool fails the
suite: `apt-get install prometheus`); every PromQL expression, in rules and dashboard
alike, may only name the gateway's own metrics and labels; the manifests may only set
settings the gateway knows, and must point their probes at its health endpoints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import DEFAULT_PORT, ENVIRONMENT_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "chargepilot-gateway.json"
RULE_FILES = ("recording.yml", "alerts.yml")
DS_REF = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

# The CONTRACT's settings, the *_FILE variants of its secrets, and the two extras the
# process reads (log level; prometheus-client's multiprocess directory).
GATEWAY_SETTINGS = frozenset(ENVIRONMENT_VARIABLES) | {"PROMETHEUS_MULTIPROC_DIR"}
SECRET_SETTINGS = frozenset({
    "CHARGEPILOT_API_KEY", "CHARGEPILOT_API_SECRET", "GATEWAY_CLIENT_TOKENS", "GATEWAY_ADMIN_TOKEN",
})  # fmt: skip

_COUNTERS = ("http_requests", "cache_lookups", "coalesced_requests", "upstream_requests",
             "redis_errors", "normalization_issues")  # fmt: skip
_HISTOGRAMS = ("http_request_duration_seconds", "upstream_request_duration_seconds")
_GAUGES = ("upstream_circuit_open", "site_data_age_seconds", "sites_cached", "connectors_cached",
           "upstream_rate_limit", "upstream_rate_tokens_available", "redis_up")  # fmt: skip
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
GATEWAY_METRICS = frozenset(
    [f"gateway_{name}_total" for name in _COUNTERS]
    + [f"gateway_{name}{series}" for name in _HISTOGRAMS for series in _HISTOGRAM_SERIES]
    + [f"gateway_{name}" for name in _GAUGES]
)
# Series Prometheus itself attaches to every target.
SCRAPE_SERIES = frozenset({"up"})
METRIC_LABELS = frozenset({"route", "method", "status", "result", "endpoint", "outcome",
                           "operation", "field", "site_id", "le"})  # fmt: skip
# Target labels added by the scrape configs in deploy/prometheus.
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


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules(filename: str) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS / filename)["groups"] for rule in group["rules"]]


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            match = _LABEL_VALUES.match(query)
            assert match, f"variable {variable['name']}: expected label_values(), got {query!r}"
            # label_values(selector, label) reads `label` of `selector`: check it as a grouping.
            yield f"variable {variable['name']!r}", f"{match[1]} by ({match[2]})"


def all_promql() -> Iterator[tuple[str, str]]:
    for filename in RULE_FILES:
        for rule in rules(filename):
            yield f"{filename} {rule.get('alert') or rule.get('record')}", rule["expr"]
    for group in load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]:
        for series in group.get("input_series", []):
            yield f"alerts_test.yml input {group['name']!r}", series["series"]
        for case in group.get("promql_expr_test", []):
            yield f"alerts_test.yml {group['name']!r}", case["expr"]
    yield from dashboard_queries()


def test_promql_names_finds_metrics_and_labels_only() -> None:
    names, labels = promql_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"/sites/{id}",'
        ' job=~"$job"}[$__rate_interval] offset 5m))) > 1e3 * max without(pod)(b:c:d) or'
        " count(e unless on (job) f) > bool g"
    )
    assert names == {"a_bucket", "b:c:d", "e", "f", "g"}
    assert labels == {"le", "route", "job", "pod"}


# --- promtool ---------------------------------------------------------------------------
def run_promtool(*args: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not on the PATH; install it with `apt-get install prometheus` "
            "(Debian/Ubuntu) or put a Prometheus release's promtool on the PATH",
            pytrace=False,
        )
    result = subprocess.run(
        [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_prometheus_config_is_valid() -> None:
    run_promtool("check", "config", "prometheus.yml")


def test_kubernetes_prometheus_config_is_valid(tmp_path: Path) -> None:
    # Debian's promtool is built without Kubernetes discovery, so check everything else:
    # the same config with the discovery block swapped for a static target.
    config = load_yaml(PROMETHEUS / "prometheus-k8s.yml")
    assert config["rule_files"] == list(RULE_FILES)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "chargepilot-gateway"
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    job["static_configs"] = [{"targets": ["gateway.invalid:8080"]}]
    config["rule_files"] = [str(PROMETHEUS / name) for name in RULE_FILES]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config), encoding="utf-8")
    run_promtool("check", "config", str(checked))


def test_rule_files_are_valid() -> None:
    run_promtool("check", "rules", *RULE_FILES)


def test_alert_unit_tests_pass() -> None:
    run_promtool("test", "rules", "alerts_test.yml")


# --- rules ------------------------------------------------------------------------------
def test_every_alert_is_tested_firing_and_silent() -> None:
    cases: dict[str, list[bool]] = {}
    for group in load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]:
        for case in group.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    alerts = {rule["alert"] for rule in rules("alerts.yml")}
    assert set(cases) == alerts
    for alert in alerts:
        assert True in cases[alert], f"{alert} is never tested firing"
        assert False in cases[alert], f"{alert} is never tested staying silent"


def test_alerts_have_severity_annotations_and_a_runbook_section() -> None:
    readme_anchors = {
        heading.strip().lower()
        for heading in re.findall(r"^#+ (.+)$", (DEPLOY / "README.md").read_text("utf-8"), re.M)
    }
    for rule in rules("alerts.yml"):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), name
        assert annotations["runbook"] == f"deploy/README.md#{name.lower()}"
        assert name.lower() in readme_anchors, f"deploy/README.md has no section {name}"


def test_promql_uses_only_gateway_metrics_and_labels() -> None:
    recorded = {rule["record"] for rule in rules("recording.yml")}
    known_metrics = GATEWAY_METRICS | SCRAPE_SERIES | recorded
    known_labels = METRIC_LABELS | TARGET_LABELS
    unknown = []
    for where, expr in all_promql():
        metrics, labels = promql_names(expr)
        assert metrics, f"{where}: no metric found in {expr!r}"
        unknown += [f"{where}: metric {name}" for name in sorted(metrics - known_metrics)]
        unknown += [f"{where}: label {name}" for name in sorted(labels - known_labels)]
    assert unknown == []


# --- Grafana ----------------------------------------------------------------------------
def test_dashboard_is_importable_and_consistent() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "chargepilot-gateway"
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DS_REF

    panels = list(dashboard_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel.get("title"), f"panel {panel['id']} has no title"
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DS_REF, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DS_REF) == DS_REF, panel["title"]
            assert '"$job"' in target["expr"], f"{panel['title']}: ignores the job variable"


def test_dashboard_covers_every_gateway_metric() -> None:
    used = set().union(*(promql_names(expr)[0] for _, expr in dashboard_queries()))
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    expected = {re.sub(r"_(bucket|sum|count)$", "", name) for name in GATEWAY_METRICS}
    assert expected <= families, f"not on the dashboard: {sorted(expected - families)}"


# --- Kubernetes -------------------------------------------------------------------------
def k8s_documents() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
        for path in sorted(K8S.glob("*.yaml"))
    }


def k8s_object(kind: str) -> dict[str, Any]:
    (found,) = [
        doc
        for name, docs in k8s_documents().items()
        if name != "kustomization.yaml"
        for doc in docs
        if doc["kind"] == kind
    ]
    return found


def gateway_container() -> dict[str, Any]:
    pod = k8s_object("Deployment")["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = pod["containers"]
    assert len(containers) == 1
    return containers[0]


def test_k8s_manifests_are_well_formed() -> None:
    documents = k8s_documents()
    assert documents
    for name, docs in documents.items():
        assert docs, f"{name} is empty"
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), name
            if doc["kind"] != "Kustomization":  # kustomize's own file, not an object
                assert doc.get("metadata", {}).get("name"), name


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    manifests = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {name for name in manifests if name.endswith(".example.yaml")}
    assert examples == {"secret.example.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests - examples)


def test_probes_point_at_the_health_endpoints_on_the_container_port() -> None:
    container = gateway_container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": DEFAULT_PORT}
    config = k8s_object("ConfigMap")["data"]
    assert int(config["GATEWAY_PORT"]) == DEFAULT_PORT
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):  # fmt: skip
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == DEFAULT_PORT, probe
    annotations = k8s_object("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == DEFAULT_PORT
    assert annotations["prometheus.io/path"] == "/metrics"
    service_port = k8s_object("Service")["spec"]["ports"][0]
    assert ports.get(service_port["targetPort"], service_port["targetPort"]) == DEFAULT_PORT


def test_k8s_sets_only_gateway_settings_and_secrets_as_files() -> None:
    container = gateway_container()
    config_map = k8s_object("ConfigMap")
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    env = {var["name"]: var for var in container["env"]}
    assert set(config_map["data"]) | set(env) <= GATEWAY_SETTINGS
    assert not set(config_map["data"]) & SECRET_SETTINGS, "secrets belong in the Secret"
    assert config_map["data"]["REDIS_URL"] == "redis+sentinel://redis-sentinel:26379/mymaster/0"

    secret = load_yaml(K8S / "secret.example.yaml")
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "credentials"]
    pod = k8s_object("Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "credentials"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    files = {item["path"]: item["key"] for item in volume["secret"]["items"]}
    assert set(files.values()) <= set(secret["stringData"])
    for name in ("CHARGEPILOT_API_KEY_FILE", "CHARGEPILOT_API_SECRET_FILE"):
        path = Path(env[name]["value"])
        assert path.parent == Path(mount["mountPath"]) == Path("/var/run/secrets/chargepilot")
        assert path.name in files, name
    for var in env.values():
        if "valueFrom" in var:
            reference = var["valueFrom"]["secretKeyRef"]
            assert reference["name"] == secret["metadata"]["name"]
            assert reference["key"] in secret["stringData"]
        else:
            assert var["name"] not in SECRET_SETTINGS, f"{var['name']} must not be a literal"
    assert all("REPLACE_ME" in value for value in secret["stringData"].values())


def test_deployment_is_hardened_and_drains() -> None:
    deployment = k8s_object("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = gateway_container()
    assert deployment["spec"]["replicas"] == 3
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }


def test_k8s_objects_select_the_gateway_pods() -> None:
    deployment = k8s_object("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": k8s_object("Service")["spec"]["selector"],
        "PodDisruptionBudget": k8s_object("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": k8s_object("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector.items() <= pod_labels.items(), kind
    assert k8s_object("PodDisruptionBudget")["spec"]["minAvailable"] == 2
    hpa = k8s_object("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 3
    policy = k8s_object("NetworkPolicy")["spec"]
    assert [port["port"] for rule in policy["ingress"] for port in rule["ports"]] == [DEFAULT_PORT]
    egress_ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
    assert egress_ports == {53, 6379, 26379, 443}


# --- Docker -----------------------------------------------------------------------------
def test_compose_services() -> None:
    compose = load_yaml(ROOT / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"redis", "gateway", "demo", "prometheus", "grafana"}
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]

    gateway = services["gateway"]
    assert gateway["build"] == "."
    assert gateway["deploy"]["replicas"] == 2
    assert gateway["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert gateway["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert set(gateway["environment"]) <= GATEWAY_SETTINGS
    for name in SECRET_SETTINGS:
        # Passed through from the shell, never written down.
        assert gateway["environment"].get(name) is None, name

    demo = services["demo"]
    assert demo["profiles"] == ["demo"]
    assert demo["command"] == ["python", "-m", "gateway", "--demo"]
    assert not demo.get("environment") and not demo.get("depends_on")
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"], name
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions of each stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def test_dockerfile_runs_the_gateway_as_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    assert all(" AS " in stage[0][1].upper() for stage in stages)
    assert any(
        instruction == "RUN" and "pip install --no-cache-dir ." in arguments
        for stage in stages
        for instruction, arguments in stage
    )
    final = {instruction: arguments for instruction, arguments in stages[-1]}
    assert final["USER"].split(":")[0] not in {"", "root", "0"}
    assert json.loads(final["CMD"]) == ["python", "-m", "gateway"]
    assert final["EXPOSE"] == str(DEFAULT_PORT)
    assert final["STOPSIGNAL"] == "SIGTERM"
    assert "urllib" in final["HEALTHCHECK"] and "/healthz" in final["HEALTHCHECK"]
