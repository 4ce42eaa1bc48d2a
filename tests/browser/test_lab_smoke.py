"""The browser harness itself: JupyterLab loads through the proxy, runs a cell, and survives
the proxy cutting its kernel connection."""

import time

import jlab

RECONNECT_GUARD = 30.0  # seconds for JupyterLab to reopen a cut kernel socket; a hang guard


def test_lab_runs_the_extension(lab):
    agents = lab.api("GET", "streamchat/api/agents")
    assert "echo" in str(agents)


def test_run_cell_through_proxy_and_recover_from_cut(page, lab, proxy):
    path = lab.write_notebook("smoke.ipynb", ["print(6*7)"])
    jlab.open_notebook(page, lab, path, via=proxy)

    jlab.run_all(page)
    jlab.wait_for_output(page, 0, "42")
    jlab.wait_for_execution_count(page, 0, 1)
    # The page really went through the proxy: its kernel socket is one of the proxy's.
    assert proxy.connections("/api/kernels/") >= 1, proxy.request_lines()
    opened = proxy.opened("/api/kernels/")

    assert proxy.cut("/api/kernels/") >= 1

    # JupyterLab opens a new kernel socket (through the proxy again) and can run cells.
    deadline = time.monotonic() + RECONNECT_GUARD
    while proxy.opened("/api/kernels/") == opened:
        assert time.monotonic() < deadline, "the kernel socket was not reopened"
        time.sleep(0.1)
    jlab.wait_notebook_ready(page, path, timeout=RECONNECT_GUARD * 1000)
    jlab.run_all(page)
    jlab.wait_for_execution_count(page, 0, 2)
    jlab.wait_for_output(page, 0, "42")
