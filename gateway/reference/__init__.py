"""The project's interface reference, rendered from the code into `docs/`.

    docs/README.md     index
    docs/endpoints.md  from the OpenAPI document the app serves (`openapi.py`)
    docs/settings.md   from the settings table (`settings_specs.py`)
    docs/headers.md    prose around the literals `responses.py`, `encodings.py` decide
    docs/errors.md     from the `GatewayError` hierarchy (`errors.py`)
    docs/metrics.md    from a fresh `Metrics()` registry (`metrics.py`)

and the short settings table in the top-level README, between `README_BEGIN` and
`README_END`.  `python -m gateway.reference --write` regenerates all of it; `--check` says
whether the committed files are current (the test suite does the same).  Hand-written prose
lives in the page modules, next to the code-derived tables, so every file is regenerated
whole and nothing in `docs/` is edited by hand.
"""

from __future__ import annotations

from pathlib import Path

from . import endpoints_page, errors_page, headers_page, metrics_page, settings_page
from .markdown import page, table

REGENERATE = "python -m gateway.reference --write"
README_BEGIN = "<!-- BEGIN generated settings: python -m gateway.reference --write -->"
README_END = "<!-- END generated settings -->"

_PAGES = (
    ("endpoints.md", "Endpoints", "every route: methods, parameters, answers, auth; the schemas",
     endpoints_page.render),
    ("settings.md", "Settings", "every environment variable, its default and meaning",
     settings_page.render),
    ("headers.md", "Headers", "Cache-Status, ETag and 304, compression, request ids, event "
     "streams, tracing", headers_page.render),
    ("errors.md", "Errors", "every problem type and when it is answered", errors_page.render),
    ("metrics.md", "Metrics", "every Prometheus metric: type, labels, meaning",
     metrics_page.render),
)  # fmt: skip

INDEX = """
The interface of chargepilot-gateway: what clients, dashboards and operators may rely on.
The repository's [README](../README.md) is the user's guide; these pages are the
reference. They are generated from the code (the settings table, the metrics registry, the
OpenAPI document, the error classes), so they change with it; run `{command}` from the
repository root after a change, and the test suite fails while they are out of date.
"""


def _index() -> str:
    rows = [[f"[{title}]({name})", what] for name, title, what, _ in _PAGES]
    return page(
        "chargepilot-gateway reference",
        INDEX.format(command=REGENERATE),
        table(["page", "what"], rows),
    )


def render_docs() -> dict[str, str]:
    """Every file of `docs/`, by name."""
    files = {"README.md": _index()}
    files.update({name: render() for name, _, _, render in _PAGES})
    return files


def render_readme(current: str) -> str:
    """The README with its generated settings table replaced by the current one."""
    start = current.index(README_BEGIN) + len(README_BEGIN)
    end = current.index(README_END, start)
    return current[:start] + "\n" + settings_page.readme_table() + "\n" + current[end:]


def outdated(root: Path) -> list[str]:
    """The generated files under `root` (the repository) that differ from a fresh render."""
    stale = [
        f"docs/{name}"
        for name, text in render_docs().items()
        if not (root / "docs" / name).is_file()
        or (root / "docs" / name).read_text(encoding="utf-8") != text
    ]
    readme = (root / "README.md").read_text(encoding="utf-8")
    if render_readme(readme) != readme:
        stale.append("README.md")
    return stale


def write(root: Path) -> list[str]:
    """Regenerate every generated file under `root`; return those that changed."""
    changed = outdated(root)
    (root / "docs").mkdir(exist_ok=True)
    for name, text in render_docs().items():
        (root / "docs" / name).write_text(text, encoding="utf-8")
    readme = root / "README.md"
    readme.write_text(render_readme(readme.read_text(encoding="utf-8")), encoding="utf-8")
    return changed
