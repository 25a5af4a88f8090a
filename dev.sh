#!/usr/bin/env bash
# The one entry point on a fresh machine. It makes .venv and installs edgecnn into it on first use.
#   bash dev.sh demo    the main job: train the embedded MNIST CNN, convert it to every format, verify, print the table
#   bash dev.sh test    what CI runs, two named steps: the test suite, then `test-imx500`;
#                       with arguments, only pytest with those arguments (e.g. bash dev.sh test -m slow)
#   bash dev.sh test-imx500  builds the IMX500 toolchain when it can (cached), then runs the tests marked imx500
#                            (the real conversion); they skip, saying why, when the toolchain cannot be built
#   bash dev.sh bench   the standing benchmark suite (benchmarks/run_suite.py)
#   bash dev.sh imx500-env   the IMX500 toolchain (TensorFlow 2.15 + Sony MCT + imx500-converter) in its own
#                            venv at $EDGECNN_CACHE/imx500-venv (~2.3 GB)
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
    "$VENV/bin/python" -m pip install -q -e '.[convert,dev,cluster]'
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

netns_tools() {
  # The --ray tests run a Ray cluster in a network namespace of its own (`ip netns`, Debian's iproute2).
  command -v ip >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null) \
      || echo "note: could not install iproute2; the Ray cluster tests will be skipped" >&2
  fi
}

IMX500_VENV=${EDGECNN_CACHE:-$HOME/.cache/edgecnn}/imx500-venv
IMX500_REQ=converters/imx500_requirements.txt

imx500_base_python() {
  # TensorFlow 2.15 installs on Python 3.9-3.11 only.
  local c
  for c in "${EDGECNN_IMX500_BASE_PYTHON:-}" python3.11 python3.10 python3.9 "$HOME"/.pyenv/versions/3.11*/bin/python3 python3; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] <= (3, 11)))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

imx500_env() {
  # Built once and kept (the stamp is the requirements it was built from); a lock keeps two builds apart.
  local stamp="$IMX500_VENV/.edgecnn-requirements" py
  mkdir -p "$(dirname "$IMX500_VENV")"
  exec 9>"$IMX500_VENV.lock"; flock 9
  if [ -x "$IMX500_VENV/bin/imxconv-tf" ] && cmp -s "$IMX500_REQ" "$stamp"; then flock -u 9; return 0; fi
  py=$(imx500_base_python) || { echo "no Python 3.9-3.11 to build the IMX500 toolchain with (set EDGECNN_IMX500_BASE_PYTHON)"; flock -u 9; return 1; }
  if ! command -v java >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null) || true
  fi
  echo "building the IMX500 toolchain in $IMX500_VENV with $py (~2.3 GB)" >&2
  rm -rf "$IMX500_VENV"
  if "$py" -m venv "$IMX500_VENV" && "$IMX500_VENV/bin/python" -m pip install -q -r "$IMX500_REQ"; then
    cp "$IMX500_REQ" "$stamp"; rm -f "$IMX500_VENV.unavailable"; flock -u 9; return 0
  fi
  flock -u 9; return 1
}

imx500_env_for_tests() {
  # CI exercises the real conversion when the toolchain can be built; otherwise the imx500 tests skip and say why.
  local log="$IMX500_VENV.build.log"
  if imx500_env >"$log" 2>&1; then return 0; fi
  { echo "the IMX500 toolchain could not be built: $(grep -v '^ *$' "$log" | tail -n 1 | cut -c1-200) (log: $log)"; } \
    > "$IMX500_VENV.unavailable"
  echo "note: $(cat "$IMX500_VENV.unavailable"); imx500 tests will be skipped" >&2
}

step() {
  # A named step and its wall time, so a CI log says what ran and how long it took.
  local name=$1 start=$SECONDS rc=0
  shift
  echo "== step: $name" >&2
  "$@" || rc=$?
  echo "== step: $name: $((SECONDS - start)) s, exit $rc" >&2
  return $rc
}

test_imx500() {
  step "imx500 toolchain (build or reuse $IMX500_VENV)" imx500_env_for_tests
  step "imx500 tests (-m imx500)" "$VENV/bin/python" -m pytest -q -rs -m imx500 "$@"
}

sshd() {
  # The fleet tests (bench --host, deploy) run a real OpenSSH server on 127.0.0.1 (Debian's openssh-server).
  [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client openssh-server \
      >/dev/null) || echo "note: could not install openssh-server; the fleet tests will be skipped" >&2
  fi
}

case "${1:-}" in
  demo)  setup; shift; exec "$VENV/bin/edgecnn" convert --out edgecnn-out/demo --force "$@" ;;
  test)  setup; browser; netns_tools; sshd; shift
         [ $# -eq 0 ] || exec "$VENV/bin/python" -m pytest -q "$@"
         rc=0
         step "test suite" "$VENV/bin/python" -m pytest -q || rc=$?
         test_imx500 || rc=$?   # run even after a failed suite: both results are reported
         exit $rc ;;
  test-imx500) setup; shift; test_imx500 "$@" ;;
  bench) setup; shift; exec "$VENV/bin/python" benchmarks/run_suite.py "$@" ;;
  imx500-env) imx500_env && echo "IMX500 toolchain ready: $IMX500_VENV/bin/python" ;;
  arm64) setup; shift; exec "$VENV/bin/python" -m tools.arm64emu "$@" ;;
  *) echo "usage: bash dev.sh demo|test|test-imx500|bench|imx500-env|arm64 [args]" >&2; exit 2 ;;
esac
