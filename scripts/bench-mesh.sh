#!/usr/bin/env bash
# Mesh benchmark, release build, real node processes on 127.0.0.1:
#  (a) fire_send messages/s and p50/p99 latency from a user on A to a user on C across a
#      3-node chain A-B-C, beside the same load between two users of one node; copies
#      delivered twice (must be 0);
#  (b) 20 SIGKILLs of the node a client is on: detection p50/p99, reconnection, and
#      the messages queued during the outages (all must arrive).
# The benchmark is benches/bench_mesh.rs (harness = false; `cargo test` only builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cargo bench --locked --bench bench_mesh 2>&1 \
  | grep -E 'BENCH|test result|panicked' | sed 's/^.*BENCH //'
