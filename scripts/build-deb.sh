#!/usr/bin/env bash
# Builds a Debian / Raspberry Pi OS package from a static binary, with dpkg-deb:
#
#   scripts/build-deb.sh amd64|arm64|armhf [BINARY] [OUTDIR]
#
# BINARY defaults to the matching dist/ build (scripts/build-arm.sh): amd64 ← x86_64,
# arm64 ← aarch64, armhf ← armv6 (Raspberry Pi OS "armhf" runs on ARMv6, Pi Zero/1, so
# the armv6 build is the one that works on every 32-bit Pi). OUTDIR defaults to dist/.
#
# Installs /usr/bin/meteomesh, /lib/systemd/system/meteomesh.service,
# /etc/meteomesh/meteomesh.toml (a conffile: upgrades keep your edits) and creates the
# `meteomesh` system user. Purge removes user, config and /var/lib/meteomesh.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${1:?usage: build-deb.sh amd64|arm64|armhf [BINARY] [OUTDIR]}
case "$arch" in
  amd64) triple=x86_64-unknown-linux-musl ;;
  arm64) triple=aarch64-unknown-linux-musl ;;
  armhf) triple=arm-unknown-linux-musleabihf ;;
  *) echo "unknown architecture $arch (amd64, arm64 or armhf)" >&2; exit 2 ;;
esac
bin=${2:-dist/meteomesh-$triple}
out=${3:-dist}
[ -x "$bin" ] || { echo "no binary at $bin; run scripts/build-arm.sh first" >&2; exit 2; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
install -D -m 0755 "$bin" "$stage/usr/bin/meteomesh"
install -D -m 0644 systemd/meteomesh.service "$stage/lib/systemd/system/meteomesh.service"
install -D -m 0640 config.example.toml "$stage/etc/meteomesh/meteomesh.toml"
install -D -m 0644 README.md "$stage/usr/share/doc/meteomesh/README.md"
cat > "$stage/usr/share/doc/meteomesh/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: meteomesh
License: MIT OR Apache-2.0
COPY
install -d "$stage/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/deb/$script" "$stage/DEBIAN/$script"
done
echo /etc/meteomesh/meteomesh.toml > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: meteomesh
Version: $version
Architecture: $arch
Maintainer: meteomesh developers <meteomesh@localhost>
Installed-Size: $size
Depends: passwd
Section: net
Priority: optional
Description: weather alerts and MQTT message mesh in one small binary
 A weather-alert hub (Open-Meteo or OpenWeatherMap, alerts by Telegram and MQTT) with an
 embedded MQTT broker, Prometheus metrics and service-level objectives, as one static
 binary for Raspberry Pi and other small Linux devices.
CONTROL
mkdir -p "$out"
deb="$out/meteomesh_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
