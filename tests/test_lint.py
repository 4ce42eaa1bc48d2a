"""The code stays as the linters and formatters the project uses want it: ruff (Python) and
prettier (TypeScript, configured in js/). Fix with `ruff check --fix . && ruff format .` and
`cd js && npm run format`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    done = _run(sys.executable, "-m", "ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_python_is_formatted_as_ruff_formats_it():
    done = _run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def _missing(reason: str) -> None:
    """Skip saying what to install; under CI, where every part must be there, fail."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def test_typescript_is_formatted_as_prettier_formats_it():
    if shutil.which("npm") is None:
        _missing("npm is not installed (install Node.js 18 or newer)")
    if not (ROOT / "js" / "node_modules" / "prettier").is_dir():
        _missing("js/node_modules lacks prettier: run `cd js && npm install`")
    done = _run("npm", "run", "--silent", "lint", cwd=ROOT / "js")
    assert done.returncode == 0, done.stdout + done.stderr
