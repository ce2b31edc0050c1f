#!/usr/bin/env bash
# Interoperability check with third-party MQTT clients (paho-mqtt from PyPI,
# mosquitto_pub/mosquitto_sub from Debian) against meteomesh's embedded broker and
# Debian's mosquitto side by side; writes target/interop.md. See docs/interop.md.
#
#   scripts/interop.sh                       # builds the debug binary if needed
#   scripts/interop.sh path/to/meteomesh     # any build, e.g. dist/meteomesh-x86_64-…
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/debug/meteomesh}
if [ ! -x "$binary" ]; then
  cargo build --locked --bin meteomesh
fi
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -c 'import paho.mqtt, sys; sys.exit(0 if paho.mqtt.__version__.startswith("2.") else 1)' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check 'paho-mqtt==2.1.0'
export PATH="$PATH:/usr/sbin"
exec python3 scripts/interop.py --binary "$binary" --report target/interop.md
