/* SPDX-License-Identifier: GPL-2.0 */
/*
 * file.h - small files of the kernel's (prefix file_): a sysfs attribute,
 * a /proc/sys knob, read whole in one read().
 */
#ifndef VDF_FILE_H
#define VDF_FILE_H

#include <stddef.h>

/*
 * Reads at most size - 1 bytes of path (one read(), enough for an
 * attribute) into buf and NUL-terminates them; size > 0.  Negative errno
 * from open() or read(); buf is untouched then.
 */
int file_read_short(const char *path, char *buf, size_t size);

#endif /* VDF_FILE_H */
