#!/usr/bin/env bash
# One command from a fresh clone to Swagger UI at http://localhost:3000/docs:
# sets up .venv and the default model pack, then serves the API with its own Triton server.
# It listens on 127.0.0.1 unless told otherwise: FACE_HOST=0.0.0.0 serves every address, and then
# API keys are required (FACE_AUTH=auto; FACE_ADMIN_KEY or `face-service-keys create`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${FACE_VENV:-.venv}/bin/python" app.py "$@"
