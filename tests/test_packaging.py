"""The wheel carries the prebuilt JupyterLab extension and the widget bundle, in the places
JupyterLab and anywidget look for them, so installing it needs neither Node.js nor a
JupyterLab build."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).parent.parent
LABEXT = "jupyter_streamchat-0.1.0.data/data/share/jupyter/labextensions/jupyter-streamchat/"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (path,) = out.glob("jupyter_streamchat-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_wheel_has_the_prebuilt_lab_extension(wheel):
    names = set(wheel.namelist())
    meta = json.loads(wheel.read(LABEXT + "package.json"))
    assert meta["name"] == "jupyter-streamchat"
    entry = meta["jupyterlab"]["_build"]["load"]  # what JupyterLab loads: the built remote entry
    assert LABEXT + entry in names
    assert LABEXT + "static/style.js" in names
    install = json.loads(wheel.read(LABEXT + "install.json"))
    assert install["packageName"] == "jupyter-streamchat"
    server_config = (
        "jupyter_streamchat-0.1.0.data/data/etc/jupyter/jupyter_server_config.d/"
        "jupyter_streamchat.json"
    )
    assert json.loads(wheel.read(server_config))["ServerApp"]["jpserver_extensions"] == {
        "jupyter_streamchat": True
    }


def test_wheel_has_the_widget_bundle(wheel):
    names = set(wheel.namelist())
    assert {
        "jupyter_streamchat/widget/static/widget.js",
        "jupyter_streamchat/widget/static/widget.css",
    } <= names


# -- Notebook 7 comes with the main install (issue 14, point 2) -----------------------------

import re  # noqa: E402
import tomllib  # noqa: E402  (Python 3.11+; the tests' Python)
from importlib.metadata import requires  # noqa: E402

from server_process import JupyterServer, isolated_env  # noqa: E402


def _main_requirements(requirements) -> set:
    """Names of the requirements that hold without an extra."""
    return {
        re.split(r"[ <>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-")
        for r in requirements
        if "extra ==" not in r.replace('"', "'")
    }


def test_notebook_is_a_main_dependency():
    """`pip install -e .`, as ./scripts/start.sh runs it, brings Jupyter Notebook 7 along."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "notebook" in _main_requirements(project["dependencies"])
    # And the installed distribution says so (stale until the checkout is installed again).
    assert "notebook" in _main_requirements(requires("jupyter-streamchat"))


def test_server_as_start_sh_starts_it_serves_notebook_7(tmp_path):
    """A server with the environment's extensions, as `./scripts/start.sh` starts it, answers
    Notebook 7's file browser (/tree) and its notebook page, beside JupyterLab."""
    env = isolated_env(tmp_path)
    with JupyterServer(tmp_path, env=env, other_extensions=True) as server:
        (server.root / "notes.ipynb").write_text(
            json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
        )
        for path in ("tree", "notebooks/notes.ipynb", "lab"):
            status, _, body = server.request("GET", path)
            assert status == 200, (path, status, server.log()[-3000:])
            assert b"<html" in body.lower()
        _, _, tree = server.request("GET", "tree")
        assert b"notebook" in tree.lower()
