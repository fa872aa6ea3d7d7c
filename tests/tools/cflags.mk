# Compiler settings shared by every userspace component.  Included by the
# component Makefiles; the kernel module uses Kbuild instead.
TOP      := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/../..)
BUILD    ?= $(TOP)/build
CC       ?= cc
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
	    -D_GNU_SOURCE -I$(TOP)/include -I$(TOP)/daemon
LIBNL_CFLAGS := $(shell pkg-config --cflags libnl-genl-3.0)
LIBNL_LIBS   := $(shell pkg-config --libs libnl-genl-3.0)
JSONC_CFLAGS := $(shell pkg-config --cflags json-c)
JSONC_LIBS   := $(shell pkg-config --libs json-c)
# libvirt mode of the daemon (virDomainQemuMonitorCommand lives in
# libvirt-qemu) and the domain XML reader shared by daemon and CLI.
# Recursive (=): evaluated only where used, so the guest agent also builds
# inside a guest that has no libvirt.
VIRT_CFLAGS   = $(shell pkg-config --cflags libvirt libvirt-qemu libxml-2.0)
VIRT_LIBS     = $(shell pkg-config --libs libvirt libvirt-qemu libxml-2.0) -lpthread
