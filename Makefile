# vmdefrag — top-level build.
#
#   make            build vmdefragd, vmdefragctl, vmdefrag-agent, the guest
#                   test programs, the man pages (build/man/), and
#                   vmdefrag.ko for every installed guest kernel
#                   (build/module/<release>/vmdefrag.ko)
#   make man        the man pages from man/*.scd (scdoc) into build/man/
#   make deb        the Debian packages (vmdefrag, vmdefrag-dkms,
#                   vmdefrag-agent) into build/deb/, built from a copy of
#                   the tree with dpkg-buildpackage -b
#   make deps       install the Debian packages everything needs (as root)
#   make check      deps + build + every test; ends with "N passed, N failed"
#   make demo       the main job end to end on the built-in demo guest
#   make bench      benchmarks against the reference mechanisms
#   make qemu       Debian's QEMU 7.2 with qemu-patches/ applied, into
#                   build/qemu/qemu-system-x86_64 (installs its build deps
#                   as root; see qemu-patches/README.md)
#   make qemu-test  the same series with only the test harness's devices, into
#                   build/qemu-test/ (what make check builds and migrates with;
#                   cached in /var/cache/vmdefrag-tests/qemu-bin by its inputs)
#   make migration-soak HOPS=N [QEMU=path] [QEMU_B=path] [KERNEL=release]
#                   migrates a fragmented, reclaimed guest back and forth
#                   N times between two local QEMUs (side A's binary QEMU,
#                   side B's QEMU_B; default $VMDEFRAG_QEMU or Debian's),
#                   precopy/postcopy alternating, checking guest data and
#                   the backing after every hop (tests/soak/migration_soak.py)
#   make soak ITER=N [SEED=S] [KERNEL=release]
#                   fault-injection soak: N reclaim/return/pressure cycles
#                   on a real guest, each with one kill -9 of vmdefragd or
#                   the agent or a cut of the daemon's QMP connection, then
#                   every page of guest data and the counters checked
#                   (tests/soak/fault_soak.py; SEED replays a run)
#   make guest-kernel
#                   Debian's linux-source-6.1 with the movable-slab series
#                   (guest-agent/kernel-patches/) in a trimmed test-guest
#                   config, into build/guest-kernel/<release>/, and
#                   vmdefrag.ko for it (build-aux/guest-kernel.sh; about
#                   50 min on 2 busy cores from scratch, incremental after)
#   make check-slow the slow tier (tests/slow): a debootstrapped Debian 12
#                   guest installs vmdefrag with DKMS + systemd, the host
#                   reclaims from it; not part of `make check`
#
# In a guest, as root (see README "Guest agent install (DKMS)"):
#   make dkms-install [KVER=<release>]
#                   /usr/src/vmdefrag-VERSION, then dkms add/build/install
#                   for the running kernel (or KVER); re-running replaces
#                   the same version
#   make install-guest [PREFIX=/usr/local] [DESTDIR=]
#                   the agent to $(PREFIX)/sbin, its systemd unit and the
#                   udev rule that starts it when port org.vmdefrag.0 appears,
#                   its man page when scdoc is there to render it
#
# On the host, as root (see README "Host install"):
#   make install [PREFIX=/usr/local] [DESTDIR=]
#                   vmdefragd, vmdefragctl, the libvirt qemu hook, the config
#                   (kept if present), the systemd unit, the domain snippet,
#                   the man pages, the bash completion
#   make uninstall  removes them (the config only if unchanged)
#
# Every output goes under build/.  Each component directory owns its own
# Makefile; this one only sequences them.

BUILD        ?= $(CURDIR)/build
GUEST_KERNELS = $(shell build-aux/guest-kernels.sh)
export BUILD

.PHONY: all deps lib daemon agent module guest unit fuzz check check-unit \
	check-integration demo bench clean dkms-install install-guest check-slow \
	install uninstall qemu qemu-test migration-soak soak man deb guest-kernel

all: lib daemon agent module guest man

deps:
	@build-aux/install-deps.sh

# the shared userspace library; every component below also builds it
# through build-aux/libvdf.mk when it is out of date
lib:
	$(MAKE) -C lib

