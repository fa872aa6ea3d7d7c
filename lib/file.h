/* SPDX-License-Identifier: GPL-2.0 */
/*
 * file.h - small files (prefix file_): a sysfs attribute or a /proc/sys
 * knob read whole in one read(); a state file replaced whole.
 */
#ifndef VDF_FILE_H
#define VDF_FILE_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Reads at most size - 1 bytes of path (one read(), enough for an
 * attribute) into buf and NUL-terminates them; size > 0.  Negative errno
 * from open() or read(); buf is untouched then.
 */
int file_read_short(const char *path, char *buf, size_t size);

/*
 * Replaces path with the len bytes of data, so that a reader or a crash
 * sees the old file or the new one, never a part: written to path.tmp
 * (O_NOFOLLOW), fsync'ed, renamed over path.  0 or negative errno; the
 * temporary file is removed on failure.
 */
int file_replace(const char *path, const void *data, size_t len, mode_t mode);

#endif /* VDF_FILE_H */
