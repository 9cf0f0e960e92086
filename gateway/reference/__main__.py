"""`python -m gateway.reference [--write | --check] [--root DIR]`: regenerate `docs/` (and
the README's settings table) from the code, or check that they are current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import REGENERATE, outdated, render_docs, write


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.reference", description=__doc__)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="write docs/*.md and README.md")
    action.add_argument("--check", action="store_true", help="exit 1 when any is out of date")
    parser.add_argument("--root", type=Path, default=Path(), help="the repository (default: .)")
    args = parser.parse_args(argv)
    if args.write:
        for name in write(args.root):
            print(f"updated {name}")
        return 0
    if args.check:
        stale = outdated(args.root)
        for name in stale:
            print(f"{name} is out of date: run {REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    for name, text in render_docs().items():  # no action: show what would be written
        print(f"===== docs/{name}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
