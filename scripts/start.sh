#!/usr/bin/env bash
# Install this checkout and open JupyterLab on the quickstart notebook.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e .
args=(--ServerApp.port_retries=0)
if [ "$(id -u)" = 0 ]; then args+=(--allow-root); fi
exec jupyter lab "${args[@]}" "$@" notebooks/quickstart.ipynb
