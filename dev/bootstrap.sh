# Sourced by run.sh and test.sh: installs what the project needs on a fresh machine, once, and says what it is
# doing while it does (pip and npm print their own progress).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Debian packages, as root or through sudo.
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "[setup] installing $* needs root or sudo" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -q && $sudo apt-get install -y -q "$@"
}
# A venv without pip (a run that failed half-way) is made again.
if [ ! -x .venv/bin/pip ]; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    echo "[setup] installing python3-venv (Debian package): venv needs ensurepip, which Debian ships apart"
    apt_install python3-venv
  fi
  rm -rf .venv
  echo "[setup] creating .venv (Python $(python3 -c 'import sys; print(sys.version.split()[0])'))"
  python3 -m venv .venv
fi
# One lock for local runs, tests and CI: requirements-dev.txt pins every package (the runtime ones at the versions
# requirements.txt gives Azure) with hashes, so pip installs exactly the tested files or nothing.
stamp=".venv/.installed-$(sha1sum requirements-dev.txt | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing $(grep -c '^[A-Za-z0-9]' requirements-dev.txt) Python packages pinned in requirements-dev.txt" \
    "(hash-checked; first run: about a minute)"
  .venv/bin/python -m pip install --disable-pip-version-check --require-hashes -r requirements-dev.txt
  touch "$stamp"
  echo "[setup] Python packages installed"
fi
if [ ! -x node_modules/.bin/azurite-table ]; then
  echo "[setup] installing Azurite (npm ci, package-lock.json) for local Table Storage"
  # Azurite 3.37 declares Node 22; it runs on 20 (the tests here use 20.20), so those warnings are noise.
  npm ci --no-audit --no-fund 2>&1 | sed '/npm warn EBADENGINE/d'
  echo "[setup] Azurite installed"
fi
