"""The README's shell examples run as written: every block fenced ```sh demo-checked runs
against a real `python -m gateway --demo` (```sh demo2-checked: `--demo-accounts 2`), with
the admin token the README tells readers to set, under `bash -euo pipefail`; where the
README says what you will see, the output is checked too."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.processes import clean_env, running

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "demo-admin"
BLOCK = re.compile(r"^```sh (demo2?-checked)\n(.*?)^```$", re.M | re.S)

# (a line of the block, what its output must contain): what the README's comments promise.
PROMISES = (
    ("localhost:8080/sites/site-0002 | grep -i '^cache-status'", "chargepilot-gateway; hit; ttl="),
    ("localhost:8080/sites/no-such-site", '"status":404'),
    ('-H "If-None-Match: $etag"', "304"),
    ('\'{"site_id": "site-0002"}\'', '"purged":"site-0002"'),
    ("-X POST -d '{}' localhost:8080/admin/purge", "401"),
    ("'Accept-Encoding: identity;q=0'", "406"),
    ("--compressed", "Content-Encoding: zstd"),
    ("localhost:8080/sites/shared-site-0001    # 409", "409"),
    ("?account=us", "us"),
    ("localhost:8080/changes                   # 400", "400"),
)


def blocks(kind: str) -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return [body for found, body in BLOCK.findall(readme) if found == kind]


def run_blocks(kind: str, args: list[str], tmp_path: Path) -> list[tuple[str, str]]:
    port = free_port()
    env = clean_env(GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port),
                    GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN)  # fmt: skip
    env.pop("GATEWAY_REFRESH_SHARE")  # the demo as readers run it: the refresher on
    results = []
    with running(["gateway", *args], env, tmp_path / "gateway.log", ports=(port,)):
        for body in blocks(kind):
            script = body.replace("localhost:8080", f"127.0.0.1:{port}")
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                capture_output=True, text=True, timeout=30, cwd=ROOT,
            )  # fmt: skip
            assert done.returncode == 0, f"README block failed:\n{body}\n{done.stderr}"
            results.append((body, done.stdout))
    return results


def check_promises(results: list[tuple[str, str]]) -> int:
    checked = 0
    for body, output in results:
        for line, promise in PROMISES:
            if line in body:
                assert promise.lower() in output.lower(), f"{line!r}: no {promise!r} in\n{output}"
                checked += 1
    return checked


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("bash", "curl", "python3"):
        if shutil.which(tool) is None:
            pytest.fail(f"the README examples need {tool}")


@pytest.mark.slow
def test_readme_examples_run_against_the_demo(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"GATEWAY_ADMIN_TOKEN={ADMIN_TOKEN} bash scripts/demo" in readme
    results = run_blocks("demo-checked", ["--demo"], tmp_path)
    assert len(results) >= 6
    assert check_promises(results) >= 7
    pages = next(output for body, output in results if "next_cursor" in body)
    counts = [int(line.split()[0]) for line in pages.splitlines()]
    assert len(counts) >= 3 and counts[0] == 100 and sum(counts) > 300  # every page, once


@pytest.mark.slow
def test_readme_accounts_examples_run_against_the_two_account_demo(tmp_path: Path) -> None:
    results = run_blocks("demo2-checked", ["--demo", "--demo-accounts", "2"], tmp_path)
    assert len(results) >= 1
    assert check_promises(results) >= 3
