/* SPDX-License-Identifier: GPL-2.0 */
/*
 * port.c - discovery and I/O of the agent's virtio-serial port.
 *
 * The port is found by name (org.vmdefrag.0).  With udev there is a link
 * /dev/virtio-ports/<name>; without it (a busybox initramfs, a minimal
 * guest) the kernel still lists every port under /sys/class/virtio-ports/
 * with a `name` file, and the device node is /dev/<vportNpM> on devtmpfs.
 * When even that node is missing it is made from the port's `dev` numbers.
 *
 * Host connection state, as the guest's virtio_console driver exposes it:
 * while no host process holds the port open, poll() reports POLLHUP, read()
 * returns 0 and writes would block.  The fd stays valid across host
 * disconnects, so the agent keeps it and watches for POLLHUP to clear.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "file.h"
#include "port.h"

#define AGENT_PORT_SYSFS "/sys/class/virtio-ports"

/* Read a short sysfs attribute without its trailing newline. */
static int agent_port_read_attr(const char *dir, const char *attr, char *buf,
				size_t size)
{
	char path[512];
	int r;

	snprintf(path, sizeof(path), "%s/%s/%s", AGENT_PORT_SYSFS, dir, attr);
	r = file_read_short(path, buf, size);
	if (r < 0)
		return r;
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* Make /dev/<dir> from /sys/class/virtio-ports/<dir>/dev if it is missing. */
static int agent_port_mknod(const char *dir, const char *path)
{
	unsigned int maj, min;
	char dev[32];
	int r;

	r = agent_port_read_attr(dir, "dev", dev, sizeof(dev));
	if (r < 0)
		return r;
	if (sscanf(dev, "%u:%u", &maj, &min) != 2)
		return -EINVAL;
	if (mknod(path, S_IFCHR | 0600, makedev(maj, min)) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int agent_port_find(const char *name, char *ret_path, size_t size)
{
	char path[512], pname[256];
	struct dirent *de;
	DIR *d;
	int r = -ENOENT;

	snprintf(path, sizeof(path), "/dev/virtio-ports/%s", name);
	if (access(path, F_OK) == 0) {
		if (strlen(path) >= size)
			return -ENAMETOOLONG;
		strcpy(ret_path, path);
		return 0;
	}

	d = opendir(AGENT_PORT_SYSFS);
	if (!d)
		return errno == ENOENT ? -ENOENT : -errno;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (agent_port_read_attr(de->d_name, "name", pname, sizeof(pname)) < 0 ||
		    strcmp(pname, name) != 0)
			continue;
		snprintf(path, sizeof(path), "/dev/%s", de->d_name);
		if (access(path, F_OK) != 0) {
			r = agent_port_mknod(de->d_name, path);
			if (r < 0)
				break;
		}
		if (strlen(path) >= size) {
			r = -ENAMETOOLONG;
			break;
		}
		strcpy(ret_path, path);
		r = 0;
		break;
	}
	closedir(d);
	return r;
}

int agent_port_open(const char *path, int *ret_fd)
{
	int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

bool agent_port_host_connected(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, 0) < 0)
		return false;
	return !(p.revents & (POLLHUP | POLLERR | POLLNVAL));
}
