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

# The interpreter: $PYTHON if set; else the newest Python 3.12 the machine has (on PATH or under
# pyenv, whose shims answer only for the selected version); else python3 (3.11 or newer).  3.12
# is preferred for coverage's sys.monitoring core: it measures make test's coverage for about 3 %
# more time, where 3.11's tracer doubled the CPU-bound tests (docs/architecture.md, "Tests").
pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  local c roots
  roots=$(printf '%s\n' "${PYENV_ROOT:-}" "${HOME:+$HOME/.pyenv}" "$(pyenv root 2>/dev/null || true)" \
          | grep . | sort -u || true)
  for c in /usr/bin/python3.12 /usr/local/bin/python3.12 $(for r in $roots; do
             ls -d "$r"/versions/3.12.*/bin/python3.12 2>/dev/null; done | sort -V -r); do
    if [ -x "$c" ] && "$c" -c 'import venv, ensurepip' >/dev/null 2>&1; then echo "$c"; return; fi
  done
  echo python3
}
pyver() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
PY=$(pick_python)
want=$(pyver "$PY") || { echo "setup: cannot run $PY (set PYTHON to a Python 3.11 or newer)" >&2; exit 1; }
[ "$(printf '%s\n' 3.11 "$want" | sort -V | head -n 1)" = 3.11 ] \
  || { echo "setup: $PY is Python $want; the project needs 3.11 or newer (set PYTHON)" >&2; exit 1; }
stamp=.venv/.setup-stamp
if [ -x .venv/bin/python ]; then
  have=$(pyver .venv/bin/python || echo none)
  if [ "$have" != "$want" ]; then
    echo "setup: .venv has Python $have, $PY is $want: recreating .venv"
    rm -rf .venv
  fi
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv (Python $want)"
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
