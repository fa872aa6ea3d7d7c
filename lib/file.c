// SPDX-License-Identifier: GPL-2.0
/*
 * file.c - small kernel files read in one go.
 *
 * sysfs attributes and /proc/sys knobs hand their whole value to the first
 * read(), so one call into a caller's buffer is all the agent (virtio port
 * attributes) and the host benchmark (THP and hugetlb knobs) need.
 */
#include <errno.h>
#include <fcntl.h>
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
