#!/usr/bin/env bash
# Set up the environment if needed, then run the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest -q "$@"
