#!/bin/sh
# The one test command. README.md's second set-up command and .ci/run both call it.
# Runs the whole suite with the checkout's venv (.venv; override with WEBGATE_PYTHON) in two
# phases: every test not marked `serial` on two pytest-xdist workers (most of the suite waits on
# real peers and timers, so two workers halve its time on 2 cores), then the `serial` tests (those
# whose figures a busy CPU would skew: loss concealment, 200-call leak, timing) one at a time.
# Exits non-zero if any test fails in either phase, 5 if no test ran at all.
# Extra arguments go to pytest in both phases, e.g. scripts/test.sh tests/test_config.py -x
# (WEBGATE_TEST_WORKERS=0 runs the first phase without xdist, e.g. to debug).
set -u
cd "$(dirname "$0")/.."
PYTHON=${WEBGATE_PYTHON:-.venv/bin/python}
WORKERS=${WEBGATE_TEST_WORKERS:-2}
if [ "$WORKERS" -gt 0 ] 2>/dev/null; then
    PARALLEL="-n $WORKERS"
else
    PARALLEL=""
fi
# shellcheck disable=SC2086
"$PYTHON" -m pytest -q -rfEs $PARALLEL -m "not serial" "$@"
first=$?
"$PYTHON" -m pytest -q -rfEs -m serial "$@"
second=$?
# 5 = "no tests collected": fine for one phase (a file with no serial test), not for both
if [ "$first" -eq 5 ] && [ "$second" -eq 5 ]; then exit 5; fi
if [ "$first" -ne 0 ] && [ "$first" -ne 5 ]; then exit "$first"; fi
if [ "$second" -ne 0 ] && [ "$second" -ne 5 ]; then exit "$second"; fi
exit 0
