"""Driving the chat widget in a page through its DOM test hooks (see DESIGN.md)."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

import jlab

GUARD_MS = 30_000  # hang guard for anything the chat does; never a performance claim

ROOT = '[data-testid="streamchat"]'
INPUT = '[data-testid="streamchat-input"]'
SEND = '[data-testid="streamchat-send"]'
STOP = '[data-testid="streamchat-stop"]'
TYPING = '[data-testid="streamchat-typing"]'
MESSAGE = '[data-testid="streamchat-message"]'
NOTICE = '[data-testid="streamchat-notice"]'
AGENT = '[data-testid="streamchat-agent"]'

WIDGET_CELL = 'from jupyter_streamchat import ChatWidget\nw = ChatWidget(agent="{agent}"{extra})\nw'


def words(n: int, prefix: str = "w") -> str:
    """Numbered words: any gap or duplicate in a streamed copy shows in an exact comparison."""
    return " ".join(f"{prefix}{i:04d}" for i in range(n))


def open_chat(
    page: Page, lab, name: str, agent: str = "echo", cells=(), via=None, conversation_id: str = ""
) -> Locator:
    """A notebook whose first cell shows a ChatWidget, opened and run; returns the chat root."""
    extra = f', conversation_id="{conversation_id}"' if conversation_id else ""
    lab.write_notebook(name, [WIDGET_CELL.format(agent=agent, extra=extra), *cells])
    jlab.open_notebook(page, lab, name, via=via)
    jlab.execute_command(page, "notebook:run-cell")
    root = page.locator(ROOT).first
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    return root


def send(root: Locator, text: str) -> None:
    box = root.locator(INPUT)
    box.fill(text)
    box.press("Enter")


def replies(root: Locator) -> Locator:
    return root.locator(f'{MESSAGE}[data-role="assistant"]')


def last_reply(root: Locator) -> Locator:
    return replies(root).last


def wait_status(message: Locator, status: str, timeout: float = GUARD_MS) -> None:
    expect(message).to_have_attribute("data-status", status, timeout=timeout)


def body_text(message: Locator) -> str:
    """What the message body shows, whitespace collapsed (markdown joins lines with spaces)."""
    raw = message.locator(".streamchat-body").evaluate("el => el.textContent")
    return " ".join(raw.split())


def wait_text_longer(message: Locator, chars: int, timeout: float = GUARD_MS) -> None:
    message.page.wait_for_function(
        "([el, n]) => el.querySelector('.streamchat-body').textContent.length > n",
        arg=[message.element_handle(), chars],
        timeout=timeout,
        polling=50,
    )


def run_code(page: Page, code: str) -> Locator:
    """Append a code cell with ``code`` to the open notebook, run it, return its output area
    once the run has ended."""
    index = page.evaluate(
        """async (code) => {
             const app = window.jupyterapp;
             const notebook = app.shell.currentWidget.content;
             notebook.activeCellIndex = notebook.widgets.length - 1;
             await app.commands.execute('notebook:insert-cell-below');
             notebook.activeCell.model.sharedModel.setSource(code);
             await app.commands.execute('notebook:run-cell');
             return notebook.widgets.length - 1;
           }""",
        code,
    )
    cell = jlab.cell(page, index)
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(
        re.compile(r"\[\d+\]:"), timeout=GUARD_MS
    )
    return cell.locator(".jp-OutputArea")


def stored(lab, conversation_id: str) -> list:
    """The conversation as the server stored it (REST)."""
    return lab.api("GET", f"streamchat/api/conversations/{conversation_id}")["messages"]


# The chat of a notebook output as the JupyterLab extension draws it from the saved output
# (application/vnd.jupyter.streamchat+json), not as the widget view does.
OUTPUT_CHAT = f".jp-streamchat-Output {ROOT}"


def output_chat(page: Page, index: int = 0) -> Locator:
    """The chat drawn by the extension's renderer in the output of cell ``index``."""
    return jlab.cell(page, index).locator(OUTPUT_CHAT)


def quick_chat(lab, conversation_id: str, text: str, agent: str = "echo") -> dict:
    """One exchange in ``conversation_id`` from a plain Python process (no kernel, no page),
    through the public ``connect`` API; returns the stored reply."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from jupyter_streamchat import connect\n"
        "with connect(sys.argv[1]) as chat:\n"
        "    reply = chat.send(sys.argv[2], sys.argv[3]).wait(30)\n"
        "print(reply.status)\n"
    )
    env = {**os.environ, "STREAMCHAT_SERVER_URL": lab.url(), "STREAMCHAT_TOKEN": lab.token}
    done = subprocess.run(
        [sys.executable, "-c", code, conversation_id, text, agent],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "complete", (done.stdout, done.stderr)
    return stored(lab, conversation_id)[-1]
