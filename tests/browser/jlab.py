"""Small helpers to drive JupyterLab in a Playwright page.

Commands go through ``window.jupyterapp`` (the server runs with
``--LabApp.expose_app_in_browser=True``): running ``notebook:run-all-cells`` that way does
not depend on menus, keyboard focus or where a button happens to be drawn.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # playwright is imported where used, so collecting works without it
    from playwright.sync_api import Locator, Page

    from labserver import LabServer
    from tcpproxy import TcpProxy

LOAD_GUARD = 60_000  # ms for JupyterLab to load a notebook and connect its kernel
OUTPUT_GUARD = 30_000  # ms for a cell's output to appear

# True once the notebook at `path` is open with a connected, idle kernel. Main-area widgets
# are searched rather than the current one, so a dialog or another tab cannot mislead us.
_NOTEBOOK_READY_JS = """
(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return false;
  for (const widget of Array.from(app.shell.widgets('main'))) {
    if (!widget.context || widget.context.path !== path) continue;
    const kernel = widget.sessionContext?.session?.kernel;
    return !!widget.content && widget.context.isReady && !!kernel
      && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
  }
  return false;
}
"""


def open_notebook(
    page: Page,
    lab: LabServer,
    path: str,
    via: Optional[TcpProxy] = None,
    timeout: float = LOAD_GUARD,
) -> Locator:
    """Load JupyterLab on ``path`` (through the proxy ``via`` if given) and wait until the
    notebook is shown and its kernel is connected and idle; returns the notebook panel.

    ``?reset`` starts from an empty workspace, so tabs saved by an earlier test in the same
    server are not restored beside this one.
    """
    from playwright.sync_api import expect

    query = urllib.parse.urlencode({"reset": "", "token": lab.token})
    url = lab.url(f"lab/tree/{urllib.parse.quote(path)}", port=via.port if via else None)
    page.goto(f"{url}?{query}", timeout=timeout)
    wait_notebook_ready(page, path, timeout)
    panel = notebook_panel(page)
    expect(panel).to_be_visible(timeout=timeout)
    return panel


def wait_notebook_ready(page: Page, path: str, timeout: float = LOAD_GUARD) -> None:
    """Wait until the open notebook ``path`` has a connected, idle kernel (after a load, a
    kernel restart or a reconnect)."""
    page.wait_for_function(_NOTEBOOK_READY_JS, arg=path, timeout=timeout, polling=100)


def notebook_panel(page: Page) -> Locator:
    """The notebook panel shown in the main area."""
    return page.locator(".jp-NotebookPanel:visible").first


def execute_command(page: Page, command_id: str, args: Optional[dict] = None) -> Any:
    """Run a JupyterLab command and return its (JSON-serialisable) result."""
    return page.evaluate(
        """async ([id, args]) => {
             const result = await window.jupyterapp.commands.execute(id, args);
             // Commands may return widgets or other objects that cannot cross to Python.
             try { return JSON.parse(JSON.stringify(result ?? null)); } catch { return null; }
           }""",
        [command_id, args or {}],
    )


def run_all(page: Page) -> None:
    """Run every cell of the current notebook (returns once they are queued, not done)."""
    execute_command(page, "notebook:run-all-cells")


def cell(page: Page, index: int) -> Locator:
    """The ``index``-th cell of the notebook shown in the main area."""
    return notebook_panel(page).locator(".jp-Notebook .jp-Cell").nth(index)


def wait_for_output(page: Page, index: int, text: str, timeout: float = OUTPUT_GUARD) -> Locator:
    """Wait until the output area of cell ``index`` contains ``text``; returns that area."""
    from playwright.sync_api import expect

    output = cell(page, index).locator(".jp-OutputArea")
    expect(output).to_contain_text(text, timeout=timeout)
    return output


def wait_for_execution_count(
    page: Page, index: int, count: int, timeout: float = OUTPUT_GUARD
) -> None:
    """Wait until cell ``index`` shows ``[count]:`` as its prompt, i.e. that run finished."""
    from playwright.sync_api import expect

    prompt = cell(page, index).locator(".jp-InputArea-prompt")
    expect(prompt).to_have_text(f"[{count}]:", timeout=timeout)


# True once the notebook at `path` is open and its file loaded, kernel or not.
_NOTEBOOK_LOADED_JS = """
(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return false;
  return Array.from(app.shell.widgets('main')).some(
    widget => widget.context && widget.context.path === path && widget.context.isReady);
}
"""


def open_lab(page: Page, lab: LabServer, timeout: float = LOAD_GUARD) -> None:
    """Load JupyterLab with an empty workspace (no notebook open) and wait until it has
    restored its layout, so commands can run."""
    query = urllib.parse.urlencode({"reset": "", "token": lab.token})
    page.goto(f"{lab.url('lab')}?{query}", timeout=timeout)
    page.wait_for_function("() => !!window.jupyterapp", timeout=timeout, polling=100)
    page.evaluate("async () => { await window.jupyterapp.restored; }")


def open_without_kernel(
    page: Page, lab: LabServer, path: str, timeout: float = LOAD_GUARD
) -> Locator:
    """Open the notebook ``path`` the way a reader would who never runs it: JupyterLab is told
    neither to start a kernel nor to ask for one (opening ``lab/tree/<path>`` would start the
    notebook's kernel). Returns the notebook panel once its file is loaded."""
    from playwright.sync_api import expect

    open_lab(page, lab, timeout)
    page.evaluate(
        """async (path) => {
             await window.jupyterapp.commands.execute('docmanager:open', {
               path, factory: 'Notebook',
               kernelPreference: { shouldStart: false, canStart: false }
             });
           }""",
        path,
    )
    page.wait_for_function(_NOTEBOOK_LOADED_JS, arg=path, timeout=timeout, polling=100)
    panel = notebook_panel(page)
    expect(panel).to_be_visible(timeout=timeout)
    return panel


def open_in_notebook7(
    page: Page, server: LabServer, path: str, timeout: float = LOAD_GUARD
) -> Locator:
    """Load Jupyter Notebook 7's page of the notebook ``path`` (``/notebooks/<path>``) and wait
    until its kernel is connected and idle; returns the notebook panel."""
    from playwright.sync_api import expect

    query = urllib.parse.urlencode({"token": server.token})
    page.goto(f"{server.url(f'notebooks/{urllib.parse.quote(path)}')}?{query}", timeout=timeout)
    wait_notebook_ready(page, path, timeout)
    panel = notebook_panel(page)
    expect(panel).to_be_visible(timeout=timeout)
    return panel


def save(page: Page) -> None:
    """Save the current notebook (returns once the server has it)."""
    execute_command(page, "docmanager:save")


def run_cell(page: Page, index: int) -> None:
    """Make cell ``index`` the active one and run it (returns once it is queued, not done)."""
    page.evaluate(
        """async (index) => {
             const app = window.jupyterapp;
             app.shell.currentWidget.content.activeCellIndex = index;
             await app.commands.execute('notebook:run-cell');
           }""",
        index,
    )


def cell_sources(page: Page) -> list:
    """``[(cell type, source), ...]`` of the notebook shown, as the page holds it now."""
    return page.evaluate(
        """() => window.jupyterapp.shell.currentWidget.content.widgets.map(
             cell => [cell.model.type, cell.model.sharedModel.getSource()])"""
    )
