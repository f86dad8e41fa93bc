"""schemathesis against our own OpenAPI schema: every check, including no 5xx and responses as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.service.conftest import Running


def test_schemathesis_finds_nothing(server: Running) -> None:
    st = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run([str(st), "run", f"{server.url}/openapi.json", "--checks", "all", "--max-examples", "150",
                          "--seed", "1", "--no-color"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
