"""A kernel's variables as the chat attaches them (jupyter_streamchat/kernel/variables.py), asked
of a real ipykernel the two ways the front ends ask:

- as JupyterLab's chat does (js/src/lab/contextsources.ts): the file's text evaluated in a
  silent execute request's ``user_expressions``, in a kernel where jupyter_streamchat cannot
  be imported, the answer read from the reply's ``application/json``;
- as the notebook widget does (js/src/widget/kernelvariables.ts): a ``variables`` envelope on
  the widget's comm, answered by jupyter_streamchat/widget/comm.py.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from jupyter_client import KernelManager

from jupyter_streamchat.kernel import variables
from jupyter_streamchat.widget.comm import ENVELOPE
from server_process import isolated_env

GUARD = 60.0  # seconds; a hang guard, never a performance claim
SOURCE = Path(variables.__file__).read_text()


def lab_expression(request: dict) -> str:
    """The expression contextsources.ts sends (JSON strings are Python string literals)."""
    return (
        f"(lambda ns: (exec({json.dumps(SOURCE)}, ns), "
        f"ns['answer']({json.dumps(json.dumps(request))}))[1])"
        "({'__name__': '_streamchat_variables'})"
    )


class Kernel:
    def __init__(self, client):
        self.kc = client
        self.comm_id = None
        self.envelopes: list = []

    def run(self, code: str) -> str:
        """Run ``code`` as a cell; its stdout. Fails with the traceback if it raised."""
        msg_id = self.kc.execute(code)
        out, error = [], None
        for msg in self._until_idle(msg_id):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                error = "\n".join(content["traceback"])
        assert error is None, error
        return "".join(out)

    def ask(self, request: dict) -> dict:
        """Ask as JupyterLab does; the answer (application/json of the user expression)."""
        msg_id = self.kc.execute(
            "",
            silent=True,
            store_history=False,
            user_expressions={"answer": lab_expression(request)},
            stop_on_error=False,
        )
        reply = self._reply(msg_id)
        assert reply["status"] == "ok", reply
        answer = reply["user_expressions"]["answer"]
        assert answer["status"] == "ok", answer
        return answer["data"]["application/json"]

    def ask_comm(self, request: dict) -> dict:
        """Ask as the widget's view does, over its comm; the answer."""
        assert self.comm_id, "no widget"
        request_id = uuid.uuid4().hex
        content = {ENVELOPE: "variables", "view": "v1", "id": request_id, "request": request}
        self.kc.shell_channel.send(
            self.kc.session.msg(
                "comm_msg",
                {"comm_id": self.comm_id, "data": {"method": "custom", "content": content}},
            )
        )
        deadline = time.monotonic() + GUARD
        while True:
            for envelope in self.envelopes:
                if envelope.get("id") == request_id:
                    return envelope["answer"]
            self._next(deadline)

    def _reply(self, msg_id: str) -> dict:
        deadline = time.monotonic() + GUARD
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "hang guard: no execute_reply"
            reply = self.kc.get_shell_msg(timeout=remaining)
            if reply["parent_header"].get("msg_id") == msg_id:
                list(self._until_idle(msg_id))  # its IOPub messages too
                return reply["content"]

    def _until_idle(self, msg_id: str):
        deadline = time.monotonic() + GUARD
        while True:
            msg = self._next(deadline)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            yield msg
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return

    def _next(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "hang guard: the kernel did not answer"
        msg = self.kc.get_iopub_msg(timeout=remaining)
        content = msg["content"]
        if msg["msg_type"] == "comm_open" and "conversation_id" in content["data"].get("state", {}):
            self.comm_id = content["comm_id"]
        elif msg["msg_type"] == "comm_msg" and content.get("comm_id") == self.comm_id:
            envelope = content["data"].get("content")
            if isinstance(envelope, dict) and envelope.get(ENVELOPE) == "variables":
                self.envelopes.append(envelope)
        return msg


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    base = tmp_path_factory.mktemp("kernel")
    env = isolated_env(base, STREAMCHAT_SERVER_URL=None, STREAMCHAT_TOKEN=None, JPY_PARENT_PID=None)
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env, cwd=str(base))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=GUARD)
        k = Kernel(client)
        k.run(
            "import pandas as pd\n"
            "df = pd.DataFrame({'year': [2021, 2022, 2023], 'city': ['Oslo', 'Lima', 'Pune'],"
            " 'rain': [1.5, 2.25, 3.0]})\n"
            "count = 42\n"
            "_private = 1\n"
            "def helper(): pass\n"
        )
        yield k
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_a_dataframe_is_summarised_with_its_shape_dtypes_and_first_rows(kernel):
    # As in a kernel without the package: the code sent must be all it needs.
    kernel.run("import sys\nsys.modules['jupyter_streamchat'] = None")
    try:
        before = kernel.run("print(sorted(k for k in globals() if not k.startswith('_')))")
        count = kernel.run("print(get_ipython().execution_count)")
        item = kernel.ask({"op": "describe", "name": "df"})["item"]
        assert kernel.run("print(sorted(k for k in globals() if not k.startswith('_')))") == before
        # Silent: the user's execution count did not move (the print cells moved it by one).
        assert int(kernel.run("print(get_ipython().execution_count)")) == int(count) + 2
    finally:
        kernel.run("del sys.modules['jupyter_streamchat']")
    assert item["kind"] == "variable" and item["label"] == "df"
    text = item["text"]
    assert text.startswith("pandas.DataFrame, shape (3, 3)\n"), text
    text_dtype = str(pd.DataFrame({"c": ["x"]}).dtypes["c"])  # "object", or "str" in pandas 3
    assert f"  year: int64\n  city: {text_dtype}\n  rain: float64\n" in text
    assert "first 5 rows:" in text
    assert "Oslo" in text and "2.25" in text  # the head's values


