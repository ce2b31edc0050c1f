#!/usr/bin/env bash
# Browser tests: headless Chromium (Debian's `chromium`) driven by playwright-core
# against a real meteomesh on 127.0.0.1 with a temporary database and a fake weather
# service (tests/browser/fake_weather.py): register, log out, log in, account page;
# then "My alerts": search a place, add an alert, see it turn cold, delete it; then the
# whiteboard across two mesh nodes (draw, clear, late join, failover when a node dies).
# Saves target/browser/account.png, alerts.png and board-*.png.
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
python3 tests/browser/fake_weather.py > "$dir/fake.port" &
fake=$!
for _ in $(seq 1 100); do [ -s "$dir/fake.port" ] && break; sleep 0.05; done
weather="http://127.0.0.1:$(head -1 "$dir/fake.port")"
(
  cd "$dir"
  export METEOMESH__HTTP__LISTEN=127.0.0.1:0 METEOMESH__BUS__TCP_LISTEN=127.0.0.1:0 \
    METEOMESH__BUS__WS_LISTEN=127.0.0.1:0 NO_COLOR=1 \
    METEOMESH__WEATHER__OPEN_METEO_URL="$weather" METEOMESH__WEATHER__GEOCODING_URL="$weather"
  exec "$OLDPWD/target/debug/meteomesh" > "$log" 2>&1
) &
pid=$!
trap 'kill "$pid" "$fake" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 300); do
  grep -q "meteomesh ready" "$log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "meteomesh exited early"; exit 1; }
  sleep 0.1
done
http=$(grep "meteomesh ready" "$log" | grep -o ' http=[^ ]*' | cut -d= -f2)
[ -n "$http" ] || { cat "$log"; echo "meteomesh not ready"; exit 1; }

timeout 120 node tests/browser/account.mjs "http://$http" "$out"
timeout 120 node tests/browser/alerts.mjs "http://$http" "$out"

kill -TERM "$pid"
wait "$pid"

# Two mesh nodes for the whiteboard: B is seeded with A.
mesh_env() {
  echo METEOMESH__HTTP__LISTEN=127.0.0.1:0 METEOMESH__BUS__TCP_LISTEN=127.0.0.1:0 \
    METEOMESH__BUS__WS_LISTEN=127.0.0.1:0 NO_COLOR=1 METEOMESH__MESH__ENABLED=true \
    METEOMESH__MESH__LINK_PASSWORD=browser-link-password-1 \
    METEOMESH__MESH__SHARED_SECRET=browser-mesh-shared-secret-0123456789
}
start_node() { # DIR PEERS -> prints the pid; log in DIR/log
  mkdir -p "$1"
  (cd "$1" && exec env $(mesh_env) METEOMESH__MESH__PEERS="$2" "$OLDPWD/target/debug/meteomesh" > log 2>&1) &
  echo $!
}
ready_field() { # DIR FIELD
  for _ in $(seq 1 300); do
    grep -q "meteomesh ready" "$1/log" 2>/dev/null && break
    sleep 0.1
  done
  grep "meteomesh ready" "$1/log" | grep -o " $2=[^ ]*" | cut -d= -f2
}
pid_a=$(start_node "$dir/a" "")
http_a=$(ready_field "$dir/a" http)
mqtt_a=$(ready_field "$dir/a" mqtt)
pid_b=$(start_node "$dir/b" "$mqtt_a")
http_b=$(ready_field "$dir/b" http)
trap 'kill "$pid" "$fake" "$pid_a" "$pid_b" 2>/dev/null || true; rm -rf "$dir"' EXIT
[ -n "$http_a" ] && [ -n "$http_b" ] || { cat "$dir/a/log" "$dir/b/log"; echo "mesh nodes not ready"; exit 1; }
timeout 180 node tests/browser/board.mjs "http://$http_a" "http://$http_b" "$pid_a" "$out" \
  || { echo "--- node A"; cat "$dir/a/log"; echo "--- node B"; cat "$dir/b/log"; exit 1; }
kill -TERM "$pid_b"
for _ in $(seq 1 100); do kill -0 "$pid_b" 2>/dev/null || break; sleep 0.1; done
