"""How the chat view looks and answers the keyboard in a real JupyterLab: theme colours that read
in light and dark (measured as WCAG contrast ratios), code blocks that scroll, copy and are
highlighted, formatting that shows while a paragraph streams, keys that reach JupyterLab's own
shortcuts, and what screen readers are told. The echo agent, which repeats the user's text word
by word 50 ms apart, stands in for an agent whose output we choose."""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import pytest
from playwright.sync_api import expect

import jlab
from chat import (
    GUARD_MS,
    INPUT,
    MESSAGE,
    ROOT,
    SEND,
    STOP,
    last_reply,
    open_chat,
    run_code,
    send,
    wait_status,
    wait_text_longer,
    words,
)
from conftest import ARTIFACTS

STATIC = Path(__file__).parent.parent.parent / "jupyter_streamchat" / "widget" / "static"
MESSAGES = '[data-testid="streamchat-messages"]'
COPY_CODE = '[data-testid="streamchat-copy-code"]'
INSERT_CODE = '[data-testid="streamchat-insert-code"]'
COPY_MESSAGE = '[data-testid="streamchat-copy-message"]'
META = '[data-testid="streamchat-message-meta"]'
ANNOUNCER = '[data-testid="streamchat-announcer"]'

LIGHT = "JupyterLab Light"
DARK = "JupyterLab Dark"
HIGH_CONTRAST = "JupyterLab Dark High Contrast"

CODE = "import os\n\ndef size(path):\n    # bytes on disk\n    return os.path.getsize(path)"
SHOWCASE = "\n".join(
    [
        "Here is **a table** and some `code`:",
        "",
        "| Agent | Needs network | Good for |",
        "|---|---|---|",
        "| `echo` | no | tests |",
        "| `demo` | no | trying it out |",
        "| `openai` | yes | real work |",
        "",
        "```python",
        CODE,
        "```",
        "",
        "See [the docs](https://jupyter.org).",
    ]
)

# Colours as the page paints them: any CSS colour (rgb(), color(srgb ...) from color-mix(), ...)
# through a canvas; backgrounds composited from the page down to the element; text composited
# over its background. WCAG 2 contrast ratio of the two.
CONTRAST_JS = """
(() => {
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 1;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const rgba = css => {
    ctx.clearRect(0, 0, 1, 1);
    ctx.fillStyle = '#000';
    ctx.fillStyle = css;
    ctx.fillRect(0, 0, 1, 1);
    const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data;
    return [r, g, b, a / 255];
  };
  const over = (top, bottom) => top.slice(0, 3).map((c, i) => c * top[3] + bottom[i] * (1 - top[3]))
    .concat([1]);
  const background = el => {
    const chain = [];
    for (let n = el; n; n = n.parentElement) chain.push(getComputedStyle(n).backgroundColor);
    return chain.reverse().reduce((below, css) => over(rgba(css), below), [255, 255, 255, 1]);
  };
  const luminance = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const ratio = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  window.__contrast = {
    text: el => {
      const bg = background(el);
      const fg = over(rgba(getComputedStyle(el).color), bg);
      return { ratio: ratio(fg, bg), fg, bg };
    },
    border: el => {
      const bg = background(el);
      const line = over(rgba(getComputedStyle(el).borderBottomColor), bg);
      return { ratio: ratio(line, bg), width: parseFloat(getComputedStyle(el).borderBottomWidth) };
    },
    same: (a, b) => JSON.stringify(rgba(a)) === JSON.stringify(rgba(b)),
  };
})()
"""


@pytest.fixture(scope="module")
def lab_args():
    # Words 50 ms apart: a paragraph streams for seconds, long enough to watch it grow.
    return ["--EchoAgent.delay=0.05"]


def set_theme(page, theme: str) -> None:
    """Switch JupyterLab's theme (a user setting: it stays for later tests on this server)."""
    jlab.execute_command(page, "apputils:change-theme", {"theme": theme})
    light = "false" if "Dark" in theme else "true"
    page.wait_for_function(
        "([name, light]) => document.body.dataset.jpThemeName === name &&"
        " document.body.dataset.jpThemeLight === light",
        arg=[theme, light],
        timeout=GUARD_MS,
    )
    page.wait_for_timeout(300)  # the theme's stylesheet applies after the attributes change


