#!/usr/bin/env bash
# Browser test: headless Chromium (Debian's `chromium`) driven by playwright-core
# registers, logs out, logs in and checks the account page of a real meteomesh started
# on 127.0.0.1 with a temporary database. Saves target/browser/account.png.
# Installs chromium (apt, as root) and playwright-core (npm) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing chromium (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "needs Debian's chromium: sudo apt-get install chromium" >&2; exit 1
  fi
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
cargo build --locked --quiet

out=$PWD/target/browser
mkdir -p "$out"
dir=$(mktemp -d)
log="$dir/log"
(
  cd "$dir"
  export METEOMESH__HTTP__LISTEN=127.0.0.1:0 METEOMESH__BUS__TCP_LISTEN=127.0.0.1:0 \
    METEOMESH__BUS__WS_LISTEN=127.0.0.1:0 NO_COLOR=1
  exec "$OLDPWD/target/debug/meteomesh" > "$log" 2>&1
) &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 300); do
  grep -q "meteomesh ready" "$log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "meteomesh exited early"; exit 1; }
  sleep 0.1
done
http=$(grep "meteomesh ready" "$log" | grep -o ' http=[^ ]*' | cut -d= -f2)
[ -n "$http" ] || { cat "$log"; echo "meteomesh not ready"; exit 1; }

timeout 120 node tests/browser/account.mjs "http://$http" "$out"

kill -TERM "$pid"
wait "$pid"
