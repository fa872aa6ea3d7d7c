"""The patched QEMU that make check builds can stand in for Debian's.

`make qemu-test` builds qemu-patches/ with a reduced device list
(qemu-patches/devices-test.mak).  A migration between two QEMUs needs the
same devices on both ends: a section the destination does not know fails
the load ("Unknown savevm section or instance 'hpet'"), so a device the
stock binary instantiates by default and the reduced one lacks breaks every
stock -> patched migration.  This test starts both binaries with the test
harness's own command line (paused, no kernel) and compares the devices
they instantiate, from `info qtree`, and that the patched one carries the
series' mark in QMP query-version.  It takes seconds where the same fault
found by a migration takes minutes.
"""
import collections
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.guest import PATCHED_MARK, Guest, default_qemu, guest_kernels, patched_qemu
from harness.qmp import QMP


def harness_args(qemu, workdir):
    """The harness's QEMU command line for `qemu`, paused, without the
    kernel: only the machine and its devices matter here."""
    g = Guest(guest_kernels()[0], ram_mib=256, backend="memfd", qemu=qemu)
    g.workdir = workdir
    args, skip = [], 0
    for a in g.qemu_args(initrd=None):
        if skip:
            skip -= 1
        elif a in ("-kernel", "-initrd", "-append"):
            skip = 1
        else:
            args.append(a)
    return args + ["-S"]


def devices_of(qemu):
    """The multiset of device types `qemu` instantiates, and its version."""
    with tempfile.TemporaryDirectory(prefix="vdf-qtree-") as d:
        args = harness_args(qemu, Path(d))
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            qmp = QMP(Path(d) / "qmp.sock")
            tree = qmp.hmp("info qtree")
            version = qmp.command("query-version")
            qmp.command("quit")
            qmp.close()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return collections.Counter(re.findall(r"dev: ([\w.-]+),", tree)), version


def test_patched_qemu_has_stock_devices():
    qemu = patched_qemu()
    if qemu is None:
        pytest.skip("no patched QEMU: make qemu-test (make check builds it)")
    patched, version = devices_of(qemu)
    stock, _ = devices_of(default_qemu())
    assert PATCHED_MARK in version["package"], version
    assert stock, "no device found in the stock QEMU's qtree"
    assert patched == stock, {"only stock": stock - patched, "only patched": patched - stock}
