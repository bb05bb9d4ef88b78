#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks use (QEMU, busybox for
# the test guest, iperf3, passt, socat, iproute2, DPDK's testpmd with its
# virtio-user driver, gcc and make for the bench tools and the passt peer).
# Idempotent: does nothing when everything is present. Needs root (or sudo)
# and Debian's apt (the DPDK package names are Debian 12's, DPDK 22.11).
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in qemu-system-x86 qemu-utils busybox-static cpio xz-utils zstd kmod iperf3 passt socat iproute2 procps \
  dpdk-dev librte-net-virtio23 librte-mempool-ring23 gcc make libvirt-clients libxml2-utils; do
  have "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup-host: installing ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
