"""Take the README's pictures again, from a real JupyterLab and the offline demo agent.

    python docs/images/capture.py            # writes chat-finished.png and sidebar.png here

It runs ``jupyter lab`` with its state kept apart (the tests' LabServer), opens a notebook whose
first cell shows a ``ChatWidget(agent="demo")``, asks the demo agent a question, and takes:

- ``chat-finished.png``: the cell's chat once the reply has ended;
- ``sidebar.png``: the whole page at JupyterLab's default size, the Chat panel open at its
  default width on that conversation, beside the notebook.

Chromium is Debian's (``/usr/bin/chromium``) or ``$STREAMCHAT_CHROMIUM``, as in the tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "browser")]

from playwright.sync_api import expect, sync_playwright  # noqa: E402

import jlab  # noqa: E402
from chat import MESSAGE, ROOT as CHAT, send  # noqa: E402
from labserver import LabServer  # noqa: E402

# As the browser tests launch it (tests/browser/conftest.py).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

GUARD_MS = 60_000
QUESTION = "How do I summarise a list of numbers?"
CELL = 'from jupyter_streamchat import ChatWidget\nChatWidget(agent="demo")'


def show_start(chat) -> None:
    """Scroll the chat's messages to the question, so the picture shows how the reply begins."""
    chat.locator('[role="log"]').evaluate("log => { log.scrollTop = 0; }")
    chat.page.wait_for_timeout(300)  # the scroll is drawn


def capture() -> None:
    executable = os.environ.get("STREAMCHAT_CHROMIUM") or "/usr/bin/chromium"
    with (
        LabServer(["--DemoAgent.delay=0.005"], disabled_plugins=()) as lab,
        sync_playwright() as playwright,
    ):
        lab.write_notebook("analysis.ipynb", [CELL, "numbers = [3, 1, 4, 1, 5, 9, 2, 6]"])
        browser = playwright.chromium.launch(
            headless=True, executable_path=executable, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1500, "height": 800})
        jlab.open_notebook(page, lab, "analysis.ipynb")
        jlab.execute_command(page, "notebook:run-cell")
        chat = page.locator(CHAT).first
        expect(chat).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
        send(chat, QUESTION)
        reply = chat.locator(f'{MESSAGE}[data-role="assistant"]').last
        expect(reply).to_have_attribute("data-status", "complete", timeout=GUARD_MS)
        page.mouse.move(0, 0)  # no hover highlight in the picture
        show_start(chat)
        chat.screenshot(path=str(HERE / "chat-finished.png"))

        page.locator('[data-id="streamchat-sidebar"]').click()
        entry = page.locator('[data-testid="streamchat-conversation"]').first
        expect(entry).to_be_visible(timeout=GUARD_MS)
        entry.click()
        panel = page.locator(f'[data-testid="streamchat-sidebar"] {CHAT}')
        expect(panel.locator(f'{MESSAGE}[data-role="assistant"]').last).to_have_attribute(
            "data-status", "complete", timeout=GUARD_MS
        )
        page.mouse.move(0, 0)
        show_start(panel)
        page.screenshot(path=str(HERE / "sidebar.png"))
        browser.close()


if __name__ == "__main__":
    capture()
