"""What agent output may do in the page: images fetch nothing without a click (unless their host
is allowed), reference links resolve while a reply streams, and a long conversation opens at its
latest messages and pages back as the user scrolls up. The echo agent, which repeats the user's
text word by word, stands in for an agent whose output we choose."""

from __future__ import annotations

import base64
import http.server
import re
import threading
from collections import Counter

import pytest
from playwright.sync_api import expect

import jlab
from chat import (
    GUARD_MS,
    MESSAGE,
    ROOT,
    body_text,
    last_reply,
    open_chat,
    run_code,
    send,
    wait_status,
)

PLACEHOLDER = '[data-testid="streamchat-image-placeholder"]'
LOAD_EARLIER = '[data-testid="streamchat-load-earlier"]'
MESSAGES = '[data-testid="streamchat-messages"]'

# A 1x1 PNG.
PIXEL_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
    "RU5ErkJggg=="
)
PIXEL = base64.b64decode(PIXEL_B64)


@pytest.fixture(scope="module")
def lab_args():
    # Words 50 ms apart reach the page as frames of their own, so blocks end (and render)
    # one by one, as with a model.
    return ["--EchoAgent.delay=0.05"]


class _PixelHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the name http.server calls)
        self.server.requests[self.path] += 1
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PIXEL)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(PIXEL)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def pixels():
    """An image server on another port (another origin), counting the requests per path."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PixelHandler)
    server.requests = Counter()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _pixel_url(server, name: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{name}"


def _open_widget(page, lab, name: str, args: str):
    """A notebook whose first cell shows ``ChatWidget(agent="echo", <args>)``; the chat root."""
    lab.write_notebook(
        name,
        [f'from jupyter_streamchat import ChatWidget\nw = ChatWidget(agent="echo", {args})\nw'],
    )
    jlab.open_notebook(page, lab, name)
    jlab.execute_command(page, "notebook:run-cell")
    root = page.locator(ROOT).first
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    return root


def _wait_loaded(image) -> None:
    """Wait until an <img> has loaded its picture (the 1x1 pixel)."""
    image.page.wait_for_function(
        "img => img.complete && img.naturalWidth === 1",
        arg=image.element_handle(),
        timeout=GUARD_MS,
    )


def test_images_load_only_on_click(page, lab, pixels):
    (lab.root / "x.png").write_bytes(PIXEL)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    fetched = lambda part: [url for url in requests if part in url]  # noqa: E731

    root = open_chat(page, lab, "images.ipynb")
    remote = _pixel_url(pixels, "pixel.png")
    same_origin = f"{lab.base_url}files/x.png"
    inline = f"data:image/png;base64,{PIXEL_B64}"
    send(root, f"Remote ![x]({remote})\n\nOurs ![y]({same_origin})\n\nInline ![z]({inline})\n")
    reply = last_reply(root)
    wait_status(reply, "complete")

    # Each image that would fetch is a button naming where from; the data: image is shown.
    buttons = reply.locator(PLACEHOLDER)
    expect(buttons).to_have_count(2)
    pixel_host = f"127.0.0.1:{pixels.server_address[1]}"
    lab_host = f"127.0.0.1:{lab.port}"
    expect(
        reply.get_by_role("button", name=f'Image "x" from {pixel_host}: click to load')
    ).to_be_visible()
    expect(
        reply.get_by_role("button", name=f'Image "y" from {lab_host}: click to load')
    ).to_be_visible()
    shown = reply.locator("img")
    expect(shown).to_have_count(1)
    expect(shown).to_have_attribute("alt", "z")
    _wait_loaded(shown)
    assert pixels.requests["/pixel.png"] == 0
    assert fetched("pixel.png") == [] and fetched("files/x.png") == []

    # A click loads that one image, once.
    reply.get_by_role("button", name=re.compile('Image "x"')).click()
    remote_img = reply.locator('img[alt="x"]')
    expect(remote_img).to_have_attribute("src", remote)
    _wait_loaded(remote_img)
    assert pixels.requests["/pixel.png"] == 1
    assert fetched("pixel.png") == [remote]
    assert fetched("files/x.png") == []

    reply.get_by_role("button", name=re.compile('Image "y"')).click()
    ours = reply.locator('img[alt="y"]')
    _wait_loaded(ours)  # the page's own login lets it through /files/
    assert fetched("files/x.png") == [lab.url("files/x.png")]
    expect(reply.locator(PLACEHOLDER)).to_have_count(0)
    assert pixels.requests["/pixel.png"] == 1


def test_allowed_host_loads_at_once(page, lab, pixels):
    root = _open_widget(page, lab, "allowed.ipynb", 'image_hosts=["127.0.0.1"]')
    allowed = _pixel_url(pixels, "allowed.png")
    send(root, f"Allowed ![ok]({allowed}) and ![other](https://example.org/a.png)")
    reply = last_reply(root)
    wait_status(reply, "complete")
    image = reply.locator('img[alt="ok"]')
    expect(image).to_have_attribute("src", allowed)
    _wait_loaded(image)
    assert pixels.requests["/allowed.png"] == 1
    # A host not on the list still waits for a click.
    expect(reply.locator(PLACEHOLDER)).to_have_count(1)
    expect(reply.locator(PLACEHOLDER)).to_contain_text("from example.org")


def test_reference_links_resolve_while_streaming(page, lab):
    root = open_chat(page, lab, "refs.ipynb")
    # Record what streaming shows: the first paragraph, rendered before the definitions come,
    # shows its references as written; the second paragraph's element, once rendered.
    page.evaluate(
        """() => {
             window.__sawLiteral = false;
             window.__moreText = null;
             const list = document.querySelector('[data-testid="streamchat-messages"]');
             new MutationObserver(() => {
               for (const block of list.querySelectorAll(
                   '[data-role="assistant"] .streamchat-block')) {
                 if (block.textContent.includes('[the docs][d]')) window.__sawLiteral = true;
                 for (const p of block.querySelectorAll('p')) {
                   if (p.textContent === 'more text' && !window.__moreText) window.__moreText = p;
                 }
               }
             }).observe(list, { childList: true, subtree: true, characterData: true });
           }"""
    )
    send(
        root,
        "See [the docs][d] and ![logo][img]\n\nmore text\n\n"
        "[d]: https://example.org/docs\n[img]: https://example.org/logo.png",
    )
    reply = last_reply(root)
    wait_status(reply, "complete")

    link = reply.locator('a[href="https://example.org/docs"]')
    expect(link).to_have_text("the docs")
    expect(reply.locator(PLACEHOLDER)).to_have_count(1)
    expect(reply.locator(PLACEHOLDER)).to_have_text('Image "logo" from example.org: click to load')
    text = body_text(reply)
    assert text == 'See the docs and Image "logo" from example.org: click to load more text'
    assert "[d]" not in text and "[img]" not in text
    # The first paragraph was shown before its definitions arrived, and rendered again after;
    # the paragraph that uses no reference was rendered once and kept.
    assert page.evaluate("window.__sawLiteral")
    assert page.evaluate("window.__moreText !== null && window.__moreText.isConnected")


def test_long_conversation_pages_back_on_scroll(page, lab, browser):
    # 60 exchanges (120 messages) sent from the kernel: more than one HISTORY holds (100).
    open_chat(page, lab, "seed.ipynb", conversation_id="c-paging")
    out = run_code(
        page,
        "for i in range(60):\n"
        '    r = w.send(f"m{i:03d}", agent="echo")\n'
        '    assert r.wait(30) and r.status == "complete", r.status\n'
        'print("SEEDED")',
    )
    expect(out).to_contain_text("SEEDED", timeout=120_000)
    assert len(lab.api("GET", "streamchat/api/conversations/c-paging")["messages"]) == 120

    # A fresh page on the same conversation shows the latest 100, at the bottom.
    fresh = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    try:
        requests_sent = []
        # Text frames the page sends on its WebSockets (the kernel's binary ones are left out).
        fresh.on(
            "websocket",
            lambda ws: ws.on(
                "framesent",
                lambda payload: isinstance(payload, str) and requests_sent.append(payload),
            ),
        )
        chat = open_chat(fresh, lab, "paging.ipynb", conversation_id="c-paging")
        messages = chat.locator(MESSAGE)
        expect(messages).to_have_count(100, timeout=GUARD_MS)
        expect(messages.first).to_have_attribute("data-role", "user")
        expect(messages.first).to_have_text("m010")
        expect(messages.last).to_have_attribute("data-status", "complete")
        expect(chat.locator(LOAD_EARLIER)).to_be_hidden()
        assert not any("LOAD_HISTORY" in frame for frame in requests_sent)

        # Scrolling to the top asks for the page before the oldest shown, with a marker
        # meanwhile, and puts it above without moving what the user is looking at.
        fresh.evaluate(
            """() => {
                 const marker = document.querySelector('[data-testid="streamchat-load-earlier"]');
                 window.__markerShown = false;
                 new MutationObserver(() => { if (!marker.hidden) window.__markerShown = true; })
                   .observe(marker, { attributes: true, attributeFilter: ['hidden'] });
               }"""
        )
        listing = chat.locator(MESSAGES)
        oldest = messages.first.element_handle()
        # To the top, measured at once: the scroll event (which asks) comes after this task.
        top_before = fresh.evaluate(
            """([list, m]) => {
                 list.scrollTop = 0;
                 return m.getBoundingClientRect().top - list.getBoundingClientRect().top;
               }""",
            [listing.element_handle(), oldest],
        )
        expect(messages).to_have_count(120, timeout=GUARD_MS)
        expect(messages.first).to_have_text("m000")
        assert fresh.evaluate("window.__markerShown")
        expect(chat.locator(LOAD_EARLIER)).to_be_hidden()
        load = [f for f in requests_sent if "LOAD_HISTORY" in f]
        assert len(load) == 1
        assert '"beforeMessageId"' in load[0] and '"c-paging"' in load[0]
        # Wait for the earlier replies to render, then measure where the old first message is.
        fresh.wait_for_function(
            """() => Array.from(document.querySelectorAll('[data-role="assistant"]'))
                 .every(m => !m.querySelector('.streamchat-raw, .streamchat-tail:not(:empty)'))""",
            timeout=GUARD_MS,
        )
        top_after = fresh.evaluate(
            "([list, m]) => m.getBoundingClientRect().top - list.getBoundingClientRect().top",
            [listing.element_handle(), oldest],
        )
        assert abs(top_after - top_before) <= 4, (top_before, top_after)
        assert listing.evaluate("el => el.scrollTop") > 0

        # Nothing is older: scrolling to the top again asks for nothing.
        listing.evaluate("el => { el.scrollTop = 0; }")
        fresh.wait_for_timeout(300)  # a LOAD_HISTORY would be sent at once on the scroll event
        assert len([f for f in requests_sent if "LOAD_HISTORY" in f]) == 1
        expect(messages).to_have_count(120)
    finally:
        fresh.context.close()
