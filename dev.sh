#!/usr/bin/env bash
# cardiofusion developer entry point: sets up .venv (once, or again when pyproject.toml or
# constraints.txt change) and then runs the demo or the tests.
#
#   bash dev.sh demo [OUT_DIR]     # whole pipeline on the built-in synthetic hospital export
#   bash dev.sh test [PYTEST_ARGS] # the test suite
#   bash dev.sh lint               # ruff (configured in pyproject.toml), run by .ci/run before the tests
#
# PYTHON=python3.12 bash dev.sh ... picks the interpreter (>= 3.11) used to create .venv.
# constraints.txt pins torch so that pip never swaps in another build (see the README).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON_BIN=${PYTHON:-python3}
stamp=.venv/.cardiofusion-installed
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "dev.sh: setting up .venv with $($PYTHON_BIN --version 2>&1)" >&2
    "$PYTHON_BIN" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cardiofusion needs Python >= 3.11 (set PYTHON=...)")'
    "$PYTHON_BIN" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
    touch "$stamp"
fi

# The web page's browser test drives Debian's headless chromium (skipped where it is absent); install it
# once when we may (root + apt), never fatal.
if [ "${1:-}" = test ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ]; then
    echo "dev.sh: installing chromium + chromium-driver for the browser test" >&2
    (apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1; }) \
        || echo "dev.sh: chromium not installed; the browser test will be skipped" >&2
fi

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    demo) exec .venv/bin/cardiofusion demo --out "${1:-runs/demo}" ;;
    test) exec .venv/bin/python -m pytest -q "$@" ;;
    lint) exec .venv/bin/ruff check --no-cache src tests benchmarks "$@" ;;
    *) echo "usage: bash dev.sh demo [OUT_DIR] | bash dev.sh test [PYTEST_ARGS] | bash dev.sh lint" >&2; exit 2 ;;
esac
