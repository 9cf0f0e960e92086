"""The reference in docs/ (and the README's settings table) is what the code renders now,
names every setting, metric, route and problem type, and nothing in the repository points
outside it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from gateway.app import create_app
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.reference import (
    REGENERATE,
    errors_page,
    metrics_page,
    outdated,
    render_docs,
    render_readme,
    settings_page,
)
from gateway.reference.endpoints_page import reference_settings
from gateway.settings_specs import SECTIONS, SPECS, sections

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(render_docs()))
def test_committed_docs_are_what_the_code_renders(name: str) -> None:
    expected = render_docs()[name]
    assert (DOCS / name).is_file(), f"docs/{name} is missing: run {REGENERATE}"
    assert doc(name) == expected, f"docs/{name} is out of date: run {REGENERATE}"


def test_readme_settings_table_is_generated() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render_readme(readme) == readme, f"README.md settings are out of date: run {REGENERATE}"
    assert outdated(ROOT) == []


def test_the_command_checks_and_writes(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(
        "# x\n<!-- BEGIN generated settings: python -m gateway.reference --write -->\n"
        "old\n<!-- END generated settings -->\n",
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "gateway.reference", "--root", str(tmp_path)]
    check = subprocess.run([*command, "--check"], capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 1 and REGENERATE in check.stderr
    assert subprocess.run([*command, "--write"], capture_output=True, cwd=ROOT).returncode == 0
    assert subprocess.run([*command, "--check"], capture_output=True, cwd=ROOT).returncode == 0
    assert (tmp_path / "docs" / "settings.md").read_text(encoding="utf-8") == doc("settings.md")
    assert "GATEWAY_CACHE_TTL" in (tmp_path / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_settings_page_in_its_section() -> None:
    text = doc("settings.md")
    for title, specs in sections():
        section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        for spec in specs:
            assert f"`{spec.variable}`" in section, f"{spec.variable} not under {title}"
            if spec.has_file:
                assert f"`{spec.variable}_FILE`" in section
    assert sum(len(specs) for _, specs in sections()) == len(SPECS)
    assert set(settings_page.NOTES) == {title for title, _ in SECTIONS}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert set(settings_page.README_SETTINGS) <= {spec.variable for spec in SPECS}
    for variable in settings_page.README_SETTINGS:
        assert f"`{variable}`" in readme


def test_every_metric_is_in_the_metrics_page() -> None:
    """Names from the exposition of a fresh registry (its `# TYPE` lines), independent of
    how the generator reads them."""
    exposition = generate_latest(Metrics().registry).decode()
    names = set(re.findall(r"^# TYPE (\w+) ", exposition, re.M))
    text = doc("metrics.md")
    assert len(names) == len(metrics_page.families()) > 20
    for name in names:
        assert f"| `{name}` |" in text, f"{name} is not in docs/metrics.md"
    for family in ("gateway_changes_total", "gateway_fleet_refresh_lag_seconds",
                   "gateway_site_connectors", "gateway_site_oversubscription_ratio"):  # fmt: skip
        assert f"`{family}`" in text
    assert set(metrics_page.NOTES) <= {f.name for f in metrics_page.families()}


def test_every_route_is_in_the_endpoints_page() -> None:
    app = create_app(reference_settings())
    text = doc("endpoints.md")
    routes = set()
    for resource in app.router.resources():
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", resource.canonical)
        for route in resource:
            routes.add((route.method, path))
    assert len(routes) > 20
    for method, path in routes:
        section = re.search(rf"^## [A-Z ]+ {re.escape(path)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
        assert section, f"{path} has no section in docs/endpoints.md"
        assert method in section[1].split("Methods: ", 1)[1].split(".", 1)[0], (method, path)


def test_every_problem_type_is_in_the_errors_page() -> None:
    text = doc("errors.md")
    classes = errors_page.problem_classes()
    assert len(classes) > 10
    slugs = {kind.slug for kind in classes}
    for kind in classes:
        assert f"`/problems/{kind.slug}`" in text and str(kind.status) in text
    assert set(errors_page.WHEN) == slugs | {"http-error"}
    assert GatewayError in classes


# Spelled in pieces so that this file does not match itself.
FORBIDDEN = ("../" + "shared", "/wo" + "rk/", "CONTRACT" + ".md")
SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def repository_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative.parts):
            continue
        if path.is_file() and path.name != ".git" and path.suffix not in (".pyc",):
            found.append(path)
    return found


def test_nothing_points_outside_the_repository() -> None:
    files = repository_files()
    covered = {path.relative_to(ROOT).parts[0] for path in files}
    assert {"README.md", "docs", "deploy", "bench", "gateway", "tests"} <= covered
    offenders = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(ROOT)}: {bad}" for bad in FORBIDDEN if bad in text]
    assert offenders == []
