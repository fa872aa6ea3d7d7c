# vmdefrag — top-level build.
#
#   make            build vmdefragd, vmdefragctl, vmdefrag-agent, the guest
#                   test programs, and vmdefrag.ko for every installed guest
#                   kernel (build/module/<release>/vmdefrag.ko)
#   make deps       install the Debian packages everything needs (as root)
#   make check      deps + build + every test; ends with "N passed, N failed"
#   make demo       the main job end to end on the built-in demo guest
#   make bench      benchmarks against the reference mechanisms
#
# Every output goes under build/.  Each component directory owns its own
# Makefile; this one only sequences them.

BUILD        ?= $(CURDIR)/build
GUEST_KERNELS = $(shell tests/tools/guest-kernels.sh)
export BUILD

.PHONY: all deps daemon agent module guest unit fuzz check check-unit \
	check-integration demo bench clean

all: daemon agent module guest

deps:
	@tests/tools/install-deps.sh

daemon:
	$(MAKE) -C daemon

agent:
	$(MAKE) -C guest-agent/agent

guest:
	$(MAKE) -C tests/guest

# One self-contained tree per kernel, laid out as DKMS lays it out
# (sources + include/uapi), so the in-tree and DKMS builds are the same build.
module:
	@set -e; for k in $(GUEST_KERNELS); do \
		$(MAKE) -C guest-agent/module tree TREE=$(BUILD)/module/$$k; \
		$(MAKE) -C /lib/modules/$$k/build M=$(BUILD)/module/$$k W= modules \
			>$(BUILD)/module/$$k/build.log 2>&1 || \
			{ cat $(BUILD)/module/$$k/build.log; exit 1; }; \
		if grep -q 'warning:' $(BUILD)/module/$$k/build.log; then \
			cat $(BUILD)/module/$$k/build.log; exit 1; fi; \
		echo "  KMOD    build/module/$$k/vmdefrag.ko"; \
	done

unit: daemon
	$(MAKE) -C tests/unit

fuzz: daemon
	$(MAKE) -C tests/fuzz

check: deps
	$(MAKE) all unit fuzz
	/usr/bin/python3 tests/run-checks

demo: deps
	$(MAKE) all
	tests/demo/run-demo

bench: deps
	$(MAKE) all
	tests/bench/run-bench

clean:
	rm -rf $(BUILD)
	$(MAKE) -C guest-agent/module clean
