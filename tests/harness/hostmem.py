"""Host-side measurements of a QEMU process's guest RAM.

These read the kernel's own accounting and never ask the daemon, so tests
check real effects independently of vmdefragd's counters:

  backing_bytes      bytes allocated in the RAM backing file (st_blocks of
                     the memfd / file QEMU holds open)
  rss                RssAnon / RssShmem / RssFile of the QEMU process
  huge_mapped_bytes  bytes of guest RAM mapped by PMD (2 MiB) mappings:
                     AnonHugePages + ShmemPmdMapped + FilePmdMapped of the
                     guest RAM mapping(s) in /proc/PID/smaps
  buddyinfo_*        parse a guest's /proc/buddyinfo text
"""
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
