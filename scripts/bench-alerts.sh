#!/usr/bin/env bash
# Alert pipeline benchmark, release build, everything on 127.0.0.1 (fake provider):
#  (a) 10,000 subscriptions over 1,000 places: provider calls per cycle (the seed made
#      one call per subscription: 10,000), evaluation time per cycle, peak RSS;
#  (b) observation published -> alert received by an external MQTT subscriber,
#      p50/p99 over 1,000 alerts.
# The benchmark is benches/bench_alerts.rs (harness = false; `cargo test` only builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cargo bench --locked --bench bench_alerts 2>&1 \
  | grep -E '^BENCH|test result|panicked' | sed 's/^BENCH //'
