#!/usr/bin/env bash
# Make the machine ready: system packages the project needs, then .venv with the project and its
# dev tools.  Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -e /usr/lib/x86_64-linux-gnu/libzbar.so.0 ] || ldconfig -p 2>/dev/null | grep -q 'libzbar.so.0' || need+=(libzbar0)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# The browser tests drive Debian's chromium through Playwright (Playwright's own download is not
# reachable from every machine).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Reports embed DejaVu Sans (PDF/A); the standards tests read PDFs back with pdftotext.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
command -v pdftotext >/dev/null 2>&1 || need+=(poppler-utils)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup: need system packages: ${need[*]}; not root and no sudo: install them and re-run" >&2
    exit 1
  fi
  echo "setup: installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=.venv/.setup-stamp
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the project and its dev tools into .venv"
  log=.venv/setup.log
  if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip \
         && .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'; } >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" | tail -n 30 >&2
    echo "setup: pip install failed (full log: $log)" >&2
    exit 1
  fi
  .venv/bin/python -c 'import ebr_core, sqlalchemy, fastapi, pyzbar.pyzbar, cv2, zxingcpp, serial, paho.mqtt' \
    || { echo "setup: the project's packages did not install" >&2; exit 1; }
  touch "$stamp"
fi
