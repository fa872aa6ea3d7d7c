"""rootfs: cached Debian 12 root filesystems for the install tests.

What it owns: making a bookworm rootfs with debootstrap once, keeping it as
a tarball under the cache directory, and handing each test a fresh copy.
Two package lists: PACKAGES, a guest that builds and boots (the slow
guest-install test), and HOST_PACKAGES, the least a host needs to install
the vmdefrag package with dpkg (tests/integration/test_packages.py).
Every function takes the list (default PACKAGES).

Model: the tarball's name carries a hash of everything that decides its
contents (suite, variant, package list, this builder's version), so
changing the package list builds a new one and never reuses a stale one:

    cache_dir()/rootfs-<hash>.tar   (made by build(), atomically renamed)

The mirror is read at run time from the host's apt sources (the first
"deb" URI serving bookworm main), never written into this file.  The
cache directory is $VMDEFRAG_ROOTFS_CACHE or /var/cache/vmdefrag-tests.

Run as a script to build (or just locate) the cached tarball:
    /usr/bin/python3 tests/slow/rootfs.py [--host]
"""
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from chroot import mounts_below

SUITE = "bookworm"
VARIANT = "minbase"
BUILDER_VERSION = "1"
PACKAGES = sorted([
    "systemd", "systemd-sysv", "udev", "kmod", "dkms", "build-essential",
    "libnl-genl-3-dev", "pkg-config", "linux-image-amd64",
    "linux-headers-amd64", "initramfs-tools", "ca-certificates",
])
# the vmdefrag package's Depends (libvirt0, libjson-c5, libxml2, procps for
# the unit's ExecReload=/bin/kill), systemd for systemd-analyze and man-db
# for the unit's Documentation= pages
HOST_PACKAGES = sorted(["systemd", "libvirt0", "libjson-c5", "libxml2", "procps",
                        "man-db"])


class RootfsError(Exception):
    pass


def cache_dir():
    return Path(os.environ.get("VMDEFRAG_ROOTFS_CACHE", "/var/cache/vmdefrag-tests"))


def cache_key(packages=None):
    text = "\n".join([SUITE, VARIANT, BUILDER_VERSION] + sorted(packages or PACKAGES))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tarball(packages=None):
    return cache_dir() / f"rootfs-{cache_key(packages)}.tar"


def _deb822_mirrors(text):
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, val = line.partition(":")
            fields[key.strip().lower()] = val.split()
        if ("deb" in fields.get("types", []) and SUITE in fields.get("suites", [])
                and "main" in fields.get("components", [])):
            yield from fields.get("uris", [])


def _one_line_mirrors(text):
    for line in text.splitlines():
        parts = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(parts) >= 4 and parts[0] == "deb" and parts[2] == SUITE \
                and "main" in parts[3:]:
            yield parts[1]


def mirror():
    """The host's Debian mirror for bookworm main, from its apt sources."""
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        found = _deb822_mirrors(text) if path.endswith(".sources") else \
            _one_line_mirrors(text) if path.endswith(".list") else ()
        for uri in found:
            return uri
    raise RootfsError("no apt source for bookworm main on this host")


def build(packages=None):
    """Returns the cached rootfs tarball, running debootstrap if it is missing."""
    packages = packages or PACKAGES
    out = tarball(packages)
    if out.exists():
        return out
    if shutil.which("debootstrap") is None:
        raise RootfsError("debootstrap is not installed (make deps)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="vdf-rootfs-", dir=out.parent))
    root = tmp / "root"
    try:
        log = out.parent / f"debootstrap-{cache_key(packages)}.log"
        with open(log, "wb") as f:
            proc = subprocess.run(
                ["debootstrap", f"--variant={VARIANT}", "--arch=amd64",
                 "--include=" + ",".join(packages), SUITE, str(root), mirror()],
                stdout=f, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RootfsError(f"debootstrap exited {proc.returncode}, see {log}")
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        part = tmp / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root),
                        "-cf", str(part), "."], check=True)
        os.rename(part, out)
    finally:
        # an interrupted debootstrap can leave /proc or /sys mounted in
        # the target: never let rmtree walk into them
        for mnt in mounts_below(tmp):
            if subprocess.run(["umount", mnt]).returncode != 0:
                subprocess.run(["umount", "-l", mnt])
        if not mounts_below(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def extract(dest, packages=None):
    """Unpacks a fresh copy of the cached rootfs into `dest` (created)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(dest),
                    "-xf", str(build(packages))], check=True)
    return dest


def kernel_release(root):
    """The release of the (single) kernel installed in the rootfs."""
    kernels = sorted(p.name[len("vmlinuz-"):] for p in (Path(root) / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise RootfsError(f"expected one kernel in the rootfs, found {kernels}")
    return kernels[0]


if __name__ == "__main__":
    try:
        print(build(HOST_PACKAGES if sys.argv[1:] == ["--host"] else None))
    except RootfsError as e:
        print(f"rootfs: {e}", file=sys.stderr)
        sys.exit(1)
