"""A notebook's chat drawn from its saved output, in a real JupyterLab.

``ChatWidget`` leaves ``application/vnd.jupyter.streamchat+json`` (conversation, agent and the
key of its widget model) beside the widget view. The extension's renderer draws the chat from
that alone, so the cell shows its conversation, live, whatever happened to the kernel: a
restart, a server restart, or no kernel at all. When the kernel's widget model is alive the
view binds to it, so the Python object drives the view as before.
"""

from __future__ import annotations

import nbformat
from playwright.sync_api import expect

import jlab
from chat import (
    GUARD_MS,
    MESSAGE,
    WIDGET_CELL,
    body_text,
    last_reply,
    open_chat,
    output_chat,
    quick_chat,
    replies,
    run_code,
    send,
    stored,
    wait_status,
    wait_text_longer,
    words,
)
from labserver import LabServer

OUTPUT_MIME = "application/vnd.jupyter.streamchat+json"
MODEL_NOT_FOUND = "model not found"  # what ipywidgets shows for a widget whose kernel is gone


def _user_texts(root) -> list:
    return root.locator(f'{MESSAGE}[data-role="user"]').all_inner_texts()


def _saved_chat_output(lab, path: str) -> dict:
    """The streamchat part of the first cell's saved outputs."""
    outputs = lab.read_notebook(path)["cells"][0]["outputs"]
    bundles = [
        output["data"][OUTPUT_MIME] for output in outputs if OUTPUT_MIME in output.get("data", {})
    ]
    assert len(bundles) == 1, outputs
    return bundles[0]


def _output_key_in_page(page) -> str:
    """The output key of the first cell's chat output, as the page's notebook holds it."""
    return page.evaluate(
        """(mime) => {
             const cell = window.jupyterapp.shell.currentWidget.content.widgets[0];
             const outputs = cell.model.outputs;
             for (let i = 0; i < outputs.length; i++) {
               const data = outputs.get(i).data[mime];
               if (data) return data.outputKey;
             }
             return null;
           }""",
        OUTPUT_MIME,
    )


def test_cell_chat_is_the_extensions_and_python_drives_it(page, lab):
    open_chat(page, lab, "drawn.ipynb", conversation_id="c-drawn")
    # The extension's renderer drew it (it outranks the widget view): one chat, no error.
    chat = output_chat(page, 0)
    expect(chat).to_have_count(1)
    expect(chat).to_have_attribute("data-connection", "connected")
    expect(jlab.cell(page, 0).locator(".jp-OutputArea")).not_to_contain_text(MODEL_NOT_FOUND)

    send(chat, "typed in the cell")
    wait_status(last_reply(chat), "complete")
    assert body_text(last_reply(chat)) == "typed in the cell"

    # The kernel's object is bound to this view: what it sends streams here.
    out = run_code(page, 'r = w.send("from python"); r.wait(60); print(r.status)')
    expect(out).to_contain_text("complete")
    expect(replies(chat)).to_have_count(2, timeout=GUARD_MS)
    wait_status(last_reply(chat), "complete")
    assert body_text(last_reply(chat)) == "from python"
    assert _user_texts(chat) == ["typed in the cell", "from python"]
    assert stored(lab, "c-drawn")[-1]["text"] == "from python"

    # A trait set in Python switches the view to that conversation, history and all.
    run_code(
        page,
        "from jupyter_streamchat import connect\n"
        'with connect("c-other") as other:\n'
        '    other.send("in the other one", "echo").wait(60)',
    )
    run_code(page, 'w.conversation_id = "c-other"')
    expect(chat.locator(MESSAGE)).to_have_count(2, timeout=GUARD_MS)
    assert _user_texts(chat) == ["in the other one"]
    assert body_text(last_reply(chat)) == "in the other one"


def test_kernel_restart_save_and_reload_mid_reply(page, lab):
    name = "restart-reload.ipynb"
    open_chat(page, lab, name, conversation_id="c-restart-reload")
    chat = output_chat(page, 0)
    text = words(300)  # about 15 s at 50 ms a word: long enough to outlast all that follows
    send(chat, text)
    wait_text_longer(last_reply(chat), 100)

    lab.restart_kernel(lab.kernel_for(name)["id"])
    jlab.wait_notebook_ready(page, name)
    jlab.save(page)
    assert _saved_chat_output(lab, name)["conversationId"] == "c-restart-reload"
    page.reload()  # the same URL: the notebook opens again, with its new kernel
    jlab.wait_notebook_ready(page, name)

    chat = output_chat(page, 0)
    expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(jlab.cell(page, 0).locator(".jp-OutputArea")).not_to_contain_text(MODEL_NOT_FOUND)
    expect(jlab.cell(page, 0).locator(".jp-InputArea-prompt")).to_have_text("[1]:")  # not re-run
    reply = last_reply(chat)
    expect(chat.locator(f'{MESSAGE}[data-role="user"]')).to_have_text(text)
    # The reply in flight is still streaming, and grows live to its end.
    assert reply.get_attribute("data-status") == "streaming", "the reply ended before the reload"
    wait_text_longer(reply, len(reply.locator(".streamchat-body").text_content()) + 20)
    wait_status(reply, "complete")
    assert body_text(reply) == text
    assert stored(lab, "c-restart-reload")[-1]["text"] == text


