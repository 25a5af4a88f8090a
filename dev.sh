#!/usr/bin/env bash
# The one entry point on a fresh machine. It makes .venv and installs edgecnn into it on first use.
#   bash dev.sh demo    the main job: train the embedded MNIST CNN, convert it to every format, verify, print the table
#   bash dev.sh test    the test suite (what CI runs); extra arguments go to pytest
#   bash dev.sh bench   the standing benchmark suite (benchmarks/run_suite.py)
#   bash dev.sh arm64   the device side on emulated arm64 (Raspberry Pi OS base) against x86; as root
#                       (--cpu cortex-a76 for a Pi 5; `bash dev.sh arm64 --help` for the rest)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${EDGECNN_VENV:-.venv}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

setup() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  local stamp="$VENV/.edgecnn-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[convert,dev]'
    touch "$stamp"
  fi
}

browser() {
  # The web viewer and the HTML report are checked in headless Chromium (Debian's package).
  command -v chromium >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "note: could not install chromium; browser tests will be skipped" >&2
  fi
}

case "${1:-}" in
  demo)  setup; shift; exec "$VENV/bin/edgecnn" convert --out edgecnn-out/demo --force "$@" ;;
  test)  setup; browser; shift; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  bench) setup; shift; exec "$VENV/bin/python" benchmarks/run_suite.py "$@" ;;
  arm64) setup; shift; exec "$VENV/bin/python" -m tools.arm64emu "$@" ;;
  *) echo "usage: bash dev.sh demo|test|bench|arm64 [args]" >&2; exit 2 ;;
esac
