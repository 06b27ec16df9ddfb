#!/usr/bin/env bash
# Set everything up and run the main job on an embedded local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/moldau local demo "$@"
