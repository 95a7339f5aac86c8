#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it: set-up, lint, types, tests.
# Root-only tests skip on a laptop; with CI=true a skip of such a test fails the run.
# The install story is one of the tests (tests/test_install.py): it builds the wheel and the sdist
# with `python -m build` and installs the wheel into a fresh venv on Debian's libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check jailshim tests bench scripts
.venv/bin/ruff format --check jailshim tests bench scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
