#!/usr/bin/env bash
# Create .venv (if missing) and install moldau into it with the given extras, e.g. "test".
# Usage: source scripts/setup.sh [extras]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "Error: moldau needs Python 3.11 or newer as '$PY' (set PYTHON=...)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv .venv 2>/dev/null; then
        # Debian splits venv out of the interpreter package
        echo "python venv module missing; installing python3-venv" >&2
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
        rm -rf .venv
        "$PY" -m venv .venv
    fi
fi
extras="${1:-}"
target="."
[ -n "$extras" ] && target=".[${extras}]"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$target"
