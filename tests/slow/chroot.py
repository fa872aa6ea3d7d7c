"""chroot: run commands inside an unpacked rootfs with /proc, /sys, /dev.

What it owns: the bind mounts a chroot needs and taking them down again on
every path.  `Chroot(root)` is a context manager; `run(script)` runs a
shell script in it with a clean environment.  On exit every mount below
`root` is unmounted, deepest first, lazily if a plain umount fails, and the
exit raises if any is still there, so no caller deletes a tree that still
reaches the host's /dev or /sys.
"""
import subprocess
from pathlib import Path

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


def mounts_below(path):
    """Mount points at or below `path`, deepest first."""
    path = str(Path(path).resolve())
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mnt = line.split()[1].encode().decode("unicode_escape")
            if mnt == path or mnt.startswith(path + "/"):
                found.append(mnt)
    return sorted(found, key=len, reverse=True)


class ChrootError(Exception):
    pass


class Chroot:
    def __init__(self, root):
        self.root = Path(root).resolve()

    def __enter__(self):
        try:
            for src, dst, args in (("proc", "proc", ["-t", "proc"]),
                                   ("sysfs", "sys", ["-t", "sysfs"]),
                                   ("/dev", "dev", ["--bind"])):
                subprocess.run(["mount", *args, src, str(self.root / dst)], check=True)
        except BaseException:
            self._unmount()
            raise
        return self

    def __exit__(self, *exc):
        self._unmount()
        return False

    def _unmount(self):
        for mnt in mounts_below(self.root):
            if subprocess.run(["umount", mnt]).returncode != 0:
                subprocess.run(["umount", "-l", mnt])
        left = mounts_below(self.root)
        if left:
            raise ChrootError(f"could not unmount {left}")

    def run(self, script, log, timeout=1200):
        """Runs `script` with sh -e in the chroot, output appended to `log`;
        returns its exit status."""
        with open(log, "ab") as f:
            f.write(b"\n### chroot: " + script.encode() + b"\n")
            f.flush()
            proc = subprocess.run(["chroot", str(self.root), "/bin/sh", "-ec", script],
                                  env=ENV, stdin=subprocess.DEVNULL, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        return proc.returncode
