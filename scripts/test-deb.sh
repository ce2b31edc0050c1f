#!/usr/bin/env bash
# Installs the amd64 .deb on this Debian machine, checks what it put where, runs the
# installed binary as the `meteomesh` user (HTTP /healthz, SIGTERM -> 0), verifies the
# unit with systemd-analyze, then purges and checks nothing is left. Needs root (sudo is
# used when available) and dist/meteomesh-x86_64-unknown-linux-musl
# (scripts/build-arm.sh x86_64). Works without a running systemd (containers, CI).
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
fail() { echo "FAIL: $*"; exit 1; }

deb=$(scripts/build-deb.sh amd64)
echo "==> $deb"
if dpkg -s meteomesh >/dev/null 2>&1; then fail "meteomesh is already installed here"; fi
as_root dpkg -i "$deb"

[ -x /usr/bin/meteomesh ] || fail "no /usr/bin/meteomesh"
[ -f /lib/systemd/system/meteomesh.service ] || fail "no unit"
getent passwd meteomesh >/dev/null || fail "no meteomesh user"
[ "$(stat -c '%U:%G %a' /etc/meteomesh/meteomesh.toml)" = "root:meteomesh 640" ] \
  || fail "config owner/mode: $(stat -c '%U:%G %a' /etc/meteomesh/meteomesh.toml)"
echo "    files, user and config permissions ok"

as_root systemd-analyze verify /lib/systemd/system/meteomesh.service
echo "    systemd-analyze verify ok"

as_root runuser -u meteomesh -- /usr/bin/meteomesh --config /etc/meteomesh/meteomesh.toml check-config
# What systemd's StateDirectory= would create; then one run as the service user.
as_root install -d -o meteomesh -g meteomesh -m 0750 /var/lib/meteomesh
log=$(mktemp)
as_root runuser -u meteomesh -- env -C /var/lib/meteomesh \
  METEOMESH__STORAGE__PATH=/var/lib/meteomesh/meteomesh.db METEOMESH__HTTP__LISTEN=127.0.0.1:0 \
  METEOMESH__BUS__TCP_LISTEN=127.0.0.1:0 METEOMESH__BUS__WS_LISTEN=127.0.0.1:0 NO_COLOR=1 \
  /usr/bin/meteomesh --config /etc/meteomesh/meteomesh.toml serve > "$log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do grep -q "meteomesh ready" "$log" && break; sleep 0.1; done
http=$(grep "meteomesh ready" "$log" | grep -o ' http=[^ ]*' | cut -d= -f2)
[ -n "$http" ] || { cat "$log"; fail "installed binary not ready"; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$http/healthz")" = 200 ] || fail "/healthz"
svc=$(pgrep -u meteomesh -x meteomesh) || fail "not running as meteomesh"
as_root kill -TERM "$svc"
wait "$pid" || { cat "$log"; fail "exit code $? after SIGTERM"; }
[ "$(stat -c %U /var/lib/meteomesh/meteomesh.db)" = meteomesh ] || fail "database owner"
echo "    runs as meteomesh, /healthz 200, SIGTERM -> 0"

as_root dpkg --purge meteomesh
for path in /usr/bin/meteomesh /lib/systemd/system/meteomesh.service /etc/meteomesh /var/lib/meteomesh; do
  [ ! -e "$path" ] || fail "$path left after purge"
done
if getent passwd meteomesh >/dev/null; then fail "user left after purge"; fi
echo "    purge removed binary, unit, config, state and user"
echo "deb: install/uninstall passed"
