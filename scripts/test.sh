#!/usr/bin/env bash
# Set up the environment if needed, then run the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh"
cd "$ROOT"
# Two workers (one per core of the project's machines), each test file on one
# worker so module fixtures are built once: ~8 min instead of ~10 serially.
exec "$VENV/bin/python" -m pytest -q -n "${MTLJAX_TEST_WORKERS:-2}" \
  --dist loadfile "$@"
