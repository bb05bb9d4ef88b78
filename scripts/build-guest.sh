#!/usr/bin/env bash
# Build the test guest: a cirros-like Linux with a busybox initramfs.
#
#   scripts/build-guest.sh [OUTDIR]        (default: <repo>/.cache/guest)
#
# Outputs OUTDIR/vmlinuz and OUTDIR/initramfs.cpio.gz:
#   - the kernel of Debian's linux-image-*-cloud-amd64 (fetched with
#     `apt-get download`, never installed),
#   - an initramfs with busybox-static and its applets, the virtio-net modules
#     (loaded by /init in dependency order), a udhcpc default script, iperf3
#     with its shared libraries, and vun-echo (a static TCP/UDP echo tool that
#     also shows what an IPv6 router and DHCPv6 server answer).
# /init (scripts/guest/init) gives a root shell on ttyS0 and prints
# GUEST-READY; test/harness/qemu.ts drives it.
#
# Idempotent and cached: when both outputs exist and the inputs (this script,
# scripts/guest/*, the kernel package name, the busybox and iperf3 binaries)
# hash to the recorded stamp, it does nothing. Missing host tools are
# installed with apt-get (one `apt-get update` at most). Set
# VUN_KERNEL_PACKAGE to pin another kernel package.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$REPO/scripts/guest
OUT=${1:-$REPO/.cache/guest}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$OUT/work
DEBS=$OUT/debs
# Load order matters: each module needs the ones before it.
MODULES="failover net_failover virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_net"

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

SUDO=
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 && SUDO=sudo
fi

# One builder at a time per output directory (vitest workers may race).
exec 9>"$OUT/.lock"
flock 9

APT_UPDATED=0
apt_update_once() {
	if [ "$APT_UPDATED" = 0 ]; then
		log "apt-get update"
		$SUDO apt-get update -qq >&2
		APT_UPDATED=1
	fi
}
apt_install() {
	apt_update_once
	log "installing: $*"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}
pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# --- host tools ------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
command -v gzip >/dev/null 2>&1 || need+=(gzip)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
	apt_install "${need[@]}"
fi

# --- inputs ----------------------------------------------------------------
resolve_kernel_package() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
KPKG=${VUN_KERNEL_PACKAGE:-}
if [ -z "$KPKG" ]; then
	KPKG=$(resolve_kernel_package || true)
	if [ -z "$KPKG" ]; then
		# No package lists yet: reuse a kernel already fetched, else update.
		cached=$(ls "$DEBS"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | sort -V | tail -n1 || true)
		if [ -n "$cached" ]; then
			KPKG=$(basename "$cached" | cut -d_ -f1)
		else
			apt_update_once
			KPKG=$(resolve_kernel_package || true)
		fi
	fi
fi
[ -n "$KPKG" ] || die "cannot resolve the linux-image-cloud-amd64 kernel package"

if pkg_installed busybox-static && [ -x /bin/busybox ]; then
	BUSYBOX=/bin/busybox
else
	BUSYBOX=$WORK/busybox-static/bin/busybox
fi

