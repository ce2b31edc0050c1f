#!/usr/bin/env bash
# SLA sampling benchmark, release build, on 127.0.0.1:
#  (a) CPU and wall time per sample cycle with 50 SLAs;
#  (b) database growth per series per day of history (15 s samples).
# The benchmark is tests/bench_sla.rs (ignored in the normal test run).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cargo test --release --locked --test bench_sla -- --ignored --nocapture 2>&1 \
  | grep -E '^BENCH|test result|panicked' | sed 's/^BENCH //'
