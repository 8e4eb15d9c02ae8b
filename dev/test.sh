#!/usr/bin/env bash
# Lint, type-check and run every test (installs what it needs first). Extra arguments go to pytest.
source "$(dirname "$0")/bootstrap.sh"
echo "[lint] ruff check + ruff format --check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[types] mypy --strict shared/"
.venv/bin/mypy --strict shared
echo "[tests] pytest"
exec .venv/bin/pytest "$@"
