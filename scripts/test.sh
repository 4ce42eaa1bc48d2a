#!/usr/bin/env bash
# Install what the tests need and run them all; extra arguments go to both pytest runs.
#
#   ./scripts/test.sh            everything (what .ci/run calls)
#   ./scripts/test.sh --quick    everything but the browser tests and the tests that start
#                                their own `jupyter server` processes (marker `subprocess`):
#                                the fast loop while working
#
# Two pytest processes, run side by side: pytest-jupyter runs the async tests on its own event
# loop, and the browser tests use Playwright's sync API, which must not share a process with them.
# With CI=true (or 1) a missing Chromium is an error; elsewhere the browser tests skip and say
# how to install it. Outside a virtual or conda environment it installs into .venv/
# (scripts/_env.sh), and the tests run with that environment's Python.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh

in_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

quick=0
if [[ "${1:-}" == "--quick" ]]; then
    quick=1
    shift
fi

streamchat_install test

# The Postgres store's tests start a throwaway cluster of their own (tests/pgcluster.py) from
# Debian's server binaries; install them when we can, as for Chromium below.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "Installing Postgres for the store tests (apt-get install postgresql)..."
        if ! { apt-get update -qq &&
               DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }; then
            echo "Could not install Postgres." >&2
            if in_ci; then exit 1; fi
        fi
    fi
    # Otherwise the Postgres tests use pg_config's binaries, or fail (CI) or skip with
    # instructions.
fi

if [[ $quick == 1 ]]; then
    exec "$PY" -m pytest -m "not browser and not subprocess" "$@"
fi

# Playwright's own browser download needs the internet, which CI may not have, so the
# browser tests use Debian's Chromium; install it when we can.
if [[ -z "${STREAMCHAT_CHROMIUM:-}" && ! -x /usr/bin/chromium ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "Installing Chromium for the browser tests (apt-get install chromium)..."
        if ! { apt-get update -qq &&
               DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
            echo "Could not install Chromium." >&2
            if in_ci; then exit 1; fi
        fi
    fi
    # Otherwise the browser fixture finds Playwright's own Chromium, or fails (CI) or skips
    # with instructions.
fi

# The JupyterHub test (tests/browser/test_jupyterhub.py) needs the hub's proxy,
# configurable-http-proxy, from npm: installed into .venv/chp unless it is already there or on
# PATH (or STREAMCHAT_CHP names one).
if [[ -z "${STREAMCHAT_CHP:-}" && ! -x .venv/chp/node_modules/.bin/configurable-http-proxy ]] &&
   ! command -v configurable-http-proxy >/dev/null; then
    echo "Installing configurable-http-proxy for the JupyterHub test (npm install)..."
    if ! npm install --silent --no-audit --no-fund --prefix .venv/chp \
            configurable-http-proxy@5 >/dev/null; then
        echo "Could not install configurable-http-proxy." >&2
        if in_ci; then exit 1; fi
    fi
    # Otherwise the JupyterHub test fails (CI) or skips with instructions.
fi

# Both runs at once: they spend most of their time waiting on servers, kernels and Chromium,
# so together they take about as long as the longer one. The browser run's output is kept in a
# file and shown once the other run is done. Exit status 5 (nothing collected) is expected from
# one of them when the arguments select only browser or only other tests.
browser_log="$(mktemp)"
"$PY" -m pytest -m browser "$@" >"$browser_log" 2>&1 &
browser_pid=$!
# An interrupted run (Ctrl-C) stops the browser run too.
trap 'kill "$browser_pid" 2>/dev/null || true; rm -f "$browser_log"' EXIT
other=0
"$PY" -m pytest -m "not browser" "$@" || other=$?
browser=0
wait "$browser_pid" || browser=$?
echo
echo "==================== browser tests (run alongside the others) ===================="
cat "$browser_log"

status=0
collected=0
for rc in "$other" "$browser"; do
    if [[ $rc == 5 ]]; then continue; fi
    collected=1
    if [[ $status == 0 ]]; then status=$rc; fi
done
if [[ $collected == 0 ]]; then
    echo "No tests were selected." >&2
    exit 5
fi
exit "$status"