# Debian's QEMU 7.2 with qemu-patches/series: build/qemu/qemu-system-x86_64
qemu:
	@qemu-patches/build.sh

# the same with the test harness's devices only: build/qemu-test/
qemu-test:
	@QEMU_DEVICES=test qemu-patches/build.sh

# the movable-slab guest kernel and vmdefrag.ko for it
guest-kernel:
	@build-aux/guest-kernel.sh

daemon: lib
	$(MAKE) -C daemon

agent: lib
	$(MAKE) -C guest-agent/agent

guest: agent
	$(MAKE) -C tests/guest

# One self-contained tree per kernel, laid out as DKMS lays it out
# (sources + include/uapi), so the in-tree and DKMS builds are the same build;
# guest-agent/module's Makefile does the layout and builds there.
module:
	@set -e; for k in $(GUEST_KERNELS); do \
		mkdir -p $(BUILD)/module/$$k; \
		$(MAKE) -C guest-agent/module KVER=$$k W= \
			>$(BUILD)/module/$$k/build.log 2>&1 || \
			{ cat $(BUILD)/module/$$k/build.log; exit 1; }; \
		if grep -q 'warning:' $(BUILD)/module/$$k/build.log; then \
			cat $(BUILD)/module/$$k/build.log; exit 1; fi; \
		echo "  KMOD    build/module/$$k/vmdefrag.ko"; \
	done

