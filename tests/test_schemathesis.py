"""Schemathesis against a real gateway process (the demo simulator behind it, an admin
token, client tokens off) over the whole OpenAPI document with every phase — examples,
coverage, fuzzing, stateful — and a fixed seed: no server error, no response that
contradicts the schema, no schema-valid request refused."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.processes import clean_env, running

HERE = Path(__file__).resolve().parent
ADMIN = "schemathesis-admin-token"
SEED = "20261201"


@pytest.mark.slow
def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    binary = shutil.which("st", path=str(Path(sys.executable).parent))
    assert binary is not None, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    port = free_port()
    env = clean_env(
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        GATEWAY_ADMIN_TOKEN=ADMIN,
        GATEWAY_LOG_LEVEL="WARNING",
    )
    with running(["gateway", "--demo"], env, tmp_path / "gateway.log", ports=(port,)):
        result = subprocess.run(
            [
                binary,
                "--config-file",
                str(HERE / "schemathesis.toml"),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--phases=examples,coverage,fuzzing,stateful",
                "--checks=all",
                f"--seed={SEED}",
                "--max-examples=25",
                "--header",
                f"Authorization: Bearer {ADMIN}",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            env=clean_env(),
            cwd=tmp_path,  # its example cache stays out of the tree
        )
    report = result.stdout + result.stderr
    print(report[-4000:])
    cases = re.search(r"(\d+) generated", report)
    assert cases is not None and int(cases.group(1)) > 300, report[-2000:]
    assert result.returncode == 0, report[-6000:]
    log = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in log
