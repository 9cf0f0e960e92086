"""Small Markdown helpers shared by the reference pages: tables, code spans, headers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# A setting's name in running text: two or more upper-case words joined by underscores.
_SETTING = re.compile(r"(?<![`\w])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_(?:[A-Z0-9]+|\*))(?![`\w*])")


def cell(text: str) -> str:
    """Text that stays inside one table cell."""
    return " ".join(text.replace("|", "\\|").split())


def code(text: str) -> str:
    """A code span that holds any text (backticks inside get a longer fence)."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def setting_names(text: str) -> str:
    """`GATEWAY_X` names in prose set as code."""
    return _SETTING.sub(r"`\1`", text)


# Literals in running text: a JSON object, a URL, an <placeholder>, a path, an option.
_LITERAL = re.compile(
    r"""\{[^}]*\}\S*"""  # {"name", "base_url", ...}
    r"|[a-z+]+://\S*?(?=[,;)]?(?:\s|$))"  # redis+sentinel://host:port[,host:port]/...
    r"|[^\s(]*<[^>]+>[^\s,;)]*"  # <endpoint>/v1/traces
    r"|(?<![\w`])/[\w/*.{}-]*\w[\w/*.{}-]*(?:\.\.\.)?"  # /rest/v1, /admin/*
    r"|(?<![\w`])--[a-z][\w-]*"  # --demo
)


def prose(text: str) -> str:
    """Plain text made safe for Markdown: literals and setting names set as code."""
    return setting_names(_LITERAL.sub(lambda match: code(match.group(0)), text))


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading."""
    lowered = heading.strip().lower()
    kept = re.sub(r"[^\w\- ]", "", lowered)
    return kept.replace(" ", "-")


GENERATED = (
    "<!-- Generated from the code by `python -m gateway.reference --write`; do not edit: "
    "change the code or gateway/reference/ and regenerate. -->"
)


def page(title: str, *parts: str) -> str:
    """A whole page: the generated-file note, the title, the parts, one final newline."""
    body = "\n\n".join(part.strip("\n") for part in parts if part.strip())
    return f"{GENERATED}\n\n# {title}\n\n{body}\n"
