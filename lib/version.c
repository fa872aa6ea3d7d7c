// SPDX-License-Identifier: GPL-2.0
/*
 * version.c - the version every program reports.  VDF_VERSION comes from
 * the build (build-aux/cflags.mk, lib/Makefile), which takes it from
 * debian/changelog; nothing else in the C code spells a version.
 */
#include <stdio.h>

#include "version.h"

#ifndef VDF_VERSION
#error "VDF_VERSION is set by lib/Makefile (build-aux/cflags.mk)"
#endif

const char *version_string(void)
{
	return VDF_VERSION;
}

void version_print(const char *prog)
{
	printf("%s %s\n", prog, VDF_VERSION);
}
