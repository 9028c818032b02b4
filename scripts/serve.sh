#!/usr/bin/env bash
# One command from a fresh clone to Swagger UI at http://localhost:3000/docs:
# sets up .venv and the default model pack, then serves the API with its own Triton server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${FACE_VENV:-.venv}/bin/python" app.py "$@"
