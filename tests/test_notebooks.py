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
import papermill
import pytest
from nbclient import NotebookClient
from openai_standin import REASONING, StandIn
from server_process import JupyterServer, isolated_env

ROOT = Path(__file__).parent.parent
USERS_COPIES = ("my-*.ipynb",)  # git-ignored copies the users make (scripts/start.sh)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60
    )


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
    return sorted(
        path.relative_to(root)
        for path in (root / "notebooks").glob("*.ipynb")
        if not any(path.match(pattern) for pattern in USERS_COPIES)
    )


def pristine_text(relative: Path, root: Path = ROOT) -> str:
    """The notebook as the project holds it: git's staged copy in a checkout, else the file."""
    if _in_git(root):
        done = _git(root, "show", f":{relative.as_posix()}")
        if done.returncode == 0:
            return done.stdout
    return (root / relative).read_text(encoding="utf-8")


NOTEBOOKS = example_notebooks()
EXAMPLES = ("quickstart", "real-model", "pandas-agent", "headless", "magic")

# The key the stand-in model server accepts (any other gets a 401): the real-model notebook
# must pass on the one it is given.
STANDIN_KEY = "sk-notebook-test"


@pytest.fixture(scope="module")
def standin():
    """An OpenAI-compatible model server (tests/openai_standin.py): it echoes the last user
    message word by word, in OpenAI's streaming wire format."""
    with StandIn(api_key=STANDIN_KEY) as server:
        yield server