IPERF3=$(command -v iperf3)
stamp() {
	{
		sha256sum "$REPO/scripts/build-guest.sh"
		(cd "$SRC" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
		echo "kernel=$KPKG"
		if [ -x "$BUSYBOX" ]; then sha256sum "$BUSYBOX" | cut -d' ' -f1; else echo "busybox=download"; fi
		sha256sum "$IPERF3" | cut -d' ' -f1
	} | sha256sum | cut -d' ' -f1
}
STAMP=$(stamp)
if [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.cpio.gz" ] && [ -f "$OUT/stamp" ] &&
	[ "$(cat "$OUT/stamp")" = "$STAMP" ]; then
	log "up to date ($OUT, $KPKG)"
	exit 0
fi

mkdir -p "$WORK" "$DEBS"
# fetch PKG: download PKG's .deb into $DEBS (cached) and print its path.
fetch() {
	local pkg=$1 deb
	deb=$(ls "$DEBS/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
	if [ -z "$deb" ]; then
		log "apt-get download $pkg"
		if ! (cd "$DEBS" && apt-get download "$pkg" >&2 2>/dev/null); then
			apt_update_once
			(cd "$DEBS" && apt-get download "$pkg" >&2)
		fi
		deb=$(ls "$DEBS/${pkg}"_*.deb | sort -V | tail -n1)
	fi
	echo "$deb"
}

if [ "$BUSYBOX" != /bin/busybox ]; then
	rm -rf "$WORK/busybox-static"
	dpkg-deb -x "$(fetch busybox-static)" "$WORK/busybox-static"
	[ -x "$BUSYBOX" ] || die "busybox-static package has no /bin/busybox"
	STAMP=$(stamp)
fi

# --- kernel ----------------------------------------------------------------
KDIR=$WORK/kernel
rm -rf "$KDIR"
dpkg-deb -x "$(fetch "$KPKG")" "$KDIR"
VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-* | head -n1)
[ -f "$VMLINUZ" ] || die "no vmlinuz in $KPKG"
KVER=$(basename "$VMLINUZ" | sed 's/^vmlinuz-//')
MODROOT=$(ls -d "$KDIR"/lib/modules/"$KVER" "$KDIR"/usr/lib/modules/"$KVER" 2>/dev/null | head -n1 || true)
[ -d "$MODROOT" ] || die "no module tree for $KVER"

# --- root filesystem -------------------------------------------------------
ROOT=$WORK/rootfs
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc/vun,etc/udhcpc,usr/share/udhcpc,lib/modules/vun} \
	"$ROOT"/{proc,sys,dev,tmp,run,root,var/www,var/run,mnt}
chmod 1777 "$ROOT/tmp"

# Modules, decompressed here so busybox insmod needs no decompressor.
: >"$ROOT/etc/vun/modules"
for m in $MODULES; do
	f=$(find "$MODROOT/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n1)
	if [ -z "$f" ]; then
		if grep -q "/$m.ko\$" "$MODROOT/modules.builtin" 2>/dev/null; then
			log "module $m is built in"
			continue
		fi
		die "module $m not found in $KPKG"
	fi
	dst=$ROOT/lib/modules/vun/$m.ko
	case "$f" in
	*.ko.xz) xz -dc "$f" >"$dst" ;;
	*.ko.gz) gzip -dc "$f" >"$dst" ;;
	*.ko.zst)
		command -v zstd >/dev/null 2>&1 || apt_install zstd
		zstd -qdc "$f" >"$dst"
		;;
	*) cp "$f" "$dst" ;;
	esac
	echo "$m" >>"$ROOT/etc/vun/modules"
done

# busybox and its applets.
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list-full); do
	[ -e "$ROOT/$applet" ] || [ -L "$ROOT/$applet" ] || ln -s /bin/busybox "$ROOT/$applet"
done

# copy_with_libs BIN DEST: BIN and the shared libraries ldd names.
copy_with_libs() {
	local bin=$1 dest=$2 lib
	install -D -m 755 "$bin" "$ROOT$dest"
	for lib in $(ldd "$bin" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }'); do
		[ -e "$ROOT$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$ROOT$lib"
	done
}
copy_with_libs "$IPERF3" /usr/bin/iperf3

gcc -static -Os -s -Wall -o "$ROOT/usr/bin/vun-echo" "$SRC/vun-echo.c"

install -m 755 "$SRC/init" "$ROOT/init"
install -m 755 "$SRC/udhcpc.script" "$ROOT/usr/share/udhcpc/default.script"
ln -s /usr/share/udhcpc/default.script "$ROOT/etc/udhcpc/default.script"

cat >"$ROOT/etc/passwd" <<'EOF'
root::0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
cat >"$ROOT/etc/hosts" <<'EOF'
127.0.0.1 localhost
::1 localhost
EOF
echo "hosts: files dns" >"$ROOT/etc/nsswitch.conf"
: >"$ROOT/etc/resolv.conf"
echo "vun-guest" >"$ROOT/var/www/index.html"
echo "$KVER" >"$ROOT/etc/vun/kernel"
if [ "$(id -u)" = 0 ]; then
	mknod -m 600 "$ROOT/dev/console" c 5 1
	mknod -m 666 "$ROOT/dev/null" c 1 3
fi

# --- outputs ---------------------------------------------------------------
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) |
	gzip -n -6 >"$OUT/initramfs.cpio.gz.tmp"
cp "$VMLINUZ" "$OUT/vmlinuz.tmp"
mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
echo "$STAMP" >"$OUT/stamp"
rm -rf "$KDIR"
# Keep only the newest kernel .deb.
ls "$DEBS"/linux-image-*.deb 2>/dev/null | sort -V | head -n -1 | xargs -r rm -f
log "built $OUT/vmlinuz ($KVER) and $OUT/initramfs.cpio.gz ($(du -h "$OUT/initramfs.cpio.gz" | cut -f1))"
