"""Fixtures for browser tests: Chromium through Playwright, against a ``jupyter lab`` process.

Run these apart from the other tests (``pytest -m browser``): pytest-jupyter drives async tests
on its own event loop, and Playwright's sync API must not share a process with them.

- ``browser`` (session): one headless Chromium.
- ``lab`` (module): one ``jupyter lab`` per test module, started with ``lab_args`` and
  ``lab_env`` (module fixtures a test module may override).
- ``proxy`` (module): a :class:`TcpProxy` to the lab's port, to cut connections.
- ``page`` (function): a fresh browser context and page; on failure a screenshot goes to
  ``tests/browser/artifacts/<test>.png`` and the lab log's tail is printed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from labserver import LabServer
from tcpproxy import TcpProxy

HERE = Path(__file__).parent
ARTIFACTS = HERE / "artifacts"

# Without the background-networking flags Chromium waits on services it cannot reach here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SYSTEM_CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = (
    "install Debian's chromium (`apt-get install -y chromium`) and "
    "`pip install playwright` (or `pip install -e '.[test]'`), or point "
    "STREAMCHAT_CHROMIUM at a Chromium binary; `playwright install chromium` works "
    "too where it can download"
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item, so the page fixture knows if the test failed.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


# pytest-jupyter (loaded by tests/conftest.py) has autouse fixtures that take the thread's
# current event loop and close it after each test. While Playwright's sync API is active, that
# loop is Playwright's own, marked as running: closing it fails every teardown and would break
# the session's browser. Browser tests use no in-process Jupyter server, so both are no-ops.
@pytest.fixture
def jp_asyncio_loop():
    yield None


@pytest.fixture
def jp_server_cleanup():
    yield


def _unavailable(reason: str):
    """Browser tests must never pass unnoticed in CI by skipping; elsewhere, say how to fix."""
    message = f"browser tests need Chromium and Playwright: {reason}; {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        _unavailable(f"cannot import playwright ({exc})")

    executable = os.environ.get("STREAMCHAT_CHROMIUM") or (
        SYSTEM_CHROMIUM if os.path.exists(SYSTEM_CHROMIUM) else None
    )
    with sync_playwright() as playwright:
        if executable is None and not os.path.exists(playwright.chromium.executable_path):
            _unavailable(
                f"no {SYSTEM_CHROMIUM} and no Playwright Chromium at "
                f"{playwright.chromium.executable_path}"
            )
        try:
            browser = playwright.chromium.launch(
                headless=True, executable_path=executable, args=CHROMIUM_ARGS
            )
        except Error as exc:
            _unavailable(f"Chromium ({executable or 'Playwright own'}) did not start: {exc}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def lab_args() -> list:
    """Extra ``jupyter lab`` arguments; override in a test module for its own server."""
    return ["--EchoAgent.delay=0.05"]


@pytest.fixture(scope="module")
def lab_env() -> dict:
    """Extra environment variables of ``jupyter lab`` (None removes one); override like
    ``lab_args``."""
    return {}


@pytest.fixture(scope="module")
def lab(lab_args, lab_env, tmp_path_factory):
    with LabServer(lab_args, env=lab_env, base_dir=tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(lab):
    with TcpProxy("127.0.0.1", lab.port) as tcp_proxy:
        yield tcp_proxy


@pytest.fixture
def page(browser, lab, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            print(f"screenshot: {ARTIFACTS / f'{name}.png'}")
        except Exception as exc:  # the page may be gone; the log below still helps
            print(f"no screenshot: {exc}")
        print(f"--- jupyter lab log (tail) ---\n{lab.log_tail()}")
    context.close()
