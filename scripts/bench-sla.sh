#!/usr/bin/env bash
# SLA sampling benchmark, release build, on 127.0.0.1:
#  (a) CPU and wall time per sample cycle with 50 SLAs;
#  (b) database growth per series per day of history (15 s samples).
# The benchmark is benches/bench_sla.rs (harness = false; `cargo test` only builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cargo bench --locked --bench bench_sla 2>&1 \
  | grep -E '^BENCH|test result|panicked' | sed 's/^BENCH //'
