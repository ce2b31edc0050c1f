#!/usr/bin/env bash
# Runs release binaries under qemu-user and checks what a user does first:
# /healthz answers, an account can be registered and its token used, an MQTT publish
# reaches a subscriber through the embedded broker
# (mosquitto_pub/mosquitto_sub with a service account), an anonymous client is refused,
# one weather alert goes end to end (fake Open-Meteo on 127.0.0.1 at 3 °C, a subscription
# with a 5 °C minimum, the alert read by the user over MQTT), and SIGTERM exits 0.
#
#   scripts/smoke-arm.sh                        # dist/ binaries for aarch64 and armv7
#   scripts/smoke-arm.sh dist/meteomesh-x86_64-unknown-linux-musl
#
# Needs: qemu-user (qemu-aarch64, qemu-arm), mosquitto-clients, curl, python3.
# Everything listens on 127.0.0.1 with ports chosen by the kernel.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -eq 0 ]; then
  set -- dist/meteomesh-aarch64-unknown-linux-musl dist/meteomesh-armv7-unknown-linux-musleabihf
fi

runner_for() {
  case "$(file -b "$1")" in
    *aarch64*) echo qemu-aarch64 ;;
    *ARM*) echo qemu-arm ;;
    *x86-64*) echo "" ;;
    *) echo "unknown architecture: $(file -b "$1")" >&2; return 1 ;;
  esac
}

# The fake weather service (tests/browser/fake_weather.py) for the alert check.
weather_log=$(mktemp)
python3 tests/browser/fake_weather.py > "$weather_log" 2>/dev/null &
weather_pid=$!
trap 'kill $weather_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$weather_log" ] && break; sleep 0.1; done
weather="http://127.0.0.1:$(head -1 "$weather_log")"

smoke() {
  local bin runner dir pid log http mqtt code
  bin=$(realpath "$1")
  runner=$(runner_for "$bin")
  dir=$(mktemp -d)
  log="$dir/log"
  echo "==> $bin ${runner:+(under $runner)}"
  (
    cd "$dir"
    export METEOMESH__HTTP__LISTEN=127.0.0.1:0 METEOMESH__BUS__TCP_LISTEN=127.0.0.1:0 \
      METEOMESH__BUS__WS_LISTEN=127.0.0.1:0 METEOMESH__BUS__USERS=smoke:smoke-password NO_COLOR=1 \
      METEOMESH__WEATHER__OPEN_METEO_URL="$weather" METEOMESH__WEATHER__GEOCODING_URL="$weather"
    exec $runner "$bin" > "$log" 2>&1
  ) &
  pid=$!
  # Wait (bounded; emulation is slow) for the ready line, which names the bound ports.
  for _ in $(seq 1 600); do
    grep -q "meteomesh ready" "$log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "FAIL: exited before ready"; return 1; }
    sleep 0.1
  done
  grep -q "meteomesh ready" "$log" || { cat "$log"; kill "$pid"; echo "FAIL: not ready"; return 1; }
  http=$(grep "meteomesh ready" "$log" | grep -o ' http=[^ ]*' | cut -d= -f2)
  mqtt=$(grep "meteomesh ready" "$log" | grep -o ' mqtt=[^ ]*' | cut -d= -f2)

  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$http/healthz")
  [ "$code" = 200 ] || { echo "FAIL: /healthz answered $code"; kill "$pid"; return 1; }
  echo "    /healthz 200"

  # An account: argon2id hashing and a JWT round trip on this architecture.
  local token me
  token=$(curl -s "http://$http/api/v1/auth/register" -H 'content-type: application/json' \
    -d '{"username":"smokeuser","password":"smoke-password-1"}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  [ -n "$token" ] || { echo "FAIL: registration gave no token"; kill "$pid"; return 1; }
  me=$(curl -s "http://$http/api/v1/me" -H "authorization: Bearer $token")
  case "$me" in *'"username":"smokeuser"'*) ;; *) echo "FAIL: /api/v1/me answered $me"; kill "$pid"; return 1 ;; esac
  echo "    register + token login ok"

  local host=${mqtt%:*} port=${mqtt##*:} got
  got="$dir/got"
  mosquitto_sub -h "$host" -p "$port" -u smoke -P smoke-password -t smoke/test -C 1 -W 30 > "$got" &
  local sub=$!
  # Publish until the subscriber has its message (its SUBACK may still be under way).
  for _ in $(seq 1 100); do
    mosquitto_pub -h "$host" -p "$port" -u smoke -P smoke-password -t smoke/test -m "hello from $(basename "$bin")"
    [ -s "$got" ] && break
    sleep 0.1
  done
  wait "$sub" || true
  grep -q "hello from" "$got" || { echo "FAIL: no MQTT message through the broker"; kill "$pid"; return 1; }
  echo "    MQTT publish -> subscribe ok"

  if mosquitto_pub -h "$host" -p "$port" -t smoke/test -m anon 2>/dev/null; then
    echo "FAIL: anonymous publish accepted"; kill "$pid"; return 1
  fi
  echo "    anonymous client refused"

  # One alert end to end: subscription (min 5 °C) -> poll (3 °C) -> user's MQTT topic.
  local uid alerts
  uid=$(printf '%s' "$me" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
  alerts="$dir/alerts"
  mosquitto_sub -d -h "$host" -p "$port" -u smokeuser -P "$token" -t "meteomesh/v1/users/$uid/alerts" \
    -C 1 -W 60 > "$alerts" &
  sub=$!
  # -d prints the SUBACK: only then is the subscription live.
  for _ in $(seq 1 300); do grep -q SUBACK "$alerts" 2>/dev/null && break; sleep 0.1; done
  code=$(curl -s -o "$dir/sub.json" -w '%{http_code}' "http://$http/api/v1/subscriptions" \
    -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"label":"smoke","place":{"name":"Catania","lat":37.49,"lon":15.07,"timezone":"Europe/Rome"},"min_temp":5}')
  [ "$code" = 201 ] || { cat "$dir/sub.json"; echo "FAIL: subscription answered $code"; kill "$pid"; return 1; }
  code=$(curl -s -o "$dir/poll.json" -w '%{http_code}' -X POST "http://$http/api/v1/admin/weather/poll" \
    -H "authorization: Bearer $token")
  [ "$code" = 200 ] || { cat "$dir/poll.json"; echo "FAIL: poll answered $code"; kill "$pid"; return 1; }
  wait "$sub" || true
  grep -q '"state":"raised"' "$alerts" && grep -q '"constraint":"too_cold"' "$alerts" \
    || { cat "$alerts" "$log"; echo "FAIL: no alert on MQTT"; kill "$pid"; return 1; }
  echo "    weather alert end to end (fake provider -> rules -> MQTT) ok"

  kill -TERM "$pid"
  if wait "$pid"; then code=0; else code=$?; fi
  [ "$code" = 0 ] || { cat "$log"; echo "FAIL: exit code $code after SIGTERM"; return 1; }
  echo "    SIGTERM -> exit 0"
  rm -rf "$dir"
}

for bin in "$@"; do
  smoke "$bin"
done
echo "smoke: all passed"