def test_server_restart_then_reopen(browser, tmp_path):
    """A reply cut by a server stop shows as interrupted, with the text the store kept, once a
    new server runs and the notebook is opened again; the cell's chat then works as ever."""
    base, name, conversation = tmp_path / "lab", "server-restart.ipynb", "c-server-restart"
    args = ["--EchoAgent.delay=0.05"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    text = words(300)
    first = LabServer(args, base_dir=base).start()
    try:
        open_chat(page, first, name, conversation_id=conversation)
        jlab.save(page)  # the output, so the notebook shows the chat after the restart
        send(output_chat(page, 0), text)
        wait_text_longer(last_reply(output_chat(page, 0)), 100)
    finally:
        first.stop()  # SIGTERM while the reply streams

    second = LabServer(args, base_dir=base, port=first.port, token=first.token).start()
    try:
        jlab.open_notebook(page, second, name)  # a fresh page load; no cell is run
        chat = output_chat(page, 0)
        expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
        reply = last_reply(chat)
        wait_status(reply, "interrupted")
        kept = stored(second, conversation)[-1]
        assert kept["status"] == "interrupted"
        assert kept["text"] and text.startswith(kept["text"].rstrip())
        assert body_text(reply) == " ".join(kept["text"].split())

        send(chat, "after the restart")
        expect(replies(chat)).to_have_count(2, timeout=GUARD_MS)
        wait_status(last_reply(chat), "complete")
        assert body_text(last_reply(chat)) == "after the restart"
        assert stored(second, conversation)[-1]["text"] == "after the restart"
        expect(jlab.cell(page, 0).locator(".jp-InputArea-prompt")).to_have_text("[1]:")
    finally:
        second.stop()
        context.close()


def test_saved_chat_opens_without_any_kernel(page, lab):
    """A colleague opens the notebook tomorrow: no kernel, yet the chat shows, live."""
    name, conversation = "tomorrow.ipynb", "c-tomorrow"
    quick_chat(lab, conversation, "written yesterday")
    widget_view = {"version_major": 2, "version_minor": 1, "model_id": "0" * 32}
    output = nbformat.v4.new_output(
        "display_data",
        data={
            "text/plain": "ChatWidget(...)",
            "application/vnd.jupyter.widget-view+json": widget_view,
            OUTPUT_MIME: {"conversationId": conversation, "agentId": "echo", "outputKey": "0" * 32},
        },
    )
    cell = nbformat.v4.new_code_cell(
        WIDGET_CELL.format(agent="echo", extra=""), execution_count=1, outputs=[output]
    )
    lab.put_notebook(
        name,
        nbformat.v4.new_notebook(
            cells=[cell],
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
        ),
    )

    jlab.open_without_kernel(page, lab, name)
    chat = output_chat(page, 0)
    expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(chat.locator(MESSAGE)).to_have_count(2, timeout=GUARD_MS)
    assert _user_texts(chat) == ["written yesterday"]
    assert body_text(last_reply(chat)) == "written yesterday"
    expect(jlab.cell(page, 0).locator(".jp-OutputArea")).not_to_contain_text(MODEL_NOT_FOUND)

    # Live: what someone else adds to the conversation now shows here.
    quick_chat(lab, conversation, "added today")
    expect(replies(chat)).to_have_count(2, timeout=GUARD_MS)
    wait_status(last_reply(chat), "complete")
    assert body_text(last_reply(chat)) == "added today"
    assert lab.kernel_for(name) is None and not any(
        session.get("path") == name for session in lab.sessions()
    )


def test_rerun_cell_binds_python_to_the_new_output(page, lab):
    open_chat(page, lab, "rerun.ipynb", conversation_id="c-rerun")
    send(output_chat(page, 0), "before the re-run")
    wait_status(last_reply(output_chat(page, 0)), "complete")
    first_key = _output_key_in_page(page)
    assert first_key

    jlab.run_cell(page, 0)  # a new ChatWidget, hence a new widget model and output
    jlab.wait_for_execution_count(page, 0, 2)
    assert _output_key_in_page(page) != first_key
    chat = output_chat(page, 0)
    expect(chat).to_have_count(1)
    expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(chat.locator(MESSAGE)).to_have_count(2, timeout=GUARD_MS)  # the history

    out = run_code(page, 'r = w.send("after the re-run"); r.wait(60); print(r.status)')
    expect(out).to_contain_text("complete")
    expect(replies(chat)).to_have_count(2, timeout=GUARD_MS)
    wait_status(last_reply(chat), "complete")
    assert body_text(last_reply(chat)) == "after the re-run"

    # Bound to the new model: a trait change reaches this view.
    run_code(page, 'w.conversation_id = "c-rerun-next"')
    expect(chat.locator(MESSAGE)).to_have_count(0, timeout=GUARD_MS)
    send(chat, "in the next one")
    wait_status(last_reply(chat), "complete")
    assert [m["text"] for m in stored(lab, "c-rerun-next")] == ["in the next one"] * 2


def test_insert_button_puts_code_in_a_new_cell_below(page, lab):
    name = "insert.ipynb"
    open_chat(page, lab, name, cells=["x = 1", "y = 2"])
    chat = output_chat(page, 0)
    code = 'for n in range(3):\n    print("n =", n)'
    send(chat, f"Try this:\n\n```python\n{code}\n```\n")
    reply = last_reply(chat)
    wait_status(reply, "complete")
    insert = reply.locator('[data-testid="streamchat-insert-code"]')
    expect(insert).to_have_count(1)
    before = jlab.cell_sources(page)

    page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 0; }")
    insert.click()
    expected = [before[0], ["code", code], *before[1:]]
    page.wait_for_function(
        "(n) => window.jupyterapp.shell.currentWidget.content.widgets.length === n",
        arg=len(expected),
        timeout=GUARD_MS,
    )
    assert jlab.cell_sources(page) == expected
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCellIndex") == 1
