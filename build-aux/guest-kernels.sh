#!/bin/sh
# Lists the guest kernels the tests can boot, one release per line, oldest
# first: Debian amd64 kernels that have both an image in /boot and headers
# in /lib/modules/<release>/build.  The host's own running kernel is not a
# guest kernel unless it is one of these.
for img in /boot/vmlinuz-*-amd64; do
	[ -e "$img" ] || continue
	rel=${img#/boot/vmlinuz-}
	[ -d "/lib/modules/$rel/build" ] && [ -f "/lib/modules/$rel/modules.dep" ] &&
		echo "$rel"
done | sort -V
