#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets, cargo-fuzz + libFuzzer on nightly) for a
# bounded time each, starting from the committed seed corpora in fuzz/corpus. New inputs
# go to a scratch copy, so the committed corpora change only when you copy findings in.
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 30         # 30 s per target (what CI runs)
#   scripts/fuzz.sh 600 http_api   # one target, 10 minutes
#
# A crash stops the script with the input saved under fuzz/artifacts/<target>/; replay it
# with `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(weather_responses telegram_responses bus_payloads topic_acl config_toml http_api mqtt_inputs)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz

cd fuzz
cargo +nightly fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  cp -r "corpus/$t/." "$scratch/$t/"
  echo "==> $t for ${seconds}s"
  # The app-level targets run a whole node in-process: more memory, and no per-input
  # leak check (the node's own tasks allocate session buffers while an input runs, which
  # LeakSanitizer would blame on that input).
  extra=()
  case $t in http_api | mqtt_inputs) extra=(-detect_leaks=0) ;; esac
  if ! cargo +nightly fuzz run -O "$t" "$scratch/$t" -- \
    -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=30 \
    -print_final_stats=1 "${extra[@]}" >"$scratch/$t.log" 2>&1; then
    tail -n 60 "$scratch/$t.log" >&2
    echo "fuzz target $t found a crash; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$scratch/$t.log" | tr '\n' ' '
  echo
done
echo "fuzzing done: ${#targets[@]} targets, ${seconds}s each"
