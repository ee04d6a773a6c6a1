#!/usr/bin/env bash
# Create .venv with the exact pins of requirements.lock; a second run with an unchanged lock does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp="$VENV/.lock-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  echo "setup: $VENV is up to date with requirements.lock"
  exit 0
fi
echo "setup: installing requirements.lock into $VENV (about 2 minutes the first time)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements.lock
# cleverhans' declared dependencies are TensorFlow-era; its torch attacks need only torch and numpy.
"$VENV/bin/python" -m pip install -q --no-deps cleverhans==4.0.0
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
rm -f "$VENV"/.lock-*
touch "$stamp"
echo "setup: done"
