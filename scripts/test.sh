#!/usr/bin/env bash
# Sets up everything the tests need and runs the whole suite (unit + integration against a real
# Triton server with the real buffalo_s models), then ruff.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
VENV="${FACE_VENV:-.venv}"
"$VENV/bin/python" -m ruff check .
"$VENV/bin/python" -m ruff format --check .
exec "$VENV/bin/python" -m pytest "$@"
