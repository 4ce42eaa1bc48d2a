"""The front end's tests (js/test, run by ``npm test``): the wire contract's run-time checks and
the reply reducer of js/src against tests/fixtures/frames.json, and the image rules.

They run with Node's own test runner; without Node and npm they are skipped here, except in CI
(``CI=true``), where a skip would hide them, so they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).parent.parent / "js"
GUARD_S = 300  # a hang guard for installing and running the tests, not a performance claim


def _missing(reason: str) -> None:
    message = f"the JavaScript tests need {reason}: install Node.js 20+ and npm"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _npm(*args: str) -> subprocess.CompletedProcess:
    npm = shutil.which("npm")
    return subprocess.run([npm, *args], cwd=JS, capture_output=True, text=True, timeout=GUARD_S)


def test_js_tests_pass():
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            _missing(f"`{tool}` on PATH")
    if not (JS / "node_modules").is_dir():
        # A checkout installed with pip has them (the build runs npm); a bare one may not.
        installed = _npm("ci", "--no-audit", "--no-fund")
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    result = _npm("test")
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"npm test failed:\n{output[-20000:]}"
    # Node's runner ends with a summary; make sure tests ran and none failed.
    assert "# fail 0" in output, output[-5000:]
    passed = [line for line in output.splitlines() if line.startswith("# pass ")]
    assert passed and int(passed[-1].split()[-1]) > 0, output[-5000:]
