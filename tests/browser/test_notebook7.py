"""The chat in Jupyter Notebook 7 (``jupyter notebook``): the same extension as in JupyterLab,
in Notebook's own shell. A notebook page's ChatWidget cell and the Chat side panel both stream.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

import jlab
from chat import (
    AGENT,
    GUARD_MS,
    WIDGET_CELL,
    body_text,
    last_reply,
    output_chat,
    send,
    stored,
    wait_status,
    words,
)
from labserver import LabServer

SIDEBAR = '[data-testid="streamchat-sidebar"]'


@pytest.fixture(scope="module")
def lab(lab_args, lab_env, tmp_path_factory):
    """Notebook 7 in place of JupyterLab, for every test of this module."""
    with LabServer(
        lab_args, env=lab_env, base_dir=tmp_path_factory.mktemp("nb7"), app="notebook"
    ) as server:
        yield server


def test_notebook_page_cell_streams_a_reply(page, lab):
    name = "nb7-cell.ipynb"
    lab.write_notebook(
        name, [WIDGET_CELL.format(agent="echo", extra=', conversation_id="c-nb7-cell"')]
    )
    jlab.open_in_notebook7(page, lab, name)
    jlab.execute_command(page, "notebook:run-cell")
    chat = output_chat(page, 0)
    expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(chat).to_have_count(1)

    text = words(30)
    send(chat, text)
    reply = last_reply(chat)
    wait_status(reply, "complete")
    assert body_text(reply) == text
    assert stored(lab, "c-nb7-cell")[-1]["text"] == text


def test_side_panel_starts_a_chat(page, lab):
    name = "nb7-panel.ipynb"
    lab.write_notebook(name, ["1 + 1"])
    jlab.open_in_notebook7(page, lab, name)
    jlab.execute_command(page, "streamchat:open-panel")
    panel = page.locator(SIDEBAR)
    expect(panel).to_be_visible(timeout=GUARD_MS)

    panel.locator('[data-testid="streamchat-new"]').click()
    chat = panel.locator('[data-testid="streamchat"]')
    expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    chat.locator(AGENT).select_option("echo")
    text = words(30, prefix="p")
    send(chat, text)
    reply = last_reply(chat)
    wait_status(reply, "complete")
    assert body_text(reply) == text
    conversation = page.evaluate(
        "() => document.querySelector('#streamchat-sidebar').dataset.openConversation"
    )
    assert conversation
    assert stored(lab, conversation)[-1]["text"] == text
