#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the integration tests (one binary, tests/it/),
# which start the real server on loopback ports and, for external-broker mode, Debian's
# Mosquitto. Benchmarks in benches/ are only built here (cargo bench runs them).
# The browser test is separate: scripts/test-browser.sh.
#
#   scripts/test.sh              # everything
#   scripts/test.sh bus::        # extra arguments go to `cargo test` (here a filter)
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests use Debian's mosquitto (external-broker mode), mosquitto_sub (a third-party
# client) and libfaketime; install them when missing and this runs as root
# (METEOMESH_TEST_STRICT=1, as CI sets, makes a missing libfaketime fail the clock test
# instead of skipping it). The full-disk test mounts a small tmpfs, which needs root; where
# that is refused it prints SKIPPED and the storage.max_size test still covers SQLITE_FULL.
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
# libfaketime moves the server's wall clock in the clock-jump test (tests/it/faults.rs).
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || need+=(faketime)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${need[*]} (Debian packages) for the tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "The tests need: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

# --all-targets: unit and integration tests (this crate has no doc tests to run).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --all-targets "$@" 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log" \
  | tee "${METEOMESH_TEST_SUMMARY:-/dev/null}"
