# Compiler settings shared by every userspace component.  Included by the
# component Makefiles; the kernel module uses Kbuild instead.  Headers:
# include/ (contracts between components) and lib/ (the shared library,
# build-aux/libvdf.mk); a component's own folder is its own business.
TOP      := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
BUILD    ?= $(TOP)/build
CC       ?= cc
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
	    -D_GNU_SOURCE -I$(TOP)/include -I$(TOP)/lib
# vmdefrag's version, from its one place (build-aux/version.sh reads the
# first entry of debian/changelog); lib/version.c is the only C file
# compiled with it (-DVDF_VERSION), so a new version rebuilds one object.
VDF_VERSION  := $(shell $(TOP)/build-aux/version.sh)
ifeq ($(VDF_VERSION),)
$(error no version: build-aux/version.sh failed)
endif
LIBNL_CFLAGS := $(shell pkg-config --cflags libnl-genl-3.0)
LIBNL_LIBS   := $(shell pkg-config --libs libnl-genl-3.0)
# Host-only libraries are recursive (=), evaluated only where used, so the
# guest agent (libnl only) builds inside a guest that has none of them:
# json-c for the daemon and CLI; libvirt, libvirt-qemu (where
# virDomainQemuMonitorCommand lives) and libxml2 for libvirt mode and the
# domain XML reader.
JSONC_CFLAGS  = $(shell pkg-config --cflags json-c)
JSONC_LIBS    = $(shell pkg-config --libs json-c)
VIRT_CFLAGS   = $(shell pkg-config --cflags libvirt libvirt-qemu libxml-2.0)
VIRT_LIBS     = $(shell pkg-config --libs libvirt libvirt-qemu libxml-2.0) -lpthread
