#!/usr/bin/env bash
# Notifier benchmark, release build, everything on 127.0.0.1 with a fake Bot API and
# Telegram rate limits off:
#  (a) alerts/s from the bus through the SQLite outbox to sendMessage, beside a peer that
#      sends the same 10,000 messages straight to the fake with no outbox;
#  (b) restart with 10,000 pending outbox rows: time to ready, first and last delivery.
# The benchmark is benches/bench_notify.rs (harness = false; `cargo test` only builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cargo bench --locked --bench bench_notify 2>&1 \
  | grep -E '^BENCH|test result|panicked' | sed 's/^BENCH //'
