#!/usr/bin/env bash
# Install what the tests need and run them all.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
exec python3 -m pytest "$@"
