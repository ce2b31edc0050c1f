#!/usr/bin/env bash
# Alert pipeline benchmark, release build, everything on 127.0.0.1 (fake provider):
#  (a) 10,000 subscriptions over 1,000 places: provider calls per cycle (the seed made
#      one call per subscription: 10,000), evaluation time per cycle, peak RSS;
#  (b) observation published -> alert received by an external MQTT subscriber,
#      p50/p99 over 1,000 alerts.
# The benchmark is tests/bench_alerts.rs (ignored in the normal test run).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cargo test --release --locked --test bench_alerts -- --ignored --nocapture 2>&1 \
  | grep -E '^BENCH|test result|panicked' | sed 's/^BENCH //'
