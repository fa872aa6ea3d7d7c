#!/bin/sh
# Builds the test guest kernel with the movable-slab series
# (guest-agent/kernel-patches/) applied to Debian's linux-source-6.1, and
# vmdefrag.ko against it.  `make guest-kernel` runs it.
#
# Layout, all under $BUILD/guest-kernel/ (BUILD defaults to build/):
#   linux-source-6.1/   the source, series applied (extracted once; later
#                       runs rewrite only the files a series changes, so
#                       the rebuild is incremental)
#   obj/                the kernel's object tree (make O=)
#   <release>/vmlinuz   the image the harness boots
#   <release>/lib/modules/<release>/   modules_install (modules.dep, ...)
#   <release>/inputs    hash of the series, the config fragment and this
#                       script; equal => nothing is rebuilt
#   release             the release string of the last build
# and vmdefrag.ko in $BUILD/module/<release>/ as `make module` lays it out.
#
# Config: `make allnoconfig` with guest-agent/kernel-patches/guest.config
# forced (KCONFIG_ALLCONFIG); the script fails if a =y there did not hold.
# Runs at nice 10 with -j$JOBS (default 2).
set -eu

TOP=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$TOP/build}
JOBS=${JOBS:-2}
PATCHES=$TOP/guest-agent/kernel-patches
TARBALL=${LINUX_SOURCE_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
OUT=$BUILD/guest-kernel
SRC=$OUT/linux-source-6.1
OBJ=$OUT/obj

die() { echo "guest-kernel: $*" >&2; exit 1; }

[ -f "$TARBALL" ] || die "no $TARBALL (make deps installs linux-source-6.1)"
command -v bc >/dev/null || die "bc is missing (apt-get install bc)"
[ -f /usr/include/gelf.h ] || die "libelf-dev is missing (objtool needs it)"

series() { grep -v '^[[:space:]]*\(#\|$\)' "$PATCHES/series"; }

# what decides the result
inputs=$( { cat "$0" "$PATCHES/guest.config" "$PATCHES/series";
	    for p in $(series); do cat "$PATCHES/$p"; done; } |
	  sha256sum | cut -d' ' -f1)

if [ -f "$OUT/release" ]; then
	rel=$(cat "$OUT/release")
	if [ "$(cat "$OUT/$rel/inputs" 2>/dev/null)" = "$inputs" ] &&
	   [ -f "$OUT/$rel/vmlinuz" ] &&
	   [ -f "$BUILD/module/$rel/vmdefrag.ko" ]; then
		echo "  KERNEL  build/guest-kernel/$rel (up to date)"
		exit 0
	fi
fi

mkdir -p "$OUT"
start=$(date +%s)

# A pristine tree with the series applied, then only the files that
# differ (from the last applied series or the new one) copied over.
tmp=$(mktemp -d "$OUT/apply.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar -C "$tmp" -xf "$TARBALL"
for p in $(series); do
	patch -s -p1 -N -d "$tmp/linux-source-6.1" <"$PATCHES/$p" ||
		die "$p does not apply"
done
touched=$(for p in $(series); do
	sed -n 's|^+++ b/||p' "$PATCHES/$p"; done | sort -u)
if [ ! -d "$SRC" ]; then
	mv "$tmp/linux-source-6.1" "$SRC"
else
	for f in $touched $(cat "$OUT/touched" 2>/dev/null); do
		if ! cmp -s "$tmp/linux-source-6.1/$f" "$SRC/$f"; then
			mkdir -p "$(dirname "$SRC/$f")"
			cp "$tmp/linux-source-6.1/$f" "$SRC/$f"
		fi
	done
fi
echo "$touched" >"$OUT/touched"
rm -rf "$tmp"

mkdir -p "$OBJ"
# The object tree records absolute paths of the source and of itself
# (obj/Makefile, every .cmd file, objtool's among them: a rebuilt objtool
# rebuilds every object): when the checkout moved, rewrite the text files
# rather than rebuild from scratch (mtimes are kept)
out_now=$(cd "$OUT" && pwd -P)
src_was=$(sed -n 's|^include \(.*\)/Makefile$|\1|p' "$OBJ/Makefile" \
	  2>/dev/null || true)
out_was=${src_was%/linux-source-6.1}
if [ -n "$src_was" ] && [ "$out_was" != "$out_now" ]; then
	echo "  KERNEL  the tree moved from $out_was: rewriting obj/"
	grep -rlIF "$out_was/" "$OBJ" | while read -r f; do
		sed -i "s|$out_was/|$out_now/|g" "$f"
	done
	ln -sfn "$out_now/linux-source-6.1" "$OBJ/source"
fi
cd "$SRC"
# allnoconfig with guest.config forced: every symbol it sets must hold
make -s O="$OBJ" KCONFIG_ALLCONFIG="$PATCHES/guest.config" allnoconfig
sed -n 's/^CONFIG_\([A-Z0-9_]*\)=y$/\1/p' "$PATCHES/guest.config" |
while read -r sym; do
	grep -q "^CONFIG_$sym=y" "$OBJ/.config" ||
		die "CONFIG_$sym is not set in the resulting config"
done

echo "  KERNEL  building in build/guest-kernel/obj (nice 10, -j$JOBS)"
nice -n 10 make -s O="$OBJ" -j"$JOBS" bzImage modules
rel=$(make -s O="$OBJ" kernelrelease)
rm -rf "${OUT:?}/${rel:?}"
mkdir -p "$OUT/$rel"
make -s O="$OBJ" INSTALL_MOD_PATH="$OUT/$rel" INSTALL_MOD_STRIP=1 \
	DEPMOD=/sbin/depmod modules_install
cp "$OBJ/arch/x86/boot/bzImage" "$OUT/$rel/vmlinuz"

mkdir -p "$BUILD/module/$rel"
make -C "$TOP/guest-agent/module" KVER="$rel" KDIR="$OBJ" W= \
	>"$BUILD/module/$rel/build.log" 2>&1 ||
	{ cat "$BUILD/module/$rel/build.log"; die "vmdefrag.ko did not build"; }
grep -q 'CONFIG_SLAB_MOBILITY' "$OBJ/include/generated/autoconf.h" ||
	die "the built kernel lacks CONFIG_SLAB_MOBILITY"

echo "$inputs" >"$OUT/$rel/inputs"
echo "$rel" >"$OUT/release"
echo "  KERNEL  build/guest-kernel/$rel/vmlinuz, build/module/$rel/vmdefrag.ko" \
     "($(( $(date +%s) - start ))s)"
