#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the integration tests in tests/, which start
# the real server on loopback ports and, for external-broker mode, Debian's Mosquitto.
# Installs Mosquitto with apt when it is missing and this runs as root.
#
#   scripts/test.sh              # everything
#   scripts/test.sh --test bus   # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing mosquitto (Debian package) for the external-broker tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  else
    echo "The external-broker tests need Mosquitto: sudo apt-get install mosquitto" >&2
    exit 1
  fi
fi

# --all-targets: unit and integration tests (this crate has no doc tests to run).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --all-targets "$@" 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log" \
  | tee "${METEOMESH_TEST_SUMMARY:-/dev/null}"
