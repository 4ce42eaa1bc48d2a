#!/usr/bin/env bash
# Install this checkout and open JupyterLab on the quickstart notebook; extra arguments go to
# `jupyter lab`. Outside a virtual or conda environment it installs into .venv/ (scripts/_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
streamchat_install
args=(--ServerApp.port_retries=0)
if [ "$(id -u)" = 0 ]; then args+=(--allow-root); fi
exec "$PY" -m jupyter lab "${args[@]}" "$@" notebooks/quickstart.ipynb
