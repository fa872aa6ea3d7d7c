// SPDX-License-Identifier: GPL-2.0
/*
 * file.c - small files read or written in one go.
 *
 * sysfs attributes and /proc/sys knobs hand their whole value to the first
 * read(), so one call into a caller's buffer is all the agent (virtio port
 * attributes) and the host benchmark (THP and hugetlb knobs) need.
 *
 * The daemon's state files (policy modes, counters and history) and the
 * metrics textfile are replaced whole: a temporary file beside the target,
 * fsync'ed, then renamed over it (rename is atomic within a file system).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "file.h"

int file_read_short(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	if (n < 0) {
		n = -errno;
		close(fd);
		return (int)n;
	}
	close(fd);
	buf[n] = '\0';
	return 0;
}

int file_replace(const char *path, const void *data, size_t len, mode_t mode)
{
	const char *p = data;
	char tmp[4096 + 8];
	size_t off = 0;
	int fd, r = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	while (off < len) {
		ssize_t n = write(fd, p + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		(void)unlink(tmp);
	return r;
}