def isolate(tmp_path: Path, monkeypatch, request, relative: Path, server=None) -> dict:
    """Jupyter state in ``tmp_path`` (so a kernel's hub opens a store of its own there), the
    Jupyter server the kernel talks to, if any (as a kernel JupyterLab starts does), and what
    the notebook needs from the environment; returns what its checks need."""
    for name in ("JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    for name in (
        "STREAMCHAT_STORE_URL",
        "STREAMCHAT_SERVER_URL",
        "STREAMCHAT_TOKEN",
        "OPENAI_BASE_URL",
        "OPENAI_MODEL",
        "OPENAI_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    context = {"remote": server is not None}
    if server is not None:
        monkeypatch.setenv("STREAMCHAT_SERVER_URL", server.http_url(""))
        monkeypatch.setenv("STREAMCHAT_TOKEN", server.token)
    if relative.stem == "real-model":
        model_server = context["standin"] = request.getfixturevalue("standin")
        context["asked_before"] = len(model_server.requests)  # by other tests' runs
        monkeypatch.setenv("OPENAI_BASE_URL", model_server.url)
        monkeypatch.setenv("OPENAI_MODEL", "standin")
        monkeypatch.setenv("OPENAI_API_KEY", STANDIN_KEY)
    return context


def run_example(relative: Path, tmp_path: Path, monkeypatch, request, server=None):
    """Execute the example with nbclient, as the project holds it, headless or with its kernel
    talking to ``server``; check what it shows. Returns the executed notebook."""
    context = isolate(tmp_path, monkeypatch, request, relative, server)
    notebook = nbformat.reads(pristine_text(relative), as_version=4)
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    # Headless, the hub inside the kernel stored the chats; behind a server, the server did.
    stored = (tmp_path / "jupyter_data_dir" / "streamchat.db").exists()
    assert stored is (server is None)
    check = CHECKS.get(relative.stem)
    if check is not None:
        check(Outputs(notebook), **context)
    return notebook


@pytest.mark.parametrize("relative", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(relative, tmp_path, monkeypatch, request):
    run_example(relative, tmp_path, monkeypatch, request)


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory, standin):
    """A ``jupyter server`` whose own ``openai`` agent is configured for the stand-in, as a
    user configures it for their model when JupyterLab starts."""
    base = tmp_path_factory.mktemp("server")
    openai = [f"--OpenAIAgent.base_url={standin.url}", "--OpenAIAgent.model=standin"]
    env = isolated_env(base, OPENAI_API_KEY=STANDIN_KEY)
    with JupyterServer(base, *openai, env=env) as server:
        yield server


@pytest.mark.subprocess
@pytest.mark.parametrize("relative", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_behind_a_jupyter_server(relative, tmp_path, monkeypatch, request):
    """As in JupyterLab: the kernel talks to the server's hub, which runs the server's agents
    and the notebook's own, and stores every message."""
    server = request.getfixturevalue("jupyter_server")
    run_example(relative, tmp_path, monkeypatch, request, server)
    assert (server.data_dir / "streamchat.db").exists()


def test_there_are_example_notebooks():
    assert {path.stem for path in NOTEBOOKS} >= set(EXAMPLES)


@pytest.mark.parametrize("relative", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_examples_are_saved_clean(relative):
    """What the project holds has no outputs, no execution counts, and the usual kernel."""
    notebook = nbformat.reads(pristine_text(relative), as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert (cell.outputs, cell.execution_count) == ([], None), cell.source


def test_the_readme_links_every_example():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for relative in NOTEBOOKS:
        assert f"]({relative.as_posix()})" in readme, relative


# -- what each example shows once run ---------------------------------------------------------


class Outputs:
    """An executed notebook's outputs as text, by cell."""

    def __init__(self, notebook):
        self.notebook = notebook

    def of(self, marker: str) -> str:
        """The outputs of the one code cell whose source holds ``marker``: streams, and the
        text and Markdown of displays (updated ones as last updated)."""
        cells = [
            cell
            for cell in self.notebook.cells
            if cell.cell_type == "code" and marker in cell.source
        ]
        assert len(cells) == 1, f"{len(cells)} code cells hold {marker!r}"
        texts = []
        for output in cells[0].outputs:
            if output.output_type == "stream":  # a print's pieces follow each other
                texts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                texts.extend(
                    output.data.get(kind, "") + "\n" for kind in ("text/plain", "text/markdown")
                )
        return "".join(texts)


def check_quickstart(out: Outputs, **context) -> None:
    assert "complete" in out.of("print(reply.status")
    assert "'complete'" in out.of("echoed.status")


def check_headless(out: Outputs, remote: bool, **context) -> None:
    hub = "the Jupyter server" if remote else "a hub inside this kernel"
    assert hub in out.of("chat = sc.Chat(agent=agent)")
    streamed = out.of("for piece in reply.chunks")
    assert "You asked: *What can you do?*" in streamed  # the demo agent's reply, printed
    assert "[complete: " in streamed
    assert "complete 'The nightly build passed.'" in out.of("check = chat.send")
    # Stopped after its first chunk, when the demo agent has seconds of reply left.
    assert out.of("chat.stop()").startswith("stopped after ")
    listed = out.of("for message in chat.messages")
    assert listed.count("user") == 3 and listed.count("assistant") == 3
    assert "stopped" in listed
    transcript = out.of("later = sc.Chat")
    assert "The nightly build passed." in transcript
    assert "Carried on from a new Chat." in transcript


def check_magic(out: Outputs, **context) -> None:
    assert "You asked: *What can you do?*" in out.of("%%chat demo")
    for words in (
        "Repeat after me: the conversation goes on.",
        "No agent named: echo again, in the same conversation.",
        "A fresh start.",
        "Second note, from a %%chat cell.",
    ):
        assert words in out.of(words)
    # The %%chat cell with --conversation wrote into the conversation started from Python.
    notes = out.of("for message in notes.messages")
    for words in ("First note, from Python.", "Second note, from a %%chat cell."):
        assert f"('user', '{words}')" in notes and f"('assistant', '{words}')" in notes
    assert "fresh start" not in notes


def check_pandas_agent(out: Outputs, remote: bool, **context) -> None:
    by_region = out.of('chat.send("Revenue by region")')
    assert "| region | revenue |" in by_region
    assert "| North | 2,745.50 |" in by_region  # sales.groupby("region")["revenue"].sum()
    assert "Computing sales.groupby(['region'])['revenue'].sum()" in out.of("print(reply.reasoning")
    # A follow-up measures what the question before it did.
    assert "| product | revenue |" in out.of('chat.send("And by product?")')
    assert "| statistic | units | revenue |" in out.of('chat.send("Describe the data")')
    refused = out.of('chat.send("Revenue by colour")')
    assert refused.startswith("error - The data has no column 'colour'")
    if not remote:  # the widget's saved output: its conversation, after the later cell's reply
        assert "| South | Gadgets | 138 |" in out.of("widget = sc.ChatWidget")
    assert "'complete'" in out.of("widget.send(")


def check_real_model(out: Outputs, standin: StandIn, asked_before: int, **context) -> None:
    question, follow_up = "In two sentences: what is a Jupyter kernel?", "Now say it in five words."
    streamed = out.of("reply.chunks(")
    assert question in streamed and "[complete]" in streamed  # the stand-in echoes
    assert "standin-2025-01-01" in out.of("print(reply.usage)")  # the model that served it
    assert follow_up in out.of(follow_up)
    assert out.of("builtin = ").startswith("complete - Hello from the hub's own agent.")
    requests = standin.requests[asked_before:]  # this run's
    [asked] = [r for r in requests if r["messages"][-1]["content"] == follow_up]
    assert [m["role"] for m in asked["messages"]] == ["system", "user", "assistant", "user"]
    assert asked["messages"][1:3] == [
        {"role": "user", "content": question},
        {"role": "assistant", "content": question},
    ]


CHECKS = {
    "quickstart": check_quickstart,
    "headless": check_headless,
    "magic": check_magic,
    "pandas-agent": check_pandas_agent,
    "real-model": check_real_model,
}


# -- the same through papermill, with parameters where a notebook has them ------------------


def papermill_parameters(relative: Path, context: dict) -> dict:
    if relative.stem == "headless":
        return {"agent": "echo", "question": "Parameters from papermill."}
    if relative.stem == "real-model":  # a model the environment does not name: a thinking one
        return {
            "base_url": context["standin"].url,
            "model": "standin-reasoning-content",
            "api_key": STANDIN_KEY,
        }
    return {}


@pytest.mark.parametrize("relative", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_with_papermill(relative, tmp_path, monkeypatch, request):
    run_with_papermill(relative, tmp_path, monkeypatch, request)


def run_with_papermill(relative: Path, tmp_path: Path, monkeypatch, request):
    context = isolate(tmp_path, monkeypatch, request, relative)
    source = tmp_path / relative.name
    source.write_text(pristine_text(relative), encoding="utf-8")
    parameters = papermill_parameters(relative, context)
    notebook = papermill.execute_notebook(
        str(source),
        str(tmp_path / f"run-{relative.name}"),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
        execution_timeout=120,
    )
    assert (tmp_path / "jupyter_data_dir" / "streamchat.db").exists()
    out = Outputs(notebook)
    if relative.stem == "headless":
        streamed = out.of("for piece in reply.chunks")
        assert streamed.startswith("Parameters from papermill.") and "[complete: " in streamed
    elif relative.stem == "real-model":
        assert REASONING in out.of("print(reply.reasoning")  # only that model thinks
        models = {r["model"] for r in context["standin"].requests[context["asked_before"] :]}
        assert "standin-reasoning-content" in models
    elif relative.stem in CHECKS:
        CHECKS[relative.stem](out, **context)
    return notebook


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
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "clone"],
    ):
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
    assert all("import pandas" not in cell.source for cell in ran.cells)


def test_start_sh_opens_a_git_ignored_copy_of_the_quickstart(clone):
    """scripts/start.sh opens notebooks/my-quickstart.ipynb, made once from the quickstart and
    then left as the user keeps it; git ignores it, and the tracked quickstart stays as is."""
    script = 'source scripts/_env.sh; streamchat_quickstart; echo "opens $STREAMCHAT_NOTEBOOK"'

    def run():
        return subprocess.run(
            ["bash", "-c", script], cwd=clone, capture_output=True, text=True, timeout=60
        )

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
