"""Every example notebook in notebooks/ runs headless from top to bottom.

The notebooks run are the examples as the project holds them, not as a user left them: in a git
checkout, the notebooks git tracks, as staged (the index: what a commit would hold), so a
user's own changes to one (autosave, an inserted code block needing a package the environment
lacks) and notebooks of their own (notebooks/my-quickstart.ipynb, made by scripts/start.sh) do
not fail the tests. Outside git (an unpacked sdist) they are the files, but the users' copies.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parent.parent
USERS_COPIES = ("my-*.ipynb",)  # git-ignored copies the users make (scripts/start.sh)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=60)


def _in_git(root: Path) -> bool:
    try:
        done = _git(root, "rev-parse", "--show-toplevel")
    except OSError:  # no git at all
        return False
    return done.returncode == 0 and Path(done.stdout.strip()).resolve() == root.resolve()


def example_notebooks(root: Path = ROOT) -> list:
    """The example notebooks' paths, relative to ``root``."""
    if _in_git(root):
        listed = _git(root, "ls-files", "-z", "--", "notebooks/*.ipynb").stdout
        return sorted(Path(name) for name in listed.split("\0") if name)
    return sorted(path.relative_to(root) for path in (root / "notebooks").glob("*.ipynb")
                  if not any(path.match(pattern) for pattern in USERS_COPIES))


def pristine_text(relative: Path, root: Path = ROOT) -> str:
    """The notebook as the project holds it: git's staged copy in a checkout, else the file."""
    if _in_git(root):
        done = _git(root, "show", f":{relative.as_posix()}")
        if done.returncode == 0:
            return done.stdout
    return (root / relative).read_text(encoding="utf-8")


NOTEBOOKS = example_notebooks()


@pytest.mark.parametrize("relative", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(relative, tmp_path, monkeypatch):
    for name in ("JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("STREAMCHAT_STORE_URL", raising=False)
    notebook = nbformat.reads(pristine_text(relative), as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "jupyter_data_dir" / "streamchat.db").exists()


def test_there_are_example_notebooks():
    assert Path("notebooks/quickstart.ipynb") in NOTEBOOKS


# -- what a user does first does not fail the tests (issue 14, point 3) ----------------------


@pytest.fixture
def clone(tmp_path) -> Path:
    """A checkout of its own: this one's notebooks and scripts, committed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "jupyter-streamchat"
    (root / "notebooks").mkdir(parents=True)
    (root / "scripts").mkdir()
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", root / "notebooks")
    for name in ("_env.sh", "start.sh"):
        shutil.copy(ROOT / "scripts" / name, root / "scripts")
    shutil.copy(ROOT / ".gitignore", root)
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q",
                  "-m", "clone"]):
        assert _git(root, *args).returncode == 0
    return root


def test_a_quickstart_changed_by_its_user_is_not_what_the_tests_run(clone):
    """The user adds a cell (the demo's code used to import pandas) and Jupyter autosaves: the
    tests still run the quickstart as committed, and never the user's own copy."""
    path = clone / "notebooks" / "quickstart.ipynb"
    committed = path.read_text(encoding="utf-8")
    changed = nbformat.reads(committed, as_version=4)
    changed.cells.append(nbformat.v4.new_code_cell("import pandas as pd"))
    nbformat.write(changed, path)
    shutil.copy(path, clone / "notebooks" / "my-quickstart.ipynb")
    assert example_notebooks(clone) == [Path("notebooks/quickstart.ipynb")]
    ran = nbformat.reads(pristine_text(Path("notebooks/quickstart.ipynb"), clone), as_version=4)
    assert ran == nbformat.reads(committed, as_version=4)
    assert all("pandas" not in cell.source for cell in ran.cells)


def test_start_sh_opens_a_git_ignored_copy_of_the_quickstart(clone):
    """scripts/start.sh opens notebooks/my-quickstart.ipynb, made once from the quickstart and
    then left as the user keeps it; git ignores it, and the tracked quickstart stays as is."""
    script = 'source scripts/_env.sh; streamchat_quickstart; echo "opens $STREAMCHAT_NOTEBOOK"'

    def run():
        return subprocess.run(["bash", "-c", script], cwd=clone, capture_output=True,
                              text=True, timeout=60)

    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == "opens notebooks/my-quickstart.ipynb"
    copy = clone / "notebooks" / "my-quickstart.ipynb"
    assert copy.read_bytes() == (clone / "notebooks" / "quickstart.ipynb").read_bytes()
    copy.write_text(copy.read_text().replace("quickstart", "my own notes"))  # the user's work
    kept = copy.read_text()
    again = run()
    assert again.stdout.splitlines() == ["opens notebooks/my-quickstart.ipynb"]  # no new copy
    assert copy.read_text() == kept
    assert _git(clone, "status", "--porcelain").stdout == ""  # ignored, and nothing else changed
    assert '"$STREAMCHAT_NOTEBOOK"' in (clone / "scripts" / "start.sh").read_text()
