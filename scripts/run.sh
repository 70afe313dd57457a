#!/usr/bin/env bash
# The main job: set up the environment if needed, then run the quick
# reproduction of the seed's claims (pass --full for the full study).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_setup_env.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m mtljax reproduce "$@"
