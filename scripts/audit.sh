#!/usr/bin/env bash
# Checks the dependency tree against the RustSec advisory database
# (`cargo deny check advisories`). Needs the network to fetch the database, which is why
# CI (offline) runs only `cargo deny check bans licenses sources`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked cargo-deny
cargo deny --locked check advisories