def contrast(locator, kind: str = "text") -> dict:
    locator.page.evaluate(CONTRAST_JS)
    return locator.evaluate(f"el => window.__contrast.{kind}(el)")


def wait_rendered(root) -> None:
    """Wait until every reply is rendered as markdown (no text waiting as plain text)."""
    root.page.wait_for_function(
        """root => Array.from(root.querySelectorAll('[data-role="assistant"]')).every(m =>
             m.dataset.status !== 'streaming' &&
             !m.querySelector('.streamchat-raw, .streamchat-tail:not(:empty)'))""",
        arg=root.element_handle(),
        timeout=GUARD_MS,
    )


def test_text_reads_in_light_dark_and_high_contrast_themes(page, lab):
    root = open_chat(page, lab, "themes.ipynb", conversation_id="c-themes")
    send(root, SHOWCASE)
    reply = last_reply(root)
    wait_status(reply, "complete")
    wait_rendered(root)
    user = root.locator(f'{MESSAGE}[data-role="user"] .streamchat-body')
    paragraph = reply.locator(".streamchat-body p").first
    cell = reply.locator("td").first
    meta = reply.locator(META)
    ARTIFACTS.mkdir(exist_ok=True)
    for theme, shot in [
        (LIGHT, "view_light.png"),
        (DARK, "view_dark.png"),
        (HIGH_CONTRAST, "view_high_contrast.png"),
    ]:
        set_theme(page, theme)
        for what, locator in [
            ("user text", user),
            ("reply text", paragraph),
            ("table text", cell),
            ("reply header", meta),
        ]:
            measured = contrast(locator)
            assert measured["ratio"] >= 4.5, (theme, what, measured)
        # Table rules stand out from the cells they divide.
        rule = contrast(cell, "border")
        assert rule["width"] >= 1 and rule["ratio"] >= (1.5 if theme == LIGHT else 2.0), (
            theme,
            rule,
        )
        root.screenshot(path=str(ARTIFACTS / shot))
    set_theme(page, LIGHT)


def test_long_code_and_wide_tables_scroll_inside_the_message(page, lab):
    root = open_chat(page, lab, "wide.ipynb")
    long_line = "values = [" + ", ".join(str(i) for i in range(200)) + "]"
    header = "| " + " | ".join(f"column{i:02d}" for i in range(30)) + " |"
    send(
        root,
        "\n".join(
            [
                "```python",
                long_line,
                "```",
                "",
                header,
                "|" + "---|" * 30,
                "| " + " | ".join(["x"] * 30) + " |",
            ]
        ),
    )
    reply = last_reply(root)
    wait_status(reply, "complete")
    wait_rendered(root)
    pre = reply.locator("pre")
    box = reply.locator(".streamchat-table")
    assert pre.evaluate("el => el.scrollWidth > el.clientWidth + 50")
    assert pre.evaluate("el => getComputedStyle(el).overflowX") == "auto"
    assert box.evaluate("el => el.scrollWidth > el.clientWidth + 50")
    # The message itself, and the list, keep their width.
    assert reply.evaluate("el => el.scrollWidth <= el.clientWidth + 1")
    listing = root.locator(MESSAGES)
    assert listing.evaluate("el => el.scrollWidth <= el.clientWidth + 1")
    # The code scrolls: its end comes into view.
    pre.evaluate("el => { el.scrollLeft = el.scrollWidth; }")
    assert pre.evaluate("el => el.scrollLeft > 0")


def test_copy_buttons_put_code_and_markdown_on_the_clipboard(browser, lab):
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    try:
        root = open_chat(page, lab, "copy.ipynb")
        send(root, SHOWCASE)
        reply = last_reply(root)
        wait_status(reply, "complete")
        wait_rendered(root)
        copy = reply.locator(COPY_CODE)
        expect(copy).to_have_count(1)
        expect(copy).to_have_attribute("aria-label", "Copy python code")
        copy.click()
        expect(copy).to_have_attribute("aria-label", "Copied")
        expect(copy).to_have_attribute("data-label", "Copied")
        assert page.evaluate("navigator.clipboard.readText()") == CODE
        expect(copy).to_have_attribute("aria-label", "Copy python code", timeout=5_000)
        # The buttons' labels are not part of the reply's text.
        assert "Copy" not in reply.locator(".streamchat-body").evaluate("el => el.textContent")

        reply.hover()
        reply.locator(COPY_MESSAGE).click()
        assert page.evaluate("navigator.clipboard.readText()") == SHOWCASE
        user = root.locator(f'{MESSAGE}[data-role="user"]')
        user.hover()
        user.locator(COPY_MESSAGE).click()
        assert page.evaluate("navigator.clipboard.readText()") == SHOWCASE
        expect(user).to_have_text(SHOWCASE)  # still the user's text alone
    finally:
        context.close()


