#!/bin/sh
# Builds Debian 12's QEMU 7.2 with the vmdefrag patch series applied.
#
#   QEMU_DEVICES=default  (make qemu)       build/qemu/qemu-system-x86_64,
#       QEMU's default device set: what a libvirt domain may use.
#   QEMU_DEVICES=test     (make qemu-test)  build/qemu-test/qemu-system-x86_64,
#       only the devices of the test harness (devices-test.mak): about half
#       the objects to compile, which is what lets `make check` build it.
#
#   1. as root, installs the build dependencies and a deb-src entry for the
#      bookworm sources if they are missing (a fresh Debian 12 has neither);
#   2. downloads the source package once (apt-get source, into $QEMU_SRC_CACHE);
#   3. unpacks it (dpkg-source -x applies Debian's own patches) and applies
#      every patch of qemu-patches/series with patch -p1, which must apply
#      cleanly (no fuzz);
#   4. configures a minimal tree (x86_64-softmmu, tcg + kvm, no docs) and
#      builds qemu-system-x86_64, whose version string (QMP query-version's
#      "package", -version) carries "vmdefrag-patches" and the series' hash:
#      that is how vmdefragd and the tests recognise a patched QEMU.
#
# A build is keyed by the hash of its inputs (the source package, the series,
# this script, the device list): the same inputs reuse the binary in
# $QEMU_BIN_CACHE (/var/cache/vmdefrag-tests/qemu-bin/<devices>-<hash>/, as root, where
# the test kernels are cached too) or build/<out>/tree-<hash>/, which only
# relinks if needed; a change to any of them starts from a clean unpack.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
BUILD=${BUILD:-$top/build}
QEMU_DEVICES=${QEMU_DEVICES:-default}
case $QEMU_DEVICES in
default) out=$BUILD/qemu; devices_mak= ;;
test)    out=$BUILD/qemu-test; devices_mak=$here/devices-test.mak ;;
*)       echo "make qemu: QEMU_DEVICES must be default or test, not '$QEMU_DEVICES'" >&2
	 exit 1 ;;
esac
# the source package is cached where tests cache their downloads (as root),
# or under build/
if [ -z "${QEMU_SRC_CACHE:-}" ]; then
	QEMU_SRC_CACHE=/var/cache/vmdefrag-tests/qemu-src
	mkdir -p "$QEMU_SRC_CACHE" 2>/dev/null && [ -w "$QEMU_SRC_CACHE" ] ||
		QEMU_SRC_CACHE=$BUILD/qemu-src
fi
if [ -z "${QEMU_BIN_CACHE:-}" ]; then
	QEMU_BIN_CACHE=/var/cache/vmdefrag-tests/qemu-bin
	mkdir -p "$QEMU_BIN_CACHE" 2>/dev/null && [ -w "$QEMU_BIN_CACHE" ] ||
		QEMU_BIN_CACHE=
fi
QEMU_SRC_VERSION=${QEMU_SRC_VERSION:-}   # e.g. 1:7.2+dfsg-7+deb12u18; default: newest in apt
DEPS="ninja-build meson libglib2.0-dev libpixman-1-dev libfdt-dev flex bison
      dpkg-dev xz-utils patch python3"

