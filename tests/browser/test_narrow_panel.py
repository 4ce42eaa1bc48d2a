"""The chat at JupyterLab's default side-panel width (250 px) and in a wide main-area tab, in
Chromium against a real ``jupyter lab``: a placeholder that fits its input, tables and code
that scroll sideways instead of squeezing, a new conversation that says what to do, a tab that
the chat fills without a strip of another shade, and search snippets shown as plain text with
the match marked. The echo agent (it repeats the user's text) stands in for an agent whose
Markdown we choose.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

import jlab
from chat import AGENT, GUARD_MS, INPUT, ROOT, last_reply, quick_chat, wait_status

pytestmark = pytest.mark.browser

SIDEBAR = '[data-testid="streamchat-sidebar"]'
SIDEBAR_TAB = '[data-id="streamchat-sidebar"]'
ENTRY = '[data-testid="streamchat-conversation"]'
EMPTY_CHAT = '[data-testid="streamchat-empty-chat"]'
DEFAULT_SIDEBAR_PX = 250  # JupyterLab's --jp-sidebar-min-width, what a new user gets

TABLE = "\n".join(
    [
        "Agents compared:",
        "",
        "| Agent name | Needs a network | Good for what | Where it runs |",
        "|---|---|---|---|",
        "| echo agent | not at all | automated tests | the Jupyter server |",
        "| demo agent | not at all | trying it out | the Jupyter server |",
        "| openai agent | yes it does | real work here | a model server |",
        "",
        "```python",
        "result = compute_something_long(first_argument, second_argument, third_argument)",
        "```",
        "",
        "done",
    ]
)


@pytest.fixture(scope="module")
def lab_args() -> list:
    return ["--EchoAgent.delay=0.005"]


def open_panel(page: Page, lab):
    """JupyterLab as a new user has it, the Chat panel open at its default width."""
    jlab.open_lab(page, lab)
    page.locator(SIDEBAR_TAB).click()
    panel = page.locator(SIDEBAR)
    expect(panel).to_be_visible(timeout=GUARD_MS)
    width = panel.evaluate("el => el.getBoundingClientRect().width")
    assert abs(width - DEFAULT_SIDEBAR_PX) <= 2, width
    return panel


def new_chat(panel):
    panel.locator('[data-testid="streamchat-new"]').click()
    root = panel.locator(ROOT)
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    root.locator(AGENT).select_option("echo")
    return root


def fits_one_line(locator, text_js: str) -> dict:
    """How wide ``text_js`` (JS, of ``el``) is in the element's own font, and the room the
    element's content box has for it."""
    return locator.evaluate(
        """(el) => {
             const cs = getComputedStyle(el);
             const ctx = document.createElement('canvas').getContext('2d');
             ctx.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
             const text = (el => %s)(el);
             return {
               text,
               needed: ctx.measureText(text).width,
               room: el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight),
             };
           }"""
        % text_js
    )


def test_new_chat_at_250px_says_what_to_do_and_fits(page, lab):
    panel = open_panel(page, lab)
    root = new_chat(panel)
    # The input's placeholder is one line of it, not clipped.
    box = root.locator(INPUT)
    measured = fits_one_line(box, "el.placeholder")
    assert measured["text"] and measured["needed"] <= measured["room"], measured
    assert box.evaluate("el => el.scrollWidth <= el.clientWidth")
    # The conversation's title in the panel's header is whole, not "New conversat…".
    title = panel.locator('[data-testid="streamchat-chat-title"]')
    expect(title).to_have_text("New chat")
    assert title.evaluate("el => el.scrollWidth <= el.clientWidth"), title.text_content()
    # Where messages will be, the chat says what to do.
    empty = root.locator(EMPTY_CHAT)
    expect(empty).to_be_visible(timeout=GUARD_MS)
    expect(empty).to_contain_text("Ask anything")
    expect(empty).to_contain_text("press Enter")
    note = empty.evaluate("el => el.getBoundingClientRect().toJSON()")
    picker = root.locator(AGENT).evaluate("el => el.getBoundingClientRect().toJSON()")
    inp = box.evaluate("el => el.getBoundingClientRect().toJSON()")
    assert picker["bottom"] <= note["top"] and note["bottom"] <= inp["top"], (picker, note, inp)
    # It stands in the room the messages will take: no blank stretch above or below it.
    assert inp["top"] - picker["bottom"] - note["height"] < 40, (picker, note, inp)
    # The first message takes its place.
    box.fill("hello there")
    box.press("Enter")
    expect(empty).to_be_hidden(timeout=GUARD_MS)
    wait_status(last_reply(root), "complete")
    expect(empty).to_be_hidden()


