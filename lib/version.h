/* SPDX-License-Identifier: GPL-2.0 */
/*
 * version.h - vmdefrag's version (prefix version_), the same in every
 * program.  It has one source, the first entry of debian/changelog
 * (build-aux/version.sh); the build compiles it into version.c only.
 */
#ifndef VDF_VERSION_H
#define VDF_VERSION_H

/* "0.1": the version string. */
const char *version_string(void);

/* "PROG VERSION" and a newline on stdout: what -V/--version print. */
void version_print(const char *prog);

#endif /* VDF_VERSION_H */