log() { echo "  QEMU    $*" >&2; }
die() { echo "make qemu: $*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

install_deps() {
	missing=""
	for p in $DEPS; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
			grep -q '^install ok installed$' || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	is_root || die "missing packages:$missing; run as root to install them"
	log "apt-get install$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing >/dev/null
}

# A deb-src entry for the same suites as the deb entries of debian.sources.
ensure_deb_src() {
	apt-cache showsrc qemu 2>/dev/null | grep -q '^Package: qemu$' && return 0
	is_root || die "no deb-src entry for qemu; run as root to add one"
	src=/etc/apt/sources.list.d/vmdefrag-deb-src.sources
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		sed 's/^Types: deb$/Types: deb-src/' \
			/etc/apt/sources.list.d/debian.sources >"$src"
	else
		cat >"$src" <<-EOT
		Types: deb-src
		URIs: http://deb.debian.org/debian
		Suites: bookworm bookworm-updates
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
		EOT
	fi
	log "added $src"
	apt-get update -qq
}

# Prints the path of the .dsc, downloading it into the cache if needed.
fetch_source() {
	if [ -z "$QEMU_SRC_VERSION" ]; then
		dsc=$(find "$QEMU_SRC_CACHE" -maxdepth 1 -name 'qemu_*.dsc' 2>/dev/null |
			sort -V | tail -n 1)
		if [ -n "$dsc" ]; then echo "$dsc"; return 0; fi
		ensure_deb_src
		QEMU_SRC_VERSION=$(apt-cache showsrc qemu | sed -n 's/^Version: //p' |
			sort -V | tail -n 1)
	fi
	upstream=${QEMU_SRC_VERSION#*:}
	dsc=$QEMU_SRC_CACHE/qemu_$upstream.dsc
	if [ ! -f "$dsc" ]; then
		ensure_deb_src
		mkdir -p "$QEMU_SRC_CACHE"
		log "apt-get source qemu=$QEMU_SRC_VERSION"
		(cd "$QEMU_SRC_CACHE" &&
			apt-get source -qq --download-only "qemu=$QEMU_SRC_VERSION") >&2 ||
			die "apt-get source qemu=$QEMU_SRC_VERSION failed"
	fi
	echo "$dsc"
}

patches() { grep -v -e '^#' -e '^[[:space:]]*$' "$here/series"; }

install_deps
dsc=$(fetch_source)
# shellcheck disable=SC2046  # patch names have no spaces
series_hash=$( (sha256sum <"$dsc"; cd "$here" && sha256sum series $(patches)) |
	sha256sum | cut -c1-16)
# contents only: the same inputs give the same hash in any checkout
hash=$( (echo "$series_hash $QEMU_DEVICES"; cat "$0" ${devices_mak:+"$devices_mak"}) |
	sha256sum | cut -c1-16)
tree=$out/tree-$hash
bin=$out/qemu-system-x86_64
cached=${QEMU_BIN_CACHE:+$QEMU_BIN_CACHE/$QEMU_DEVICES-$hash/qemu-system-x86_64}

if [ -x "$bin" ] && [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$hash" ]; then
	exit 0
fi
if [ -n "$cached" ] && [ -x "$cached" ]; then
	mkdir -p "$out"
	cp "$cached" "$bin.tmp"
	mv "$bin.tmp" "$bin"
	echo "$hash" >"$out/stamp"
	log "$bin: built before ($cached)"
	exit 0
fi

if [ ! -f "$tree/applied" ]; then
	rm -rf "$tree"
	mkdir -p "$tree"
	log "dpkg-source -x $(basename "$dsc")"
	dpkg-source --no-check -x "$dsc" "$tree/src" >"$tree/unpack.log" 2>&1 ||
		{ cat "$tree/unpack.log" >&2; die "dpkg-source -x failed"; }
	for p in $(patches); do
		log "patch $p"
		patch -d "$tree/src" -p1 -F0 -N --quiet <"$here/$p" ||
			die "$p does not apply cleanly"
	done
	[ -z "$devices_mak" ] ||
		cp "$devices_mak" "$tree/src/configs/devices/x86_64-softmmu/vmdefrag-test.mak"
	touch "$tree/applied"
fi

if [ ! -f "$tree/obj/build.ninja" ]; then
	mkdir -p "$tree/obj"
	log "configure (devices: $QEMU_DEVICES)"
	if [ -n "$devices_mak" ]; then
		set -- --without-default-devices --with-devices-x86_64=vmdefrag-test
	else
		set --
	fi
	pkgversion="$(dpkg-parsechangelog -l "$tree/src/debian/changelog" -S Version)"
	(cd "$tree/obj" && ../src/configure --target-list=x86_64-softmmu \
		--with-pkgversion="Debian $pkgversion, vmdefrag-patches $series_hash" \
		"$@" --without-default-features --enable-tcg --enable-kvm \
		--enable-fdt=system --disable-install-blobs --disable-docs \
		--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu \
		>../configure.log 2>&1) ||
		{ tail -n 30 "$tree/configure.log" >&2; die "configure failed"; }
fi

log "ninja qemu-system-x86_64 (log: $tree/ninja.log)"
ninja -C "$tree/obj" qemu-system-x86_64 >"$tree/ninja.log" 2>&1 ||
	{ grep -B2 -A10 -m5 'error' "$tree/ninja.log" >&2; die "build failed"; }
cp "$tree/obj/qemu-system-x86_64" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$hash" >"$out/stamp"
if [ -n "$cached" ]; then
	# one binary per device set: older inputs are of no use any more
	for d in "$QEMU_BIN_CACHE/$QEMU_DEVICES"-*/; do
		[ "$d" = "${cached%/*}/" ] || rm -rf "$d"
	done
	mkdir -p "${cached%/*}"
	cp "$bin" "$cached.tmp" && mv "$cached.tmp" "$cached"
fi
# older trees are of no use once a newer series built
for d in "$out"/tree-*/; do
	[ "$d" = "$tree/" ] || rm -rf "$d"
done
log "built $bin"
