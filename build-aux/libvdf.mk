# The shared userspace library for a component that links it.  Include
# after the component's first rule (this one must not become the default
# goal); then list $(VDF_LIB) as a prerequisite and in the link line.
# lib/'s own Makefile decides whether the archive is out of date.
VDF_LIB := $(BUILD)/lib/libvdf.a

$(VDF_LIB): vdf-lib
	@:

vdf-lib:
	@$(MAKE) --no-print-directory -C $(TOP)/lib

.PHONY: vdf-lib
