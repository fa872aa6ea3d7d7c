"""Cuts a live unix socket connection of another process, for fault tests.

    cut_unix_server_conns(qemu_pid, "/path/daemon-qmp.sock")   # -> 1

Every connection `pid` accepted on its listening socket `path` (QEMU's QMP
server, say) is shut down for both directions: the fd is duplicated out of
the process (pidfd_getfd(2), root) and shutdown(SHUT_RDWR) is called on
the copy, which is the same socket.  The server then reads EOF and drops
its client, and the client (vmdefragd) sees its connection end in the
middle of whatever it was doing, as when a link dies: no process is
stopped, nothing sits in between (a relay would hide QEMU's pid, which
the daemon reads with SO_PEERCRED).

Accepted sockets carry their listener's address, so /proc/net/unix names
them by `path`; the listening socket itself (state 01) is left alone.
"""
import ctypes
import os
import socket

_SYS_PIDFD_GETFD = 438
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_CONNECTED = "03"


def conn_inodes(path):
    """Inodes of connected (accepted) sockets bound to `path`."""
    inodes = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == str(path) and parts[5] == _CONNECTED:
                inodes.add(int(parts[6]))
    return inodes


def _fds_of(pid, inodes):
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            found.append(int(fd))
    return found


def cut_unix_server_conns(pid, path):
    """Shuts down every connection `pid` accepted on `path`; how many."""
    fds = _fds_of(pid, conn_inodes(path))
    if not fds:
        return 0
    pidfd = os.pidfd_open(pid)
    try:
        for fd in fds:
            copy = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
            if copy < 0:
                e = ctypes.get_errno()
                raise OSError(e, f"pidfd_getfd({pid}, {fd}): {os.strerror(e)}")
            s = socket.socket(fileno=copy)
            try:
                s.shutdown(socket.SHUT_RDWR)
            finally:
                s.close()
    finally:
        os.close(pidfd)
    return len(fds)