def test_python_block_is_highlighted_once_it_has_ended(page, lab):
    root = open_chat(page, lab, "highlight.ipynb")
    # Record, in the page, what the open code block showed while it streamed.
    page.evaluate(
        """() => {
             const w = window.__code = { previewed: '', highlightedWhileOpen: false };
             const list = document.querySelector('[data-testid="streamchat-messages"]');
             new MutationObserver(() => {
               const tail = list.querySelector('[data-role="assistant"] .streamchat-tail');
               const code = tail && tail.querySelector('pre code');
               if (code && code.textContent.length > w.previewed.length) {
                 w.previewed = code.textContent;
               }
               if (tail && tail.querySelector('[class^="hljs"]')) w.highlightedWhileOpen = true;
             }).observe(list, { childList: true, subtree: true, characterData: true });
           }"""
    )
    send(root, f"```python\n{CODE}\n```\n\nafter the code")
    reply = last_reply(root)
    wait_status(reply, "complete")
    wait_rendered(root)
    code = reply.locator("pre code")
    expect(code.locator("span.hljs-keyword").first).to_be_visible()
    expect(code.locator("span.hljs-comment")).to_have_text("# bytes on disk")
    assert code.evaluate("el => el.textContent") == CODE + "\n"  # highlighting keeps the text
    # The code showed as code while its block was open, and was coloured only once it ended.
    recorded = page.evaluate("window.__code")
    assert recorded["previewed"].startswith("import os")
    assert not recorded["highlightedWhileOpen"]
    # Token colours are the theme's editor colours.
    page.evaluate(CONTRAST_JS)
    keyword = code.locator("span.hljs-keyword").first.evaluate(
        """el => window.__contrast.same(getComputedStyle(el).color,
             getComputedStyle(document.body)
               .getPropertyValue('--jp-mirror-editor-keyword-color'))"""
    )
    assert keyword


def test_inline_formatting_shows_while_the_paragraph_streams(page, lab):
    root = open_chat(page, lab, "inline.ipynb")
    page.evaluate(
        """() => {
             const w = window.__inline = { bold: '', code: '', link: '', rawMarks: false };
             const list = document.querySelector('[data-testid="streamchat-messages"]');
             new MutationObserver(() => {
               const reply = list.querySelector('[data-role="assistant"]');
               if (!reply || reply.dataset.status !== 'streaming') return;
               const tail = reply.querySelector('.streamchat-tail');
               if (!tail || reply.querySelector('.streamchat-block')) return;  // still one block
               const longest = (sel, key) => {
                 const el = tail.querySelector(sel);
                 if (el && el.textContent.length > w[key].length) w[key] = el.textContent;
               };
               longest('strong', 'bold');
               longest('code', 'code');
               longest('a', 'link');
               if (/\\*\\*|`|\\]\\(/.test(tail.textContent)) w.rawMarks = true;
             }).observe(list, { childList: true, subtree: true, characterData: true });
           }"""
    )
    send(
        root,
        "Plain words then **bold words that keep on coming for a while** and "
        "`inline code that grows too` then [a link text](https://jupyter.org/x) end.",
    )
    reply = last_reply(root)
    wait_status(reply, "complete")
    seen = page.evaluate("window.__inline")
    # Each showed formatted before its closing mark arrived, growing word by word...
    assert seen["bold"].startswith("bold words"), seen
    assert seen["code"].startswith("inline code"), seen
    assert seen["link"].startswith("a link"), seen
    # ...and the marks themselves never showed.
    assert not seen["rawMarks"], seen
    expect(reply.locator("strong")).to_have_text("bold words that keep on coming for a while")
    expect(reply.locator("a")).to_have_attribute("href", "https://jupyter.org/x")