def test_the_listing_names_the_users_variables_only(kernel):
    listed = kernel.ask({"op": "list", "query": ""})["variables"]
    names = [v["name"] for v in listed]
    assert "df" in names and "count" in names
    # Not modules, functions, private names or IPython's own.
    assert not {"pd", "helper", "_private", "In", "Out", "get_ipython"} & set(names)
    df = next(v for v in listed if v["name"] == "df")
    assert df == {"name": "df", "type": "pandas.DataFrame", "brief": "pandas.DataFrame (3, 3)"}
    assert next(v for v in listed if v["name"] == "count")["brief"] == "int 42"
    # Filtered by what is typed after @.
    assert [v["name"] for v in kernel.ask({"op": "list", "query": "DF"})["variables"]] == ["df"]
    assert kernel.ask({"op": "describe", "name": "nothing_here"}) == {"item": None}


def test_large_objects_are_capped(kernel):
    kernel.run(
        "big_list = list(range(1_000_000))\n"
        "big_text = 'x' * 10_000_000\n"
        "wide = pd.DataFrame({f'c{i}': [i] for i in range(300)})\n"
        "import numpy as np\n"
        "arr = np.zeros((2000, 3000))\n"
    )
    for name in ("big_list", "big_text", "wide", "arr"):
        text = kernel.ask({"op": "describe", "name": name})["item"]["text"]
        assert len(text) <= variables.MAX_CHARS, (name, len(text))
    text = kernel.ask({"op": "describe", "name": "big_text"})["item"]["text"]
    assert text.startswith("str, 10000000 characters:\nxxx") and text.endswith(variables.CUT)
    wide = kernel.ask({"op": "describe", "name": "wide"})["item"]["text"]
    assert "shape (1, 300)" in wide and "... and 250 more columns" in wide
    arr = kernel.ask({"op": "describe", "name": "arr"})["item"]["text"]
    assert arr.startswith("numpy.ndarray, shape (2000, 3000), dtype float64\n") and "..." in arr
    listed = {
        v["name"]: v["brief"] for v in kernel.ask({"op": "list", "query": "big"})["variables"]
    }
    assert listed == {"big_list": "list, 1000000 items", "big_text": "str, 10000000 characters"}


def test_hostile_values_are_bounded(kernel):
    kernel.run(
        "import time\n"
        "class Raises:\n"
        "    def __repr__(self): raise RuntimeError('no repr for you')\n"
        "    def __len__(self): raise RuntimeError('no len either')\n"
        "class Huge:\n"
        "    def __repr__(self): return 'y' * 50_000_000\n"
        "class Slow:\n"
        "    def __repr__(self):\n"
        "        time.sleep(60)\n"
        "        return 'slow'\n"
        "raises, huge, slow = Raises(), Huge(), Slow()\n"
        "in_a_list = [Raises(), Huge()]\n"
    )
    text = kernel.ask({"op": "describe", "name": "raises"})["item"]["text"]
    assert text == "Raises:\n(its repr failed) (RuntimeError)"
    text = kernel.ask({"op": "describe", "name": "huge"})["item"]["text"]
    assert text.startswith("Huge:\nyyy") and text.endswith(variables.CUT)
    assert len(text) <= variables.MAX_CHARS
    started = time.monotonic()
    text = kernel.ask({"op": "describe", "name": "slow"})["item"]["text"]
    assert text == f"Slow:\n(its repr failed) (it took longer than {variables.TIME_LIMIT:g} s)"
    assert time.monotonic() - started < 30  # a hang guard: the repr alone would take 60 s
    text = kernel.ask({"op": "describe", "name": "in_a_list"})["item"]["text"]
    assert text.startswith("list, 2 items:\n") and len(text) <= variables.MAX_CHARS
    # The listing runs none of their code but len() (guarded), and names them all.
    listed = {v["name"]: v["brief"] for v in kernel.ask({"op": "list", "query": ""})["variables"]}
    assert listed["raises"] == "Raises" and listed["slow"] == "Slow"
    # The kernel is fine afterwards, and no timer of ours is left.
    assert (
        kernel.run("import signal; print(signal.getitimer(signal.ITIMER_REAL))") == "(0.0, 0.0)\n"
    )


def test_the_widget_answers_over_its_comm(kernel):
    kernel.run(
        "from jupyter_streamchat import ChatWidget\n"
        'w = ChatWidget(agent="echo", conversation_id="c-vars")\n'
        "w"
    )
    assert kernel.comm_id, "the widget opened no comm"
    listed = kernel.ask_comm({"op": "list", "query": "df"})["variables"]
    assert [v["name"] for v in listed] == ["df"]
    item = kernel.ask_comm({"op": "describe", "name": "df"})["item"]
    assert item["text"].startswith("pandas.DataFrame, shape (3, 3)\n")
    assert "  rain: float64" in item["text"]
    assert kernel.ask_comm({"op": "nonsense"}) == {"error": "unknown request 'nonsense'"}
    # Asking about variables is not a view speaking through the kernel.
    assert kernel.run("print(getattr(w, '_view_attached', False))") == "False\n"
