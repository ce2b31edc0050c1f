#!/usr/bin/env bash
# Builds stripped, statically linked (musl) release binaries with cargo-zigbuild.
#
#   scripts/build-arm.sh                 # aarch64, armv7, armv6 and x86_64
#   scripts/build-arm.sh aarch64 armv7   # a subset (short names or full triples)
#
# Output: dist/meteomesh-<triple> and dist/SHA256SUMS.
# When `rustup target add` cannot install a target's std (armv7/armv6 on some mirrors),
# the script builds std from source with nightly (-Zbuild-std) instead.
set -euo pipefail
cd "$(dirname "$0")/.."

triple() {
  case "$1" in
    aarch64) echo aarch64-unknown-linux-musl ;;
    armv7) echo armv7-unknown-linux-musleabihf ;;
    armv6) echo arm-unknown-linux-musleabihf ;;
    x86_64) echo x86_64-unknown-linux-musl ;;
    *) echo "$1" ;;
  esac
}

if [ $# -eq 0 ]; then set -- aarch64 armv7 armv6 x86_64; fi

if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -m ziglang version >/dev/null 2>&1; then
  echo "==> installing ziglang and cargo-zigbuild (pip)"
  python3 -m pip install --quiet ziglang cargo-zigbuild
fi

mkdir -p dist
for name in "$@"; do
  target=$(triple "$name")
  echo "==> $target"
  if rustup target add "$target" >/dev/null 2>&1; then
    cargo zigbuild --locked --release --target "$target"
  else
    echo "    (no prebuilt std for $target here; building std from source with nightly)"
    rustup component add rust-src --toolchain nightly >/dev/null
    # rustc passes this (empty) folder to the linker; create it to avoid a warning.
    mkdir -p "$(rustc +nightly --print sysroot)/lib/rustlib/$target/lib"
    # zig provides the musl C runtime, so rustc's self-contained copy is not linked.
    RUSTFLAGS="-C link-self-contained=no ${RUSTFLAGS:-}" \
      cargo +nightly zigbuild --locked --release --target "$target" -Zbuild-std=std,panic_abort
  fi
  cp "target/$target/release/meteomesh" "dist/meteomesh-$target"
done

(cd dist && sha256sum meteomesh-* > SHA256SUMS)
echo "==> dist/"
ls -l dist
