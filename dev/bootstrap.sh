# Sourced by run.sh and test.sh: installs what the project needs on a fresh machine, once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv (Python $(python3 -c 'import sys; print(sys.version.split()[0])'))"
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing Python packages from requirements-dev.txt (first run: a few minutes)"
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -q -r requirements-dev.txt
  touch "$stamp"
fi
if [ ! -x node_modules/.bin/azurite-table ]; then
  echo "[setup] installing Azurite (npm) for local Table Storage"
  npm install --no-audit --no-fund --loglevel=error
fi
