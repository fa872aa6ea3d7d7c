#!/bin/sh
# Prints vmdefrag's version.  It lives in one place, the first entry of
# debian/changelog ("vmdefrag (VERSION) ..."): the packages take it from
# there (dpkg-parsechangelog), and so do cflags.mk (VDF_VERSION, which
# every program's --version prints), the DKMS tree (dkms.conf's
# PACKAGE_VERSION) and the top-level Makefile.  Needs only sed, so it also
# works in a guest without dpkg-dev.
set -eu
top=$(dirname "$0")/..
v=$(sed -n '1s/^vmdefrag (\([^)]*\)).*/\1/p' "$top/debian/changelog")
if [ -z "$v" ]; then
	echo "version.sh: no 'vmdefrag (VERSION)' on the first line of debian/changelog" >&2
	exit 1
fi
echo "$v"