# Man pages: one scdoc source each (man/NAME.SECTION.scd), the version
# (build-aux/version.sh) substituted for @VERSION@ first.
MAN_SRCS  := $(wildcard man/*.scd)
MAN_PAGES := $(patsubst man/%.scd,$(BUILD)/man/%,$(MAN_SRCS))
man: $(MAN_PAGES)

$(BUILD)/man/%: man/%.scd debian/changelog
	@mkdir -p $(@D)
	@command -v scdoc >/dev/null || \
		{ echo "make man: scdoc is not installed (make deps)" >&2; exit 1; }
	sed 's/@VERSION@/$(VDF_VERSION)/g' $< | scdoc >$@.tmp && mv $@.tmp $@

# The packages, from a copy of the source files (in a git checkout: tracked
# or new, not ignored; else everything but build/) (dpkg-buildpackage writes
# its output next to the source tree, and its build must not touch build/
# of this one): build/deb/*.deb.  Needs the build dependencies that
# debian/control lists (make deps installs them).
deb:
	rm -rf $(BUILD)/deb
	mkdir -p $(BUILD)/deb/vmdefrag-$(VDF_VERSION)
	{ if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git ls-files -z --cached --others --exclude-standard; \
	else find . -path ./build -prune -o -path ./.git -prune -o -type f -print0; fi; } | \
		xargs -0 cp --parents -t $(BUILD)/deb/vmdefrag-$(VDF_VERSION)
	cd $(BUILD)/deb/vmdefrag-$(VDF_VERSION) && \
		dpkg-buildpackage -b -us -uc >../build.log 2>&1 || \
		{ tail -n 40 ../build.log; exit 1; }
	rm -rf $(BUILD)/deb/vmdefrag-$(VDF_VERSION)
	@ls $(BUILD)/deb/*.deb

unit: daemon
	$(MAKE) -C tests/unit

fuzz: daemon
	$(MAKE) -C tests/fuzz

check: deps
	$(MAKE) all unit fuzz qemu-test
	/usr/bin/python3 tests/run-checks

demo: deps
	$(MAKE) all
	tests/demo/run-demo

bench: deps
	$(MAKE) all qemu-test
	tests/bench/run-bench
	tests/bench/slab-bench

HOPS         ?= 4
migration-soak: all
	/usr/bin/python3 tests/soak/migration_soak.py --hops $(HOPS) \
		$(if $(QEMU),--qemu $(QEMU)) $(if $(QEMU_B),--qemu-b $(QEMU_B)) \
		$(if $(KERNEL),--kernel $(KERNEL))

ITER ?= 20
soak: all
	/usr/bin/python3 tests/soak/fault_soak.py --iterations $(ITER) \
		$(if $(SEED),--seed $(SEED)) $(if $(KERNEL),--kernel $(KERNEL))

# ---- guest install (DKMS, systemd, udev) ----------------------------------
# The version lives in one place, debian/changelog's first entry
# (build-aux/version.sh); `make tree` writes it into the DKMS tree's dkms.conf.
VDF_VERSION   = $(shell build-aux/version.sh)
KVER         ?= $(shell uname -r)
PREFIX       ?= /usr/local
GUEST_UNITDIR ?= /etc/systemd/system
GUEST_UDEVDIR ?= /etc/udev/rules.d

dkms-install:
	@test "$$(id -u)" = 0 || { echo "make dkms-install: must run as root" >&2; exit 1; }
	@command -v dkms >/dev/null || \
		{ echo "make dkms-install: dkms is not installed (apt-get install dkms)" >&2; exit 1; }
	@test -d /lib/modules/$(KVER)/build || \
		{ echo "make dkms-install: no headers for $(KVER) (apt-get install linux-headers-$(KVER))" >&2; exit 1; }
	@if [ -n "$$(dkms status -m vmdefrag -v $(VDF_VERSION))" ]; then \
		echo "  DKMS    remove vmdefrag/$(VDF_VERSION)"; \
		dkms remove vmdefrag/$(VDF_VERSION) --all >/dev/null; fi
	rm -rf /usr/src/vmdefrag-$(VDF_VERSION)
	$(MAKE) -C guest-agent/module tree TREE=/usr/src/vmdefrag-$(VDF_VERSION)
	dkms add vmdefrag/$(VDF_VERSION)
	dkms build vmdefrag/$(VDF_VERSION) -k $(KVER)
	dkms install vmdefrag/$(VDF_VERSION) -k $(KVER)

# the agent's man page only where scdoc can render it (a guest building
# from source may not have it; the vmdefrag-agent package always does)
GUEST_MAN     = $(if $(shell command -v scdoc),$(BUILD)/man/vmdefrag-agent.8)
GUEST_MANDIR ?= $(PREFIX)/share/man

install-guest: agent $(GUEST_MAN)
	install -D -m 0755 $(BUILD)/agent/vmdefrag-agent $(DESTDIR)$(PREFIX)/sbin/vmdefrag-agent
	$(if $(GUEST_MAN),install -D -m 0644 $(GUEST_MAN) \
		$(DESTDIR)$(GUEST_MANDIR)/man8/vmdefrag-agent.8)
	install -d $(DESTDIR)$(GUEST_UNITDIR) $(DESTDIR)$(GUEST_UDEVDIR)
	sed 's|@SBINDIR@|$(PREFIX)/sbin|g' configs/guest/vmdefrag-agent.service \
		>$(DESTDIR)$(GUEST_UNITDIR)/vmdefrag-agent.service
	chmod 0644 $(DESTDIR)$(GUEST_UNITDIR)/vmdefrag-agent.service
	install -m 0644 configs/guest/90-vmdefrag-agent.rules $(DESTDIR)$(GUEST_UDEVDIR)/
	@# a running guest picks the files up now, and starts the agent if the
	@# port is already there; a chroot or a DESTDIR install does not
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload && udevadm control --reload && \
		udevadm trigger --subsystem-match=virtio-ports --action=add; fi

# ---- host install (daemon, CLI, libvirt hook, config, systemd) -----------
# make install [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=/etc] ...
# The hook and the unit name installed paths: @BINDIR@, @SBINDIR@ and
# @SYSCONFDIR@ in them are replaced here.  An existing vmdefragd.conf is
# never overwritten; uninstall removes it only if it is still the shipped one.
BINDIR       ?= $(PREFIX)/bin
SBINDIR      ?= $(PREFIX)/sbin
DATADIR      ?= $(PREFIX)/share/vmdefrag
MANDIR       ?= $(PREFIX)/share/man
BASHCOMPDIR  ?= $(PREFIX)/share/bash-completion/completions
SYSCONFDIR   ?= /etc
LIBVIRT_HOOKDIR ?= $(SYSCONFDIR)/libvirt/hooks/qemu.d
SYSTEMD_UNITDIR ?= $(or $(shell pkg-config --variable=systemdsystemunitdir \
			systemd 2>/dev/null),/lib/systemd/system)
HOST_SUBST    = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SBINDIR@|$(SBINDIR)|g' \
		    -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'

HOST_MAN      = vmdefragd.8 vmdefragctl.1 vmdefragd.conf.5

install: daemon $(addprefix $(BUILD)/man/,$(HOST_MAN))
	install -D -m 0755 $(BUILD)/daemon/vmdefragd $(DESTDIR)$(SBINDIR)/vmdefragd
	install -D -m 0755 $(BUILD)/daemon/vmdefragctl $(DESTDIR)$(BINDIR)/vmdefragctl
	@set -e; for m in $(HOST_MAN); do \
		echo "install -D -m 0644 $(BUILD)/man/$$m $(DESTDIR)$(MANDIR)/man$${m##*.}/$$m"; \
		install -D -m 0644 $(BUILD)/man/$$m $(DESTDIR)$(MANDIR)/man$${m##*.}/$$m; done
	install -D -m 0644 configs/bash-completion/vmdefragctl \
		$(DESTDIR)$(BASHCOMPDIR)/vmdefragctl
	install -d $(DESTDIR)$(LIBVIRT_HOOKDIR) $(DESTDIR)$(SYSTEMD_UNITDIR) \
		$(DESTDIR)$(SYSCONFDIR)/vmdefrag $(DESTDIR)$(DATADIR)
	$(HOST_SUBST) configs/libvirt/hooks/qemu.d/vmdefrag \
		>$(DESTDIR)$(LIBVIRT_HOOKDIR)/vmdefrag
	chmod 0755 $(DESTDIR)$(LIBVIRT_HOOKDIR)/vmdefrag
	$(HOST_SUBST) configs/systemd/vmdefragd.service \
		>$(DESTDIR)$(SYSTEMD_UNITDIR)/vmdefragd.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNITDIR)/vmdefragd.service
	install -m 0644 configs/libvirt/domain-snippet.xml $(DESTDIR)$(DATADIR)/
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/vmdefrag/vmdefragd.conf ]; then \
		echo "  KEEP    $(DESTDIR)$(SYSCONFDIR)/vmdefrag/vmdefragd.conf (exists)"; \
	else \
		install -m 0644 configs/vmdefragd.conf \
			$(DESTDIR)$(SYSCONFDIR)/vmdefrag/vmdefragd.conf; \
		echo "  CONF    $(DESTDIR)$(SYSCONFDIR)/vmdefrag/vmdefragd.conf"; fi
	@# services are the admin's to restart; only systemd's view is refreshed
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload; fi
	@echo "  NOTE    libvirtd runs a new hook after a restart or reload"

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/vmdefragd $(DESTDIR)$(BINDIR)/vmdefragctl \
		$(DESTDIR)$(LIBVIRT_HOOKDIR)/vmdefrag \
		$(DESTDIR)$(SYSTEMD_UNITDIR)/vmdefragd.service \
		$(DESTDIR)$(DATADIR)/domain-snippet.xml \
		$(DESTDIR)$(MANDIR)/man8/vmdefragd.8 \
		$(DESTDIR)$(MANDIR)/man1/vmdefragctl.1 \
		$(DESTDIR)$(MANDIR)/man5/vmdefragd.conf.5 \
		$(DESTDIR)$(BASHCOMPDIR)/vmdefragctl
	@if cmp -s configs/vmdefragd.conf $(DESTDIR)$(SYSCONFDIR)/vmdefrag/vmdefragd.conf; then \
		rm -f $(DESTDIR)$(SYSCONFDIR)/vmdefrag/vmdefragd.conf; \
	elif [ -e $(DESTDIR)$(SYSCONFDIR)/vmdefrag/vmdefragd.conf ]; then \
		echo "  KEEP    $(DESTDIR)$(SYSCONFDIR)/vmdefrag/vmdefragd.conf (changed)"; fi
	@for d in $(DESTDIR)$(DATADIR) $(DESTDIR)$(SYSCONFDIR)/vmdefrag; do \
		rmdir $$d 2>/dev/null || :; done
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload; fi

check-slow: deps
	$(MAKE) all
	VMDEFRAG_TIERS=slow /usr/bin/python3 tests/run-checks

clean:
	rm -rf $(BUILD)
	$(MAKE) -C guest-agent/module clean