def test_escape_stops_the_reply_and_focus_stays_in_the_input(page, lab):
    root = open_chat(page, lab, "escape.ipynb")
    box = root.locator(INPUT)
    box.fill(words(300))
    box.press("Enter")
    reply = last_reply(root)
    wait_text_longer(reply, 50)
    # While it streams, screen readers are told to wait for it.
    expect(reply).to_have_attribute("aria-busy", "true")
    expect(box).to_be_focused()
    box.press("Escape")
    wait_status(reply, "stopped", timeout=5_000)
    expect(box).to_be_focused()
    expect(reply).not_to_have_attribute("aria-busy", re.compile(".*"))
    expect(root.locator(ANNOUNCER)).to_have_text("Reply stopped")

    # The Stop button gives the keyboard back to the input too, and so does Send.
    box.fill(words(300))
    root.locator(SEND).click()
    expect(box).to_be_focused()
    reply = last_reply(root)
    wait_text_longer(reply, 50)
    root.locator(STOP).click()
    wait_status(reply, "stopped", timeout=5_000)
    expect(box).to_be_focused()

    send(root, "short one")
    wait_status(last_reply(root), "complete")
    expect(root.locator(ANNOUNCER)).to_have_text("Reply complete")
    expect(last_reply(root)).not_to_have_attribute("aria-busy", re.compile(".*"))


