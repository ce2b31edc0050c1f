#!/usr/bin/env bash
# The load benchmark, meteomesh beside Debian's mosquitto in one run (benches/bench_load.rs):
#  (a) broker fan-in 8→1 and fan-out 1→8 at full speed, QoS 0 and 1, plus latency at a
#      paced 1,000 msg/s: msg/s, p50/p99, ratio to mosquitto; password logins and ACLs on
#      both;
#  (b) 1,000 MQTT clients connected and subscribed: memory per client, both brokers;
#  (c) HTTP API requests/s: subscription listing, /healthz, login (Argon2id);
#  (d) a 10-minute soak (METEOMESH_BENCH_SOAK_SECS) at 200 msg/s QoS 1 + 20 HTTP req/s:
#      RSS must not grow after the first minute.
# It measures the shipped static x86_64 binary (dist/, built with scripts/build-arm.sh
# when missing) and writes target/bench/bench.md. The run takes ~12 minutes once built;
# building the binary and the benchmark client the first time takes ~10 more.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${METEOMESH_BENCH_BIN:-dist/meteomesh-x86_64-unknown-linux-musl}
[ -x "$BIN" ] || scripts/build-arm.sh x86_64 >/dev/null
command -v mosquitto_passwd >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
# 1,000 clients plus the broker's own sockets.
ulimit -n 8192
cargo bench --locked --bench bench_load --no-run 2>&1 | tail -n 1
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -m | awk '/Mem:/ {print $2}') MiB"
start=$(date +%s)
METEOMESH_BENCH_BIN=$(realpath "$BIN") cargo bench --locked --bench bench_load 2>&1 | grep -E 'BENCH|test result|panicked' | sed 's/^.*BENCH //'
echo "benchmark run: $(( $(date +%s) - start )) s"