def test_tables_and_code_scroll_sideways_at_250px(page, lab):
    panel = open_panel(page, lab)
    root = new_chat(panel)
    box = root.locator(INPUT)
    box.fill(TABLE)
    box.press("Enter")
    reply = last_reply(root)
    wait_status(reply, "complete")
    table_box = reply.locator(".streamchat-table")
    expect(table_box).to_be_visible()
    assert table_box.evaluate("el => getComputedStyle(el).overflowX") == "auto"
    assert table_box.evaluate("el => el.scrollWidth > el.clientWidth + 50")
    # Each cell keeps its few words on one line rather than one word per line.
    heights = table_box.locator("td, th").evaluate_all(
        """cells => cells.map(td => {
             const cs = getComputedStyle(td);
             const line = parseFloat(cs.lineHeight) || parseFloat(cs.fontSize) * 1.5;
             const inner = td.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
             return [td.textContent, inner / line];
           })"""
    )
    assert len(heights) == 16
    assert all(lines < 1.5 for _, lines in heights), heights
    # The table scrolls inside the reply: its end comes into view, the reply keeps its width.
    table_box.evaluate("el => { el.scrollLeft = el.scrollWidth; }")
    assert table_box.evaluate("el => el.scrollLeft > 0")
    assert reply.evaluate("el => el.scrollWidth <= el.clientWidth + 1")
    # Code too: a long line scrolls, it is not wrapped.
    pre = reply.locator("pre").first
    assert pre.evaluate("el => getComputedStyle(el).overflowX") == "auto"
    assert pre.evaluate("el => el.scrollWidth > el.clientWidth + 50")
    assert pre.evaluate("el => getComputedStyle(el).whiteSpace") == "pre"


def test_chat_in_a_tab_fills_the_tab_on_one_background(page, lab):
    page.set_viewport_size({"width": 1600, "height": 900})
    jlab.open_lab(page, lab)
    jlab.execute_command(page, "streamchat:new-chat-in-tab")
    tab = page.locator(".jp-streamchat-Tab:visible").first
    root = tab.locator(ROOT)
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    geometry = tab.evaluate(
        """(tab) => {
             const panel = tab.querySelector('.jp-streamchat-ChatPanel');
             const root = panel.querySelector('[data-testid="streamchat"]');
             const rect = el => el.getBoundingClientRect().toJSON();
             const input = root.querySelector('[data-testid="streamchat-input"]');
             return {
               panel: rect(panel), root: rect(root), input: rect(input),
               backgrounds: [tab, panel, root].map(el => getComputedStyle(el).backgroundColor),
               borders: ['Left', 'Right', 'Top', 'Bottom'].map(
                 side => getComputedStyle(root)[`border${side}Width`]),
             };
           }"""
    )
    panel, chat = geometry["panel"], geometry["root"]
    assert panel["width"] > 1100, panel  # a wide tab: the case where a column shows
    for side in ("left", "right", "top", "bottom"):
        assert abs(panel[side] - chat[side]) <= 1, (side, panel, chat)
    assert geometry["borders"] == ["0px"] * 4, geometry
    # No region of another shade: what is not the chat's background is transparent.
    tab_bg, panel_bg, root_bg = geometry["backgrounds"]
    assert root_bg != "rgba(0, 0, 0, 0)"
    assert panel_bg in (root_bg, "rgba(0, 0, 0, 0)"), geometry
    # The content is a centred column of readable width.
    inp = geometry["input"]
    middle = (chat["left"] + chat["right"]) / 2
    assert abs((inp["left"] + inp["right"]) / 2 - middle) < 60, (inp, chat)
    assert inp["width"] <= 900, inp


def test_search_snippets_are_plain_text_with_the_match_marked(page, lab):
    text = (
        "Here is how to load it:\n\n```python\nimport pandas as pd\n"
        "df = pd.read_csv('data.csv')\n```\n\nThen **look** at [the docs](https://x.org)."
    )
    quick_chat(lab, "narrow-search", text)
    panel = open_panel(page, lab)
    panel.locator('[data-testid="streamchat-search"]').fill("IMPORT pa")
    item = panel.locator(f'{ENTRY}[data-conversation-id="narrow-search"]')
    expect(item).to_be_visible(timeout=GUARD_MS)
    snippet = item.locator('[data-testid="streamchat-snippet"]')
    expect(snippet).to_contain_text("import pandas as pd df = pd.read_csv('data.csv')")
    shown = snippet.text_content()
    for syntax in ("```", "**", "](", "[the docs"):
        assert syntax not in shown, (syntax, shown)
    marks = snippet.locator("mark")
    expect(marks).to_have_count(1)
    expect(marks).to_have_text("import pa")  # as the message has it, whatever the query's case
    # Text nodes and <mark> only: the snippet is someone's message, never HTML.
    assert snippet.evaluate(
        "el => Array.from(el.childNodes).every(n => n.nodeType === 3 || n.nodeName === 'MARK')"
    )
