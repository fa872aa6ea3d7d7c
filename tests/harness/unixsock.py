"""Connecting to a unix socket that a process is about to create."""
import socket
import time


def connect_unix(path, timeout, interval=0.05, check=None):
    """A socket connected to `path`, retrying while it is missing or refused;
    the last error is raised once `timeout` seconds have passed.  `check`,
    if given, runs before every attempt and may raise to give up early
    (the process that should create the socket died)."""
    deadline = time.monotonic() + timeout
    while True:
        if check:
            check()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)
