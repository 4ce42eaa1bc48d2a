# Sourced by start.sh and test.sh (from the checkout's root): choose the Python environment,
# install this checkout into it, and set PY to its interpreter.
#
#   streamchat_install [EXTRAS]     e.g. streamchat_install test
#
# Run inside a virtual environment or a conda environment, the checkout is installed there
# (`pip install -e .`), every time. Otherwise the scripts use a virtual environment of their own,
# .venv/ in the checkout (a system Python may refuse `pip install`: PEP 668), and skip
# `pip install` while nothing that goes into the install has changed since the last one; a stamp
# in .venv/ records what was installed.

STREAMCHAT_ROOT="$(pwd)"
STREAMCHAT_VENV="$STREAMCHAT_ROOT/.venv"
STREAMCHAT_STAMP="$STREAMCHAT_VENV/.streamchat-install"

_streamchat_fail() { echo "$*" >&2; exit 1; }

# What goes into an install of the checkout: the project metadata, the front end's sources and
# lock file, the Jupyter config it installs, and where the checkout is. Python sources are not
# in it: an editable install picks them up as they are.
_streamchat_inputs_hash() {
    "$PY" - <<'EOF'
import hashlib, os, sys
from pathlib import Path

h = hashlib.sha256(f"{sys.version}\n{Path.cwd()}\n".encode())
files = [Path("pyproject.toml"), Path("install.json")]
js = Path("js")
files += [js / name for name in ("package.json", "package-lock.json", "build.mjs", "tsconfig.json")]
for folder in (js / "src", Path("jupyter-config")):
    files += sorted(p for p in folder.rglob("*") if p.is_file())
for path in files:
    h.update(f"\0{path}\0".encode())
    if path.is_file():
        h.update(path.read_bytes())
print(h.hexdigest())
EOF
}

_streamchat_check_python() {
    command -v python3 >/dev/null || _streamchat_fail "python3 not found: Python 3.10 or newer is needed."
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        _streamchat_fail "Python 3.10 or newer is needed; python3 is $(python3 -V 2>&1)."
}

_streamchat_check_npm() {
    # `pip install` of a checkout builds the front end (js/) with npm.
    if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
        _streamchat_fail "Node.js 18+ and npm are needed to build the front end of a checkout (js/)."
    fi
}

# 0: python3 runs in an environment of the user's own (virtual or conda), not in .venv/.
_streamchat_in_env() {
    python3 -c 'import os, sys
own = os.path.realpath(sys.prefix) == os.path.realpath(sys.argv[1])
venv = sys.prefix != sys.base_prefix or bool(os.environ.get("VIRTUAL_ENV"))
conda = os.path.isdir(os.path.join(sys.prefix, "conda-meta"))
sys.exit(own or not (venv or conda))' "$STREAMCHAT_VENV"
}

_streamchat_make_venv() {
    # A venv that cannot run, or was made for a checkout elsewhere (its scripts name the old
    # path), is made anew.
    if "$STREAMCHAT_VENV/bin/python" -c '' 2>/dev/null &&
       grep -qF "$STREAMCHAT_VENV/bin/python" "$STREAMCHAT_VENV/bin/pip" 2>/dev/null; then
        return 0
    fi
    local clear=()
    if [[ -e "$STREAMCHAT_VENV/bin/python" ]]; then clear=(--clear); fi
    echo "Making the virtual environment .venv/ with $(python3 -V 2>&1)..."
    if ! python3 -m venv ${clear[@]+"${clear[@]}"} "$STREAMCHAT_VENV"; then
        _streamchat_fail "Could not make a virtual environment: install Python's venv module" \
            "(on Debian or Ubuntu: apt-get install python3-venv), or run this inside an" \
            "environment of your own (virtual or conda)."
    fi
}

streamchat_install() {
    local extras="${1:-}" spec="."
    if [[ -n "$extras" ]]; then spec=".[$extras]"; fi
    _streamchat_check_python

    if _streamchat_in_env; then
        PY=python3
        _streamchat_check_npm
        echo "Installing this checkout into your environment (pip install -e \"$spec\"): the Python"
        echo "packages, and the front end, built with npm the first time (a minute or more; later runs"
        echo "reuse the built front end while it exists)."
        "$PY" -m pip install -q -e "$spec"
        return 0
    fi

    echo "Python environment: .venv/ in this checkout (no virtual or conda environment of your own is active)."
    mkdir -p "$STREAMCHAT_VENV"
    # One install at a time into .venv/ (the lock is released when the shell exits or on `9>&-`).
    if command -v flock >/dev/null; then
        exec 9>"$STREAMCHAT_VENV/.streamchat-lock"
        flock 9
    fi
    _streamchat_make_venv
    export VIRTUAL_ENV="$STREAMCHAT_VENV"
    export PATH="$STREAMCHAT_VENV/bin:$PATH"
    unset PYTHONHOME
    PY="$STREAMCHAT_VENV/bin/python"

    local hash stamped_hash="" stamped_extras="" installed=""
    hash="$(_streamchat_inputs_hash)"
    if [[ -f "$STREAMCHAT_STAMP" ]]; then
        { read -r stamped_hash; read -r stamped_extras; } <"$STREAMCHAT_STAMP" || true
    fi
    if [[ "$hash" == "$stamped_hash" ]]; then installed="$stamped_extras"; fi
    if [[ "$hash" == "$stamped_hash" && ( -z "$extras" || " $installed " == *" $extras "* ) &&
          -f jupyter_streamchat/widget/static/widget.js && -f jupyter_streamchat/widget/static/widget.css &&
          -f jupyter_streamchat/labextension/package.json ]]; then
        echo "Nothing changed since the last install into .venv/: skipping pip install."
    else
        _streamchat_check_npm
        rm -f "$STREAMCHAT_STAMP"
        echo "Installing this checkout into .venv/ (pip install -e \"$spec\"): the Python packages,"
        echo "and the front end, built with npm. This takes a minute or more, and only happens once:"
        echo "later starts skip it while pyproject.toml and js/ stay as they are."
        "$PY" -m pip install -q -e "$spec"
        if [[ -n "$extras" && " $installed " != *" $extras "* ]]; then
            installed="${installed:+$installed }$extras"
        fi
        hash="$(_streamchat_inputs_hash)"    # npm may have rewritten js/package-lock.json
        printf '%s\n%s\n' "$hash" "$installed" >"$STREAMCHAT_STAMP"
    fi
    exec 9>&-
}

# The notebook start.sh opens: the user's own copy of the quickstart, notebooks/my-quickstart.ipynb
# (git-ignored), made from notebooks/quickstart.ipynb the first time and kept as the user left it
# after that, so that using it (autosave, inserted code) never changes the tracked example that
# the tests run. Sets STREAMCHAT_NOTEBOOK to its path.
streamchat_quickstart() {
    STREAMCHAT_NOTEBOOK=notebooks/my-quickstart.ipynb
    if [[ ! -e "$STREAMCHAT_NOTEBOOK" ]]; then
        cp notebooks/quickstart.ipynb "$STREAMCHAT_NOTEBOOK"
        echo "Made $STREAMCHAT_NOTEBOOK, your own copy of the quickstart (git-ignored; delete it to start afresh)."
    fi
}
