#!/bin/sh
# Installs, with apt, every Debian 12 package that building vmdefrag, its
# tests, the demo and the benchmarks need.  Idempotent: when everything is
# already installed it prints nothing and touches nothing.
#
# The packaging line: what `make man` and `make deb` (dpkg-buildpackage -b,
# debian/control's Build-Depends) need, lintian to check the packages,
# man-db and bash-completion for the man page and completion tests.
#
# gnuplot-nox draws make bench's chart of host memory over time
# (tests/bench/policy_bench.py: SVG and PNG, no X).
# The observability tests: python3-prometheus-client (its text parser reads
# the metrics), chromium (a headless screenshot of the block map's SVG),
# python3-pil (is that screenshot blank?) and librsvg2-bin (rsvg-convert,
# behind vmdefragctl map --png).
#
# The last line are the build dependencies of the patched QEMU that
# `make check` builds (qemu-patches/build.sh, which adds the deb-src entry
# for its source package itself).
#
# Guest kernels: Debian's default 6.1 (linux-image-amd64) and the newest
# 6.12 backport image available, resolved here at install time.  Any
# installed 6.12 satisfies the check, so a machine is not upgraded behind
# the user's back on every run.
set -eu

PKGS="build-essential pkg-config clang libclang-rt-14-dev
      libnl-3-dev libnl-genl-3-dev libjson-c-dev libcmocka-dev libvirt-dev
      qemu-system-x86 qemu-utils busybox-static cpio kmod xz-utils
      python3 python3-pytest python3-pytest-timeout gnuplot-nox
      linux-image-amd64 linux-headers-amd64 linux-source-6.1
      libvirt-daemon-system libvirt-clients dkms libxml2-dev debootstrap
      shellcheck systemd
      scdoc debhelper dh-dkms lintian man-db bash-completion
      python3-prometheus-client chromium python3-pil librsvg2-bin
      ninja-build meson libglib2.0-dev libpixman-1-dev libfdt-dev flex bison
      dpkg-dev patch libelf-dev bc"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
		missing="$missing $p"
done
have_612=$(dpkg-query -W -f='${Package} ${Status}\n' 'linux-image-6.12.*-amd64-unsigned' 2>/dev/null |
	grep -c 'install ok installed' || true)

[ -z "$missing" ] && [ "$have_612" -gt 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "make deps: missing packages:$missing; run as root to install them" >&2
	exit 1
fi

echo "make deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ "$have_612" -eq 0 ]; then
	k612=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' |
		awk '{print $1}' | sed -E 's/^linux-image-(.*)-unsigned$/\1/' | sort -V | tail -n 1)
	if [ -z "$k612" ]; then
		echo "make deps: no linux-image-6.12.*+deb12-amd64-unsigned in the apt sources" >&2
		exit 1
	fi
	missing="$missing linux-image-$k612-unsigned linux-headers-$k612"
fi
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
echo "make deps: done" >&2
