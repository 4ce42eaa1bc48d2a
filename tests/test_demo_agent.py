"""The demo agent's example code runs as it is in the environment the README makes: its
*Insert* button puts it in a notebook cell, and the quickstart's user runs it (issue 14,
point 3). The environment's Python is this one (sys.executable), with only the package's
dependencies needed: nothing outside the standard library and `dependencies` is imported."""

import ast
import re
import subprocess
import sys
from importlib.metadata import requires

from jupyter_streamchat.agents.demo import _REPLY

BLOCKS = re.findall(r"^```python\n(.*?)^```$", _REPLY.format(question="What?"), re.M | re.S)


def test_demo_reply_has_one_python_block():
    assert len(BLOCKS) == 1 and BLOCKS[0].strip()


def test_demo_code_block_runs_in_this_environment(tmp_path):
    (code,) = BLOCKS
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"mean \d+\.\d tokens/s, best \d+\.\d tokens/s\n", done.stdout)


def test_demo_code_imports_only_the_standard_library_or_dependencies():
    (code,) = BLOCKS
    imported = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    dependencies = {
        re.split(r"[ <>=!;\[]", r, 1)[0].lower().replace("-", "_")
        for r in requires("jupyter-streamchat")
        if "extra ==" not in r
    }
    assert imported and imported <= set(sys.stdlib_module_names) | dependencies, imported
