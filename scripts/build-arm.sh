#!/usr/bin/env bash
# Builds stripped, statically linked (musl) release binaries with cargo-zigbuild.
#
#   scripts/build-arm.sh                 # aarch64, armv7, armv6 and x86_64
#   scripts/build-arm.sh aarch64 armv7   # a subset (short names or full triples)
#
# Output: dist/meteomesh-<triple> and dist/SHA256SUMS. Needs nightly Rust with rust-src
# (installed by the script when missing) unless METEOMESH_STABLE=1.
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

# Release builds are size-optimised: std is rebuilt (nightly -Zbuild-std) with
# optimize_for_size, panics abort at once (no unwinding or message machinery; meteomesh
# does not use panics for control flow, and panic=abort already ends the process),
# no unwind tables and no panic locations. That is about 1.3 MiB less for aarch64 than a
# stable build. The C parts (SQLite, ring) are compiled without unwind tables too, as
# nothing unwinds through them (~80 KiB); the SQLite extensions left out are set in
# .cargo/config.toml, for tests and release alike. METEOMESH_STABLE=1 builds with stable
# Rust instead (bigger binary; needs a prebuilt std for the target).
size_flags="-C link-self-contained=no -Zlocation-detail=none -Zunstable-options -Cpanic=immediate-abort -Cforce-unwind-tables=no"
mkdir -p dist
for name in "$@"; do
  target=$(triple "$name")
  echo "==> $target"
  export "CFLAGS_${target//-/_}=-fno-unwind-tables -fno-asynchronous-unwind-tables"
  if [ "${METEOMESH_STABLE:-0}" = 1 ]; then
    rustup target add "$target" >/dev/null
    cargo zigbuild --locked --release --target "$target"
  else
    rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || true
    rustup component add rust-src --toolchain nightly >/dev/null
    # rustc passes this (empty) folder to the linker; create it to avoid a warning.
    mkdir -p "$(rustc +nightly --print sysroot)/lib/rustlib/$target/lib"
    # zig provides the musl C runtime, so rustc's self-contained copy is not linked.
    RUSTFLAGS="$size_flags ${RUSTFLAGS:-}" \
      cargo +nightly zigbuild --locked --release --target "$target" \
      -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size
  fi
  cp "target/$target/release/meteomesh" "dist/meteomesh-$target"
done

(cd dist && sha256sum meteomesh-* > SHA256SUMS)
echo "==> dist/"
ls -l dist
