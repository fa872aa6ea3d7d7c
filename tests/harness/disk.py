"""Disk: a raw ext4 image on the host, attached to a Guest as virtio-blk.

    with Ext4Disk(size_mib=1024, inodes=300000) as disk:
        with Guest(kernel, extra_args=disk.qemu_args()) as g:
            disk.mount(g)                 # loads virtio_blk + ext4, mounts
            g.check("slabtree build /mnt/disk ...")
            disk.unmount(g)               # a clean shutdown: umount first
        rc, out = disk.fsck()             # fsck.ext4 -n -f on the image

The test guests otherwise live in tmpfs, whose dentries and inodes can never
be freed; a real filesystem is what gives the slab workload reclaimable
dentries, inodes, page-cache xarray nodes and buffer heads.  The image is
made on the host with mkfs.ext4 (e2fsprogs) without metadata_csum, so the
guest needs no crc32c module; the guest mounts it with its own kernel's
ext4 module, which the initramfs ships unloaded (initramfs.DISK_MODULES).
The image lives in a private temporary directory removed on exit.
"""
import shutil
import subprocess
import tempfile
from pathlib import Path

GUEST_DEV = "/dev/vda"
GUEST_MNT = "/mnt/disk"


class Ext4Disk:
    def __init__(self, size_mib=1024, inodes=300000):
        self.size_mib = size_mib
        self.inodes = inodes
        self.dir = None
        self.path = None

    def __enter__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="vdf-disk-"))
        self.path = self.dir / "ext4.img"
        with open(self.path, "wb") as f:
            f.truncate(self.size_mib << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^metadata_csum",
                        "-N", str(self.inodes), "-E",
                        "lazy_itable_init=0,lazy_journal_init=0",
                        str(self.path)], check=True, capture_output=True)
        return self

    def __exit__(self, *exc):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def qemu_args(self):
        return ["-drive", f"file={self.path},format=raw,if=none,id=disk0,"
                          "cache=writeback,aio=threads",
                "-device", "virtio-blk-pci,drive=disk0"]

    @staticmethod
    def mount(g, options=""):
        """Loads the disk modules (those already loaded are fine) and mounts
        the disk on GUEST_MNT."""
        g.check("for m in $(cat /etc/disk-modules); do "
                "grep -q \"^$m \" /proc/modules || "
                "insmod /lib/modules/disk/$m.ko || exit 1; done; "
                f"for i in $(seq 50); do [ -b {GUEST_DEV} ] && break; sleep 0.2; done; "
                f"mkdir -p {GUEST_MNT} && mount -t ext4 "
                + (f"-o {options} " if options else "")
                + f"{GUEST_DEV} {GUEST_MNT}")

    @staticmethod
    def unmount(g):
        g.check(f"sync && umount {GUEST_MNT}", timeout=600)

    def fsck(self):
        """(exit status, output) of fsck.ext4 -n -f on the image."""
        out = subprocess.run(["fsck.ext4", "-n", "-f", str(self.path)],
                             capture_output=True, text=True)
        return out.returncode, out.stdout + out.stderr


RACERS = ("walker", "writer", "churn")


def start_racers(g, tree, churn=False):
    """Starts, in the background of guest g, a walker of the slabtree tree
    (lookups and negative dentries) and a writer that writes and verifies
    small trees under GUEST_MNT/t, both until stop_racers(); with churn, also
    fschurn (renames, truncates of multi-node files, negative lookups) under
    GUEST_MNT/churn."""
    if not churn:
        g.check("echo done > /run/churn.done")
    else:
        g.check(f"mkdir -p {GUEST_MNT}/churn; (fschurn {GUEST_MNT}/churn --until "
                "/run/stop >/run/churn.out 2>&1 || echo churn-failed >> "
                "/run/race.err; echo done > /run/churn.done) </dev/null "
                ">/dev/null 2>&1 &")
    g.check(f"(while [ ! -e /run/stop ]; do slabtree walk {tree} --neg 2000 "
            ">/dev/null || echo walk-failed >> /run/race.err; done; "
            "echo done > /run/walker.done) </dev/null >/dev/null 2>&1 &")
    g.check(f"(i=0; while [ ! -e /run/stop ]; do i=$((i+1)); "
            f"slabtree write {GUEST_MNT}/t --files 300 --seed $i >/dev/null && "
            f"slabtree wverify {GUEST_MNT}/t --files 300 --seed $i >/dev/null || "
            "echo write-failed >> /run/race.err; done; "
            "echo done > /run/writer.done) </dev/null >/dev/null 2>&1 &")


def stop_racers(g):
    """Stops start_racers()'s racers, waits for all of them, and returns
    what they reported failing (a "...-failed" line each) followed by
    fschurn's summary line when it ran."""
    done = " || ".join(f"[ ! -e /run/{r}.done ]" for r in RACERS)
    g.check(f"touch /run/stop; while {done}; do sleep 1; done", timeout=900)
    return g.run("cat /run/race.err /run/churn.out")[1]
