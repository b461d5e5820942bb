#!/bin/sh
# The one test command. README.md's second set-up command and .ci/run both call it.
# Runs the whole suite with the checkout's venv (.venv; override with WEBGATE_PYTHON)
# and exits with pytest's status: non-zero if any test fails, 5 if none ran.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/test_config.py -x
set -eu
cd "$(dirname "$0")/.."
PYTHON=${WEBGATE_PYTHON:-.venv/bin/python}
exec "$PYTHON" -m pytest -q -rfEs "$@"
