"""The bundle on pages without a Jupyter server: a static notebook viewer, and the streaming
markdown renderer on its own."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
from playwright.sync_api import expect

from jupyter_streamchat.agents.demo import _REPLY

STATIC = Path(__file__).parent.parent.parent / "jupyter_streamchat" / "widget" / "static"

# What anywidget hands to `render` on a page with no kernel: a model holding the saved state.
VIEWER_PAGE = """<!doctype html><meta charset="utf-8">
<link rel="stylesheet" href="widget.css"><div id="host"></div>
<script type="module">
import widget from './widget.js';
const state = %s;
const model = { get: k => state[k], set() {}, save_changes() {}, on() {}, off() {} };
widget.render({ model, el: document.getElementById('host') });
</script>"""

RENDER_PAGE = """<!doctype html><meta charset="utf-8"><div id="a"></div><div id="b"></div>
<script type="module">
import { StreamingMarkdown, renderMarkdown } from './widget.js';
const frame = () => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
window.render = async (text, sizes) => {
  const a = document.getElementById('a'), b = document.getElementById('b');
  a.replaceChildren(); b.replaceChildren();
  const streaming = new StreamingMarkdown(a);
  let removed = 0;
  // Rendered blocks must never change: count removals of them or of anything inside them.
  const inBlock = n => n.nodeType === 1 && (n.classList.contains('streamchat-block') || n.closest('.streamchat-block'));
  const count = rs => rs.forEach(r => {
    removed += Array.from(r.removedNodes).filter(inBlock).length + (inBlock(r.target) ? 1 : 0);
  });
  const watch = new MutationObserver(count);
  watch.observe(a, { childList: true, subtree: true, characterData: true });
  for (let i = 0, k = 0; i < text.length; k++) {
    const n = sizes[k % sizes.length];
    streaming.append(text.slice(i, i + n));
    i += n;
    if (k % 20 === 19) await frame();  // let queued blocks render between chunks
  }
  await frame();
  const renderedWhileStreaming = a.querySelectorAll('.streamchat-block').length;
  count(watch.takeRecords());
  const removedWhileStreaming = removed;
  await streaming.finish();
  b.appendChild(renderMarkdown(text));
  const shape = el => Array.from(el.querySelectorAll('*'), e => e.tagName)
    .filter(t => t !== 'DIV').join(' ');
  return { removedWhileStreaming, renderedWhileStreaming, streamed: shape(a), whole: shape(b),
           streamedText: a.textContent.replace(/\\s+/g, ' ').trim(),
           wholeText: b.textContent.replace(/\\s+/g, ' ').trim() };
};
window.ready = true;
</script>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A plain static web server (no Jupyter) serving the built bundle and test pages."""
    if not (STATIC / "widget.js").exists():
        pytest.fail("the bundle is not built: run `pip install -e .` (or `npm run build` in js/)")
    root = tmp_path_factory.mktemp("site")
    for name in ("widget.js", "widget.css"):
        shutil.copy(STATIC / name, root / name)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def plain_page(browser):
    context = browser.new_context()
    yield context.new_page()
    context.close()


def test_static_viewer_says_there_is_no_server(plain_page, site):
    root_dir, url = site
    state = {
        "conversation_id": "c1",
        "agent": "demo",
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
                "text": "**hello**",
                "status": "complete",
            },
        ],
    }
    (root_dir / "viewer.html").write_text(VIEWER_PAGE % json.dumps(state))
    plain_page.goto(url + "viewer.html")
    root = plain_page.locator('[data-testid="streamchat"]')
    expect(root).to_have_attribute("data-connection", "offline")
    expect(root.locator('[data-testid="streamchat-notice"]')).to_contain_text(
        "Cannot reach a streamchat server"
    )
    # The saved conversation still shows, read-only.
    expect(root.locator('[data-testid="streamchat-message"]')).to_have_count(2)
    expect(root.locator('[data-role="assistant"] strong')).to_have_text("hello")
    expect(root.locator('[data-testid="streamchat-input"]')).to_be_disabled()


@pytest.mark.parametrize(
    "sizes", [[1], [3, 1, 7, 2], [64], [100000]], ids=["1-char", "mixed", "64-char", "whole"]
)
def test_streamed_markdown_matches_a_whole_render(plain_page, site, sizes):
    """However the text is cut into chunks, streaming renders what one render of the whole text
    does, and never removes a node while streaming."""
    root_dir, url = site
    (root_dir / "render.html").write_text(RENDER_PAGE)
    plain_page.goto(url + "render.html")
    plain_page.wait_for_function("window.ready === true")
    text = _REPLY.format(question="What?") + "\n".join(
        [
            "",
            "- item one",
            "- item two",
            "",
            "  continued in item two",
            "",
            "- item three",
            "",
            "Setext heading",
            "==============",
            "",
            "~~~",
            "fenced",
            "",
            "with a blank line",
            "~~~",
            "3. starts at three",
            "4. four",
            "",
            "    indented code",
            "",
            "last paragraph",
        ]
    )
    result = plain_page.evaluate("([t, s]) => window.render(t, s)", [text, sizes])
    assert result["removedWhileStreaming"] == 0
    assert result["renderedWhileStreaming"] >= 1  # blocks render as they end, not at finish()
    assert result["streamed"] == result["whole"]
    assert result["streamedText"] == result["wholeText"]
