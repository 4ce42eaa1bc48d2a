#!/usr/bin/env bash
# Install this checkout and open JupyterLab on your own copy of the quickstart notebook
# (notebooks/my-quickstart.ipynb, made once from notebooks/quickstart.ipynb); extra arguments go to
# `jupyter lab`. Jupyter Notebook 7 is served too, at /tree. Outside a virtual or conda
# environment it installs into .venv/ (scripts/_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
streamchat_install
streamchat_quickstart
args=(--ServerApp.port_retries=0)
if [ "$(id -u)" = 0 ]; then args+=(--allow-root); fi
exec "$PY" -m jupyter lab "${args[@]}" "$@" "$STREAMCHAT_NOTEBOOK"