def test_jupyterlab_shortcuts_work_while_the_input_has_focus(page, lab):
    root = open_chat(page, lab, "keys.ipynb")
    dirty = "() => window.jupyterapp.shell.currentWidget.context.model.dirty"
    page.wait_for_function(dirty, timeout=GUARD_MS)  # the run put the widget in its output
    cells = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length")
    box = root.locator(INPUT)
    box.click()
    # Letters are typed into the input, never taken as the notebook's command-mode keys
    # (A and B insert cells, D D deletes one, M makes it markdown).
    box.press_sequentially("abd dm y")
    expect(box).to_have_value("abd dm y")
    assert (
        page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length") == cells
    )
    # Ctrl+S saves the notebook.
    box.press("Control+s")
    page.wait_for_function(f"() => !({dirty})()", timeout=GUARD_MS)
    expect(page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty")).to_have_count(0)
    expect(box).to_be_focused()
    # Ctrl+Shift+C opens the command palette.
    box.press("Control+Shift+c")
    palette = page.locator(".jp-ModalCommandPalette")
    expect(palette).to_be_visible()
    page.keyboard.press("Escape")
    expect(palette).to_be_hidden()
    # Escape with no reply to stop is not the chat's either.
    box.focus()
    box.press("Escape")
    expect(box).to_have_value("abd dm y")


def test_view_opens_at_the_bottom_after_a_reload_and_follows(page, lab):
    root = open_chat(page, lab, "tall.ipynb", conversation_id="c-tall")
    tall = "\n\n".join(f"paragraph {i:02d} of a tall reply" for i in range(25))
    out = run_code(
        page,
        "for _ in range(3):\n"
        f"    r = w.send({tall!r}, agent='echo')\n"
        "    assert r.wait(60) and r.status == 'complete', r.status\n"
        "print('SENT')",
    )
    expect(out).to_contain_text("SENT", timeout=120_000)

    page.reload()
    jlab.wait_notebook_ready(page, "tall.ipynb")
    jlab.execute_command(page, "notebook:run-all-cells")
    root = page.locator(ROOT).first
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    expect(root.locator(MESSAGE)).to_have_count(6)
    wait_rendered(root)
    listing = root.locator(MESSAGES)
    gap = "el => el.scrollHeight - el.scrollTop - el.clientHeight"
    assert listing.evaluate("el => el.scrollHeight > 3 * el.clientHeight")
    page.wait_for_function(
        f"el => ({gap})(el) < 30", arg=listing.element_handle(), timeout=GUARD_MS
    )
    # Replies stored before the page loaded name their agent and the time they were made.
    expect(last_reply(root).locator(META)).to_have_text(re.compile(r"^echo · \d{1,2}:\d{2}"))

    # A new reply streams in view, and says when it began.
    send(root, tall)
    reply = last_reply(root)
    wait_text_longer(reply, 200)
    wait_status(reply, "streaming")
    assert listing.evaluate(gap) < 60
    expect(reply.locator(f"{META} time")).to_have_text(re.compile(r"\d{1,2}:\d{2}"))
    expect(reply.locator(META)).to_have_text(re.compile(r"^echo · "))
    wait_status(reply, "complete")
    wait_rendered(root)
    page.wait_for_function(
        f"el => ({gap})(el) < 30", arg=listing.element_handle(), timeout=GUARD_MS
    )


def test_every_control_has_a_name_and_the_list_is_a_log(page, lab):
    root = open_chat(page, lab, "names.ipynb")
    send(root, SHOWCASE)
    wait_status(last_reply(root), "complete")
    wait_rendered(root)
    listing = root.locator(MESSAGES)
    expect(listing).to_have_attribute("role", "log")
    expect(listing).to_have_attribute("aria-live", "polite")
    expect(root.locator(ANNOUNCER)).to_have_attribute("role", "status")
    unnamed = root.evaluate(
        """root => Array.from(root.querySelectorAll('button, select, textarea'))
             .filter(el => !(el.getAttribute('aria-label') || el.textContent).trim())
             .map(el => el.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []
    expect(root.get_by_role("button", name="Send")).to_be_visible()
    expect(root.get_by_role("combobox", name="Agent")).to_be_visible()
    expect(root.get_by_role("textbox", name="Message")).to_be_visible()
    expect(root.get_by_role("button", name="Copy as Markdown")).to_have_count(2)


# -- the same view on a plain page (no JupyterLab): fallback colours, a host's Insert callback --

PLAIN_PAGE = """<!doctype html><meta charset="utf-8">
<link rel="stylesheet" href="widget.css"><div id="host"></div><div id="md"></div>
<script type="module">
import widget, { renderMarkdown } from './widget.js';
const state = %s;
const model = { get: k => state[k], set() {}, save_changes() {}, on() {}, off() {} };
widget.render({ model, el: document.getElementById('host') });
window.inserted = [];
const md = document.getElementById('md');
md.className = 'streamchat-body';
md.append(renderMarkdown(state.markdown, undefined,
  { onInsertCode: (code, language) => window.inserted.push([code, language]) }));
window.ready = true;
</script>"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def plain_site(tmp_path_factory):
    """A static web server (no Jupyter) serving the built bundle and a page using it."""
    if not (STATIC / "widget.js").exists():
        pytest.fail("the bundle is not built: run `pip install -e .` (or `npm run build` in js/)")
    root = tmp_path_factory.mktemp("plain")
    for name in ("widget.js", "widget.css"):
        shutil.copy(STATIC / name, root / name)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_plain_page_falls_back_to_readable_colours_and_offers_insert(browser, plain_site):
    root_dir, url = plain_site
    state = {
        "conversation_id": "c1",
        "agent": "demo",
        "markdown": SHOWCASE,
        "messages": [
            {
                "messageId": "u1",
                "role": "user",
                "agentId": "demo",
                "text": "hi",
                "status": "complete",
            },
            {
                "messageId": "a1",
                "role": "assistant",
                "agentId": "demo",
                "text": SHOWCASE,
                "status": "complete",
            },
        ],
    }
    (root_dir / "plain.html").write_text(PLAIN_PAGE % json.dumps(state))
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(url + "plain.html")
        page.wait_for_function("window.ready === true")
        chat = page.locator(ROOT)
        reply = chat.locator('[data-role="assistant"]')
        expect(reply.locator("td").first).to_have_text("echo")
        for locator in [
            chat.locator('[data-role="user"] .streamchat-body'),
            reply.locator("p").first,
            reply.locator("td").first,
        ]:
            assert contrast(locator)["ratio"] >= 4.5
        expect(reply.locator("pre code span.hljs-keyword").first).to_be_visible()
        # A host that can insert code gets an Insert button on each code block.
        expect(chat.locator(INSERT_CODE)).to_have_count(0)
        insert = page.locator(f"#md {INSERT_CODE}")
        expect(insert).to_have_attribute("aria-label", "Insert code in a new cell")
        insert.click()
        assert page.evaluate("window.inserted") == [[CODE, "python"]]
        page.locator("#host").screenshot(path=str(ARTIFACTS / "view_plain_page.png"))
    finally:
        context.close()
