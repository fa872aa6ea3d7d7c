"""Which folios back a QEMU process's memfd RAM, measured by the kernel.

    huge_blocks(pid, ram_bytes, offsets) -> {offset: True/False}

For each 2 MiB-aligned offset of the guest RAM backing file, maps the file
read-only and shared from /proc/PID/fd/N (this process's own mapping, so
QEMU's is untouched), reads the first and the last 4 KiB page of the block,
and asks /proc/self/pagemap for their page frames and /proc/kpageflags for
their flags.  A block is backed by one 2 MiB folio when its first page is a
compound head (THP), its last page a compound tail, and the two frames are
511 apart.

Reading faults a page in: call this only on blocks known to hold data (a
read of a hole in a memfd allocates a 4 KiB page there).  Needs root.
"""
import ctypes
import os
import struct

from . import hostmem

PAGE = 4096
BLOCK = 2 << 20
KPF_COMPOUND_HEAD = 1 << 15
KPF_COMPOUND_TAIL = 1 << 16
KPF_THP = 1 << 22
PM_PRESENT = 1 << 63
PFN_MASK = (1 << 55) - 1

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PROT_READ, MAP_SHARED = 1, 1


def _u64_at(fd, index):
    data = os.pread(fd, 8, index * 8)
    return struct.unpack("<Q", data)[0] if len(data) == 8 else 0


def huge_blocks(pid, ram_bytes, offsets):
    fds = hostmem.ram_backing_fds(pid, ram_bytes)
    if not fds:
        raise RuntimeError("no memfd backing of the guest RAM in /proc/%d/fd" % pid)
    fd = os.open(fds[0][0], os.O_RDONLY)
    addr = _libc.mmap(None, ram_bytes, PROT_READ, MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        os.close(fd)
        raise OSError(ctypes.get_errno(), "mmap of the guest RAM backing")
    pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    kflags = os.open("/proc/kpageflags", os.O_RDONLY)
    out = {}
    try:
        for off in offsets:
            assert off % BLOCK == 0 and off + BLOCK <= ram_bytes
            first, last = addr + off, addr + off + BLOCK - PAGE
            ctypes.c_char.from_address(first).value     # fault in (read)
            ctypes.c_char.from_address(last).value
            e1 = _u64_at(pagemap, first // PAGE)
            e2 = _u64_at(pagemap, last // PAGE)
            if not (e1 & PM_PRESENT and e2 & PM_PRESENT):
                out[off] = False
                continue
            p1, p2 = e1 & PFN_MASK, e2 & PFN_MASK
            f1, f2 = _u64_at(kflags, p1), _u64_at(kflags, p2)
            out[off] = bool(f1 & KPF_COMPOUND_HEAD and f1 & KPF_THP and
                            f2 & KPF_COMPOUND_TAIL and p2 == p1 + BLOCK // PAGE - 1)
    finally:
        os.close(kflags)
        os.close(pagemap)
        _libc.munmap(addr, ram_bytes)
        os.close(fd)
    return out


def data_blocks(pid, ram_bytes):
    """Offsets of the 2 MiB blocks of the backing wholly holding data."""
    blocks = set()
    for start, end in hostmem.backing_data_map(pid, ram_bytes):
        first = (start + BLOCK - 1) // BLOCK * BLOCK
        for off in range(first, end - BLOCK + 1, BLOCK):
            blocks.add(off)
    return blocks
