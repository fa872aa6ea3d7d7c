"""Host-side measurements of a QEMU process's guest RAM.

These read the kernel's own accounting and never ask the daemon, so tests
check real effects independently of vmdefragd's counters:

  backing_bytes      bytes allocated in the RAM backing file (st_blocks of
                     the memfd / file QEMU holds open)
  resident_pages     per 2 MiB block of the backing, the pages the page
                     cache holds (mincore(2)): written or fallocated, so
                     0 means the block is a hole whole, whatever SEEK_DATA
                     says of fallocated pages never written (shmem calls
                     them holes)
  populate_written   makes every page of the backing present and written
                     (MADV_POPULATE_WRITE on a shared mapping: allocates
                     holes, marks fallocated pages up to date, never
                     changes a byte already there)
  rss                RssAnon / RssShmem / RssFile of the QEMU process
  huge_mapped_bytes  bytes of guest RAM mapped by PMD (2 MiB) mappings:
                     AnonHugePages + ShmemPmdMapped + FilePmdMapped of the
                     guest RAM mapping(s) in /proc/PID/smaps
  buddyinfo_*        parse a guest's /proc/buddyinfo text
"""
import ctypes
import mmap
import os
import re

PAGE = 4096
BLOCK = 2 << 20


def ram_backing_fds(pid, ram_bytes):
    """(fd path, link target) of files of exactly ram_bytes QEMU holds open."""
    found = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        path = f"{fd_dir}/{fd}"
        try:
            target = os.readlink(path)
            st = os.stat(path)
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:", "anon_inode:", "/dev/")):
            continue
        if st.st_size == ram_bytes:
            found.append((path, target))
    return found


def backing_bytes(pid, ram_bytes):
    """Bytes allocated in the guest RAM backing file, or None if anonymous."""
    fds = ram_backing_fds(pid, ram_bytes)
    if not fds:
        return None
    return sum(os.stat(path).st_blocks * 512 for path, _ in fds)


def backing_data_map(pid, ram_bytes):
    """Sorted [start, end) byte ranges of the backing that hold data."""
    fds = ram_backing_fds(pid, ram_bytes)
    if not fds:
        return []
    fd = os.open(fds[0][0], os.O_RDONLY)
    ranges, off = [], 0
    try:
        while off < ram_bytes:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, end))
            off = end
    finally:
        os.close(fd)
    return ranges


_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


_MADV_POPULATE_WRITE = 23


def _map_backing(pid, ram_bytes, prot):
    fds = ram_backing_fds(pid, ram_bytes)
    if not fds:
        return None
    fd = os.open(fds[0][0], os.O_RDWR if prot & mmap.PROT_WRITE else os.O_RDONLY)
    try:
        addr = _libc.mmap(None, ram_bytes, prot, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            e = ctypes.get_errno()
            raise OSError(e, f"mmap of the RAM backing: {os.strerror(e)}")
    finally:
        os.close(fd)
    return addr


def populate_written(pid, ram_bytes):
    """Every page of the RAM backing present and up to date.  shmem keeps
    fallocate()d pages "not up to date" until first written, and SEEK_DATA
    and mincore() both call those holes; a write fault through a shared
    mapping zeroes such a page (it holds nothing yet) and leaves any page
    already written as it is."""
    addr = _map_backing(pid, ram_bytes, mmap.PROT_READ | mmap.PROT_WRITE)
    if addr is None:
        raise OSError("populate_written needs a file-backed RAM backend")
    try:
        if _libc.madvise(addr, ram_bytes, _MADV_POPULATE_WRITE) < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"MADV_POPULATE_WRITE: {os.strerror(e)}")
    finally:
        _libc.munmap(addr, ram_bytes)


def resident_pages(pid, ram_bytes):
    """[resident 4 KiB pages of each 2 MiB block] of the guest RAM backing
    file, from mincore(2) on a read-only mapping of it (nothing is faulted
    in), or None if the RAM is anonymous."""
    addr = _map_backing(pid, ram_bytes, mmap.PROT_READ)
    if addr is None:
        return None
    try:
        vec = ctypes.create_string_buffer(ram_bytes // PAGE)
        if _libc.mincore(addr, ram_bytes, vec) < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"mincore: {os.strerror(e)}")
    finally:
        _libc.munmap(addr, ram_bytes)
    per = BLOCK // PAGE
    raw = vec.raw
    return [sum(b & 1 for b in raw[i:i + per]) for i in range(0, len(raw), per)]


def rss(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssShmem", "RssFile"):
                out[key] = int(val.split()[0]) * 1024
    return out


def parse_smaps(text):
    """Yields (header line, {field: bytes}) for each mapping in smaps text."""
    header, fields = None, {}
    for line in text.splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            if header is not None:
                yield header, fields
            header, fields = line, {}
            continue
        m = re.match(r"^(\w+):\s+(\d+) kB", line)
        if m:
            fields[m.group(1)] = int(m.group(2)) * 1024
    if header is not None:
        yield header, fields


def guest_ram_mappings(smaps_text, ram_bytes):
    """Mappings of guest RAM: the memfd or a shared file of RAM size, or
    anon maps of at least RAM size."""
    out = []
    for header, fields in parse_smaps(smaps_text):
        start, end = (int(x, 16) for x in header.split()[0].split("-"))
        size = end - start
        path = header.split(None, 5)[5] if len(header.split(None, 5)) > 5 else ""
        perms = header.split()[1]
        if "memfd:" in path and size == ram_bytes:
            out.append((header, fields))
        elif path.startswith("/") and perms.endswith("s") and size == ram_bytes:
            out.append((header, fields))    # a shared RAM file (tmpfs)
        elif path == "" and size >= ram_bytes:
            out.append((header, fields))
    return out


def huge_mapped_bytes(pid, ram_bytes):
    with open(f"/proc/{pid}/smaps") as f:
        text = f.read()
    total = 0
    for _, fields in guest_ram_mappings(text, ram_bytes):
        total += fields.get("AnonHugePages", 0)
        total += fields.get("ShmemPmdMapped", 0)
        total += fields.get("FilePmdMapped", 0)
    return total


def parse_buddyinfo(text):
    """{(node, zone): [free blocks of order 0..N]} from /proc/buddyinfo."""
    zones = {}
    for line in text.splitlines():
        m = re.match(r"Node (\d+), zone\s+(\S+)\s+(.*)", line)
        if m:
            zones[(int(m.group(1)), m.group(2))] = [int(x) for x in m.group(3).split()]
    return zones


def buddyinfo_free_bytes(text, min_order=0):
    """Free bytes in buddy blocks of at least min_order."""
    total = 0
    for counts in parse_buddyinfo(text).values():
        for order, n in enumerate(counts):
            if order >= min_order:
                total += n * (PAGE << order)
    return total


def shmem_enabled():
    """The host's shmem THP policy, the bracketed word of shmem_enabled."""
    with open("/sys/kernel/mm/transparent_hugepage/shmem_enabled") as f:
        m = re.search(r"\[(\w[\w-]*)\]", f.read())
    return m.group(1) if m else "unknown"
