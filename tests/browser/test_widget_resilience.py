"""The widget's reply survives what goes wrong around it: cut connections, kernel restarts and
deaths, page reloads, an unreachable or restarted server, an expired login."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

import jlab
from chat import (
    GUARD_MS,
    NOTICE,
    ROOT,
    body_text,
    last_reply,
    open_chat,
    send,
    stored,
    wait_status,
    wait_text_longer,
    words,
)
from labserver import LabServer
from tcpproxy import TcpProxy

WS = "/streamchat/ws"


@pytest.fixture(scope="module")
def lab(lab_args, lab_env, tmp_path_factory):
    """Without the Chat panel, whose own socket (it watches the conversation list) would mix
    with the notebook chat's in the connection counts and retry timings measured here."""
    with LabServer(
        lab_args,
        env=lab_env,
        base_dir=tmp_path_factory.mktemp("lab"),
        disabled_plugins=["jupyter-streamchat:sidebar"],
    ) as server:
        yield server


def _record_connection_states(page) -> None:
    page.evaluate(
        """() => {
             const root = document.querySelector('[data-testid="streamchat"]');
             window.__states = [root.dataset.connection];
             new MutationObserver(() => window.__states.push(root.dataset.connection))
               .observe(root, { attributes: true, attributeFilter: ['data-connection'] });
           }"""
    )


def _shown_chars(reply) -> int:
    return reply.evaluate("el => el.querySelector('.streamchat-body').textContent.length")


def test_connection_cut_three_times_in_one_reply(page, lab, proxy):
    root = open_chat(page, lab, "cut.ipynb", via=proxy, conversation_id="c-cut")
    _record_connection_states(page)
    text = words(240)  # about 12 s at the echo agent's 50 ms per word
    send(root, text)
    reply = last_reply(root)
    for _ in range(3):
        wait_text_longer(reply, _shown_chars(reply) + 150)
        assert reply.get_attribute("data-status") == "streaming", "cut too late: reply ended"
        assert proxy.cut(WS) >= 1
        expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    wait_status(reply, "complete")
    assert body_text(reply) == text  # no gap, no duplicate
    assert stored(lab, "c-cut")[-1]["text"] == text
    states = page.evaluate("window.__states")
    assert states.count("reconnecting") >= 3, states
    assert proxy.opened(WS) >= 4  # the first connection and one per cut


@pytest.mark.parametrize("fate", ["restart", "death"])
def test_kernel_restart_or_death_mid_stream(page, lab, fate):
    name = f"kernel-{fate}.ipynb"
    root = open_chat(page, lab, name)
    text = words(160)
    send(root, text)
    reply = last_reply(root)
    wait_text_longer(reply, 100)
    kernel = lab.kernel_for(name)
    if fate == "restart":
        lab.restart_kernel(kernel["id"])
        jlab.wait_notebook_ready(page, name)
    else:
        lab.api("DELETE", f"api/kernels/{kernel['id']}")
    assert reply.get_attribute("data-status") == "streaming", f"kernel {fate} came too late"
    wait_status(reply, "complete")
    assert body_text(reply) == text


def test_page_reload_mid_stream(page, lab):
    root = open_chat(page, lab, "reload.ipynb", conversation_id="c-reload")
    # The widget comes back from the saved output and the kernel's live model.
    jlab.execute_command(page, "docmanager:save")
    text = words(200)
    send(root, text)
    reply = last_reply(root)
    wait_text_longer(reply, 100)
    page.reload()
    jlab.wait_notebook_ready(page, "reload.ipynb")
    root = page.locator(ROOT).first
    expect(root).to_have_attribute("data-connection", "connected", timeout=GUARD_MS)
    reply = last_reply(root)
    expect(root.locator('[data-role="user"]')).to_have_text(text)
    # Still streaming after the reload, and growing live to the end.
    wait_status(reply, "streaming")
    before = _shown_chars(reply)
    wait_text_longer(reply, before + 20)
    wait_status(reply, "complete")
    assert body_text(reply) == text
    assert stored(lab, "c-reload")[-1]["text"] == text


def test_unreachable_server_is_explained_and_retried_with_backoff(page, lab):
    # Note when the view opens its chat sockets (page time, ms).
    page.add_init_script("""
        window.__chatSockets = [];
        const Native = window.WebSocket;
        window.WebSocket = function (url, protocols) {
          if (String(url).includes('/streamchat/ws')) window.__chatSockets.push(performance.now());
          return new Native(url, protocols);
        };
        window.WebSocket.prototype = Native.prototype;
        Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
    """)
    proxy = TcpProxy("127.0.0.1", lab.port).__enter__()
    try:
        root = open_chat(page, lab, "unreachable.ipynb", via=proxy)
    finally:
        proxy.close()  # the server is gone, as far as this page can tell
    expect(root).to_have_attribute("data-connection", "reconnecting", timeout=GUARD_MS)
    expect(root.locator(NOTICE)).to_contain_text(
        "Cannot reach the Jupyter server", timeout=GUARD_MS
    )
    page.wait_for_function("window.__chatSockets.length >= 6", timeout=GUARD_MS)
    opened = page.evaluate("window.__chatSockets")
    # opened[1] is the first retry after the drop; the gaps after it are retries 1, 2, 3, 4,
    # each waiting between half and all of 250 ms * 2**retry (plus the failed try itself).
    gaps = [b - a for a, b in zip(opened[1:], opened[2:])]
    ceilings = [250 * 2**retry for retry in range(1, 5)]
    for gap, ceiling in zip(gaps, ceilings):
        assert ceiling / 2 - 20 <= gap <= ceiling + 1000, (gaps, ceilings)
    assert gaps[3] > gaps[0] * 2, gaps  # it backs off
    fractions = {round(g / c, 2) for g, c in zip(gaps, ceilings)}
    assert len(fractions) > 1, gaps  # jitter: not the same fraction of the ceiling every time


def test_server_restart_then_expired_login(browser, tmp_path):
    """A reply cut off by a server stop comes back marked interrupted, its text kept; a server
    that no longer knows the page's token gets a "login expired" message, not a spinner."""
    base = tmp_path / "lab"
    args = ["--EchoAgent.delay=0.05"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    first = LabServer(args, base_dir=base).start()
    try:
        root = open_chat(page, first, "restart.ipynb", conversation_id="c-restart")
        send(root, words(300))
        reply = last_reply(root)
        wait_text_longer(reply, 100)
    finally:
        first.stop()  # SIGTERM: a clean shutdown while the reply streams
    expect(root).to_have_attribute("data-connection", "reconnecting", timeout=GUARD_MS)

    second = LabServer(args, base_dir=base, port=first.port, token=first.token).start()
    try:
        wait_status(reply, "interrupted")
        expect(reply.locator(".streamchat-note")).to_contain_text("Interrupted")
        kept = stored(second, "c-restart")[-1]
        assert kept["status"] == "interrupted" and kept["text"]
        assert body_text(reply) == " ".join(kept["text"].split())
    finally:
        second.stop()

    # A new token and a new cookie secret: neither the page's token nor its login cookie
    # is valid any more, which is what an expired login looks like to the page.
    (base / "runtime" / "jupyter_cookie_secret").unlink()
    third = LabServer(args, base_dir=base, port=first.port).start()
    try:
        expect(root).to_have_attribute("data-connection", "offline", timeout=GUARD_MS)
        expect(root.locator(NOTICE)).to_contain_text("login has expired")
    finally:
        third.stop()
        context.close()
