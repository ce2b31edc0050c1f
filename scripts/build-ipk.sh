#!/usr/bin/env bash
# Builds an OpenWrt .ipk from a prebuilt static binary, without the OpenWrt SDK (an ipk
# is a gzip'd tar of debian-binary, control.tar.gz and data.tar.gz, as ipkg-build makes):
#
#   scripts/build-ipk.sh OPENWRT_ARCH [BINARY] [OUTDIR]
#
# OPENWRT_ARCH is the device's package architecture (`opkg print-architecture`), e.g.
# aarch64_cortex-a53 or aarch64_generic (BINARY default: the aarch64 build),
# arm_cortex-a7_neon-vfpv4, arm_cortex-a9_vfpv3-d16, arm_cortex-a15_neon-vfpv4 (armv7),
# arm_arm1176jzf-s_vfp (armv6), x86_64. OUTDIR defaults to dist/.
#
# Installs /usr/bin/meteomesh, /etc/init.d/meteomesh (procd), /etc/config/meteomesh (UCI)
# and /etc/meteomesh/meteomesh.toml (both conffiles); the `meteomesh` user is created by
# OpenWrt's default_postinst from Require-User.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${1:?usage: build-ipk.sh OPENWRT_ARCH [BINARY] [OUTDIR]}
case "$arch" in
  aarch64_*) triple=aarch64-unknown-linux-musl ;;
  arm_arm1176*) triple=arm-unknown-linux-musleabihf ;;
  arm_*) triple=armv7-unknown-linux-musleabihf ;;
  x86_64) triple=x86_64-unknown-linux-musl ;;
  *) echo "unknown OpenWrt architecture $arch" >&2; exit 2 ;;
esac
bin=${2:-dist/meteomesh-$triple}
out=${3:-dist}
[ -x "$bin" ] || { echo "no binary at $bin; run scripts/build-arm.sh first" >&2; exit 2; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data="$work/data"
control="$work/control"
install -D -m 0755 "$bin" "$data/usr/bin/meteomesh"
install -D -m 0755 openwrt/meteomesh.init "$data/etc/init.d/meteomesh"
install -D -m 0600 openwrt/meteomesh.config "$data/etc/config/meteomesh"
install -D -m 0640 config.example.toml "$data/etc/meteomesh/meteomesh.toml"

install -d "$control"
size=$(du -sb "$data" | cut -f1)
cat > "$control/control" <<CONTROL
Package: meteomesh
Version: $version
Depends: libc
Source: openwrt/prebuilt
SourceName: meteomesh
License: MIT OR Apache-2.0
Section: net
Require-User: meteomesh=397:meteomesh=397
Maintainer: meteomesh developers <meteomesh@localhost>
Architecture: $arch
Installed-Size: $size
Description:  Weather alerts and MQTT message mesh in one static binary: Open-Meteo or
 OpenWeatherMap alerts by Telegram and MQTT, an embedded MQTT broker, Prometheus metrics
 and service-level objectives.
CONTROL
printf '/etc/config/meteomesh\n/etc/meteomesh/meteomesh.toml\n' > "$control/conffiles"
cat > "$control/postinst" <<'SCRIPT'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
# Creates the Require-User account and enables the init script.
default_postinst "$0" "$@"
if [ -z "${IPKG_INSTROOT}" ]; then
	chown root:meteomesh /etc/meteomesh /etc/meteomesh/meteomesh.toml 2>/dev/null
	chmod 0750 /etc/meteomesh
fi
exit 0
SCRIPT
cat > "$control/prerm" <<'SCRIPT'
#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
# Stops and disables the service.
default_prerm "$0" "$@"
SCRIPT
chmod 0755 "$control/postinst" "$control/prerm"
echo "2.0" > "$work/debian-binary"

tar_root() { tar --owner=0 --group=0 --numeric-owner --sort=name -czf "$@"; }
(cd "$data" && tar_root "$work/data.tar.gz" .)
(cd "$control" && tar_root "$work/control.tar.gz" .)
mkdir -p "$out"
ipk="$(cd "$out" && pwd)/meteomesh_${version}_${arch}.ipk"
(cd "$work" && tar_root "$ipk.tmp" ./debian-binary ./data.tar.gz ./control.tar.gz)
mv "$ipk.tmp" "$ipk"
echo "$ipk"
