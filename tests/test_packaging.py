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
        capture_output=True, text=True, timeout=600)
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
    server_config = ("jupyter_streamchat-0.1.0.data/data/etc/jupyter/jupyter_server_config.d/"
                     "jupyter_streamchat.json")
    assert json.loads(wheel.read(server_config))["ServerApp"]["jpserver_extensions"] == {
        "jupyter_streamchat": True}


def test_wheel_has_the_widget_bundle(wheel):
    names = set(wheel.namelist())
    assert {"jupyter_streamchat/widget/static/widget.js",
            "jupyter_streamchat/widget/static/widget.css"} <= names
