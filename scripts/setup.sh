#!/usr/bin/env bash
# Creates .venv, installs the pinned dependencies and puts the default model pack into
# model_repository/. Idempotent: a second run only checks what is already there.
#   bash scripts/setup.sh          service dependencies
#   bash scripts/setup.sh --dev    plus tests, accuracy and benchmark dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${FACE_VENV:-.venv}"
INSIGHTFACE_VERSION="2.1"

# The Python version is declared once, in pyproject.toml (requires-python = ">=3.X").
minimum=$(sed -n 's/^requires-python = ">=\([0-9.]*\)"/\1/p' pyproject.toml)
if ! "$PYTHON" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$minimum'.split('.'))))"; then
  echo "setup.sh: Python >= $minimum is needed (pyproject.toml); $PYTHON is $("$PYTHON" -V 2>&1)." \
    "Set PYTHON=/path/to/python3.X" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

requirements=requirements.txt
[ "${1:-}" = "--dev" ] && requirements=requirements-dev.txt
stamp="$VENV/.installed-$(sha256sum "$requirements" requirements.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet -r "$requirements"
  if [ "$requirements" = requirements-dev.txt ]; then
    # The reference implementation for parity tests and benchmarks; see requirements-dev.txt.
    "$VENV/bin/python" -m pip install --quiet --no-deps "insightface==$INSIGHTFACE_VERSION"
  fi
  touch "$stamp"
fi
# The project itself (face_service and the top-level entry modules), editable: tests and bench
# scripts import it from anywhere, and console scripts land in $VENV/bin.
project_stamp="$VENV/.project-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$project_stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --no-deps --editable .
  touch "$project_stamp"
fi

# The browser tests (tests/integration/test_web_*.py) drive Debian's chromium: no browser
# download of Playwright's own, which a machine without internet could not fetch.
if [ "${1:-}" = "--dev" ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else
    echo "setup.sh: the browser tests need chromium: sudo apt-get install -y chromium" >&2
  fi
fi

"$VENV/bin/python" extract_insightface_models.py ${FACE_MODEL_PACK:+--pack "$FACE_MODEL_PACK"}
