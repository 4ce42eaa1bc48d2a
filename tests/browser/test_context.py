"""The notebook as context, in a real JupyterLab: `@` in the Chat panel's input attaches the open
notebook's cells, its error outputs and its kernel's variables as chips
(`[data-testid=streamchat-context]` with `data-kind`), sent as the message's `context`, stored
with it, and shown on the user's message, after a reload too. The ``tools`` test agent's word
``context`` echoes what it received (``kind: label = text``), so a reply shows what agents get.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

import jlab
from chat import AGENT, GUARD_MS, INPUT, MESSAGE, ROOT, body_text, last_reply, stored, wait_status

pytestmark = pytest.mark.browser

SIDEBAR = '[data-testid="streamchat-sidebar"]'
SIDEBAR_TAB = '[data-id="streamchat-sidebar"]'
CHIP = '[data-testid="streamchat-context"]'
TRAY = '[data-testid="streamchat-context-tray"]'
PICKER = '[data-testid="streamchat-context-picker"]'
OPTION = '[data-testid="streamchat-context-option"]'
ASK = '[data-testid="streamchat-ask-error"]'


@pytest.fixture(scope="module")
def lab_env():
    # The test agent plug-ins, the "tools" agent among them, as installed packages.
    return {"PYTHONPATH": str(Path(__file__).parent.parent / "plugins")}


def open_notebook(page: Page, lab, name: str, cells: list) -> None:
    lab.write_notebook(name, cells)
    jlab.open_notebook(page, lab, name)


def run_all(page: Page, cells: int) -> None:
    jlab.run_all(page)
    for index in range(cells):
        expect(jlab.cell(page, index).locator(".jp-InputArea-prompt")).to_have_text(
            re.compile(r"\[\d+\]:"), timeout=GUARD_MS
        )


def panel_chat(page: Page):
    """Open the Chat panel on a new conversation with the ``tools`` agent; its chat root."""
    page.locator(SIDEBAR_TAB).click()
    panel = page.locator(SIDEBAR)
    expect(panel).to_be_visible(timeout=GUARD_MS)
    panel.locator('[data-testid="streamchat-new"]').click()
    root = panel.locator(ROOT)
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    root.locator(AGENT).select_option("tools")
    return root


def conversation_id(page: Page) -> str:
    return page.evaluate(
        "() => document.querySelector('#streamchat-sidebar').dataset.openConversation"
    )


def user_message(root):
    return root.locator(f'{MESSAGE}[data-role="user"]').last


def test_at_attaches_a_cell_the_agent_gets_it_and_it_is_stored(page, lab):
    name = "context-cells.ipynb"
    open_notebook(page, lab, name, ["alpha = 'first cell text'", "beta = 2"])
    root = panel_chat(page)
    box = root.locator(INPUT)
    box.click()
    box.press_sequentially("Look at @cel")
    picker = root.locator(PICKER)
    expect(picker).to_be_visible()
    cells = picker.locator(f'{OPTION}[data-kind="cell"]')
    expect(cells).to_have_count(2, timeout=GUARD_MS)
    expect(cells.nth(0)).to_contain_text("cell 1")
    expect(cells.nth(0)).to_contain_text("alpha = 'first cell text'")
    expect(cells.nth(1)).to_contain_text("beta = 2")

    # Keyboard: down to the first cell's line, Enter attaches it (and does not send).
    rows = picker.locator(OPTION)
    kinds = rows.evaluate_all("els => els.map(e => e.dataset.kind)")
    active = rows.evaluate_all(
        "els => els.findIndex(e => e.getAttribute('aria-selected') === 'true')"
    )
    target = kinds.index("cell")
    for _ in range((target - active) % len(kinds)):
        box.press("ArrowDown")
    expect(rows.nth(target)).to_have_attribute("aria-selected", "true")
    box.press("Enter")
    expect(picker).to_be_hidden()
    chips = root.locator(f"{TRAY} {CHIP}")
    expect(chips).to_have_count(1)
    expect(chips.first).to_have_attribute("data-kind", "cell")
    expect(chips.first).to_have_text("cell 1")
    expect(box).to_have_value("Look at ")  # the "@cel" typed went
    expect(root.locator(MESSAGE)).to_have_count(0)

    # Escape closes the picker and keeps what was typed.
    box.press_sequentially("@be")
    expect(picker).to_be_visible()
    box.press("Escape")
    expect(picker).to_be_hidden()
    expect(box).to_have_value("Look at @be")

    box.fill("what is in this context")
    box.press("Enter")
    reply = last_reply(root)
    wait_status(reply, "complete")
    assert body_text(reply) == "cell: cell 1 = alpha = 'first cell text' Done."
    chip = user_message(root).locator(CHIP)
    expect(chip).to_have_count(1)
    expect(chip).to_have_attribute("data-kind", "cell")
    expect(root.locator(f"{TRAY} {CHIP}")).to_have_count(0)  # the input's chips went with it
    # Not part of the message's text.
    expect(user_message(root).locator('[data-testid="streamchat-message-text"]')).to_have_text(
        "what is in this context"
    )

    conversation = conversation_id(page)
    user = stored(lab, conversation)[0]
    assert user["context"] == [
        {
            "kind": "cell",
            "label": "cell 1",
            "text": "alpha = 'first cell text'",
            "path": name,
            "cell": 0,
            "language": "python",
        }
    ]

    # Loaded again from the store (HISTORY): the chip is still on the message.
    page.reload()
    jlab.wait_notebook_ready(page, name)
    jlab.execute_command(page, "streamchat:open-panel")  # the layout may have it open already
    panel = page.locator(SIDEBAR)
    expect(panel).to_be_visible(timeout=GUARD_MS)
    if panel.get_attribute("data-view") == "chat":
        panel.locator('[data-testid="streamchat-back"]').click()
    entry = panel.locator(
        f'[data-testid="streamchat-conversation"][data-conversation-id="{conversation}"]'
    )
    entry.click(timeout=GUARD_MS)
    root = page.locator(f"{SIDEBAR} {ROOT}")
    expect(root.locator(MESSAGE)).to_have_count(2, timeout=GUARD_MS)
    chip = user_message(root).locator(CHIP)
    expect(chip).to_have_count(1)
    expect(chip).to_have_attribute("data-kind", "cell")
    expect(chip).to_have_text("cell 1")
    # Its button shows the text the agent got.
    chip.locator("button").first.click()
    expect(user_message(root).locator('[data-testid="streamchat-context-preview"]')).to_have_text(
        "alpha = 'first cell text'"
    )


def test_ask_about_an_error_opens_the_panel_with_the_error_attached(page, lab):
    name = "context-error.ipynb"
    open_notebook(page, lab, name, ["numerator = 1\nnumerator / 0"])
    jlab.run_cell(page, 0)
    output = jlab.cell(page, 0).locator(".jp-OutputArea")
    expect(output).to_contain_text("ZeroDivisionError", timeout=GUARD_MS)
    ask = output.locator(ASK)
    expect(ask).to_be_visible()
    # The output's text is still the traceback alone (the label is drawn by CSS).
    assert "Ask about" not in output.evaluate("el => el.textContent")

    # Also in the output's context menu.
    output.locator(".jp-OutputArea-output").click(button="right")
    item = page.locator(".lm-Menu-item", has_text="Ask about This Error")
    expect(item).to_be_visible()
    page.keyboard.press("Escape")

    expect(page.locator(SIDEBAR)).to_be_hidden()
    ask.click()
    panel = page.locator(SIDEBAR)
    expect(panel).to_be_visible(timeout=GUARD_MS)
    root = panel.locator(ROOT)
    chips = root.locator(f"{TRAY} {CHIP}")
    expect(chips).to_have_count(2)
    expect(chips.nth(0)).to_have_attribute("data-kind", "error")
    expect(chips.nth(0)).to_have_text("error in cell 1")
    assert "ZeroDivisionError: division by zero" in chips.nth(0).get_attribute("title")
    expect(chips.nth(1)).to_have_attribute("data-kind", "cell")
    expect(root.locator(INPUT)).to_be_focused()

    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    root.locator(AGENT).select_option("tools")
    box = root.locator(INPUT)
    box.fill("why this context")
    box.press("Enter")
    reply = last_reply(root)
    wait_status(reply, "complete")
    text = body_text(reply)
    assert text.startswith("error: error in cell 1 = ZeroDivisionError: division by zero"), text
    assert "numerator / 0" in text  # the traceback, and the cell's source
    assert text.endswith("cell: cell 1 = numerator = 1 numerator / 0 Done."), text
    kinds = [c["kind"] for c in stored(lab, conversation_id(page))[0]["context"]]
    assert kinds == ["error", "cell"]
    expect(user_message(root).locator(CHIP)).to_have_count(2)


def test_a_dataframe_from_the_live_kernel_attaches_with_shape_and_dtypes(page, lab):
    name = "context-variables.ipynb"
    open_notebook(
        page,
        lab,
        name,
        ["import pandas as pd\nframe = pd.DataFrame({'year': [2021, 2022], 'rain': [1.5, 2.25]})"],
    )
    run_all(page, 1)
    jlab.wait_notebook_ready(page, name)  # idle again: variables are not asked of a busy kernel
    root = panel_chat(page)
    box = root.locator(INPUT)
    box.click()
    box.press_sequentially("@fra")
    option = root.locator(f'{PICKER} {OPTION}[data-kind="variable"]')
    expect(option).to_have_count(1, timeout=GUARD_MS)
    expect(option).to_contain_text("frame")
    expect(option).to_contain_text("pandas.DataFrame (2, 2)")
    option.click()
    chip = root.locator(f'{TRAY} {CHIP}[data-kind="variable"]')
    expect(chip).to_have_text("frame", timeout=GUARD_MS)
    chip.locator("button").first.click()
    preview = root.locator(f'{TRAY} [data-testid="streamchat-context-preview"]')
    expect(preview).to_contain_text("pandas.DataFrame, shape (2, 2)")
    expect(preview).to_contain_text("year: int64")
    expect(preview).to_contain_text("rain: float64")
    assert "shape (2, 2)" in chip.get_attribute("title")

    # The silent request left no trace in the notebook: the cell's count is still 1.
    expect(jlab.cell(page, 0).locator(".jp-InputArea-prompt")).to_have_text("[1]:")

    box.fill("context")
    box.press("Enter")
    reply = last_reply(root)
    wait_status(reply, "complete")
    text = body_text(reply)
    assert text.startswith("variable: frame = pandas.DataFrame, shape (2, 2) dtypes:"), text
    assert "rain: float64" in text and "2.25" in text
