#!/usr/bin/env bash
# Lint, type-check and run every test (installs what it needs first). Extra arguments go to pytest.
source "$(dirname "$0")/bootstrap.sh"
# The status page is tested in a real headless browser: Debian's Chromium (never a browser download).
if [ ! -x /usr/bin/chromium ]; then
  echo "[setup] installing Chromium (Debian package) for the browser test of the status page"
  apt_install chromium
fi
echo "[lint] ruff check + ruff format --check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[types] mypy --strict shared/"
.venv/bin/mypy --strict shared
echo "[tests] pytest"
exec .venv/bin/pytest "$@"
