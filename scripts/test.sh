#!/usr/bin/env bash
# Set everything up and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
echo "== ruff"
ruff check .
echo "== mypy (strict, pure packages)"
mypy
echo "== pytest"
python -m pytest -q "$@"
