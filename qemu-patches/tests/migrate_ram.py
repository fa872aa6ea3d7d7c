#!/usr/bin/env python3
"""What a live migration does to reclaimed guest RAM, measured from the host.

Two local QEMUs, a paused VM (-S, no guest kernel): the source's RAM is
filled with data from the host (written through its backing file), every
other 2 MiB range is punched out, then the VM is migrated (precopy, or
postcopy started at once) over a unix socket.  Measured:

- the source backing before, at its peak during the migration (st_blocks
  sampled every 20 ms) and after;
- the destination backing after (st_blocks of the file or memfd; for
  anonymous RAM, the Rss of QEMU's RAM mapping);
- the share of the destination's resident guest RAM mapped with 2 MiB pages
  (smaps of QEMU's RAM mapping: AnonHugePages, ShmemPmdMapped,
  FilePmdMapped) at the end of the migration and later;
- how many punched ranges are still holes on the destination (file and
  memfd);
- that every byte arrived: sha256 of every data range, read back from the
  destination (through its backing file, or /proc/<pid>/mem for anonymous
  RAM) after the measurements, and that punched ranges read as zero.

Importable: run_case() takes the two QEMU binaries and the backing kinds and
returns a Result; main() prints a table.  Needs root (tmpfs mount,
/proc/<pid>/mem of another process) and a host kernel with SEEK_DATA on
tmpfs.  The kinds:

  file   a file on a tmpfs mounted huge=within_size, align=2M, share=on
  memfd  memory-backend-memfd, share=on (huge folios only if the host's
         shmem_enabled allows them: advise/within_size/always)
  anon   memory-backend-ram (destination only: the host cannot write the
         source's data into it through a file)
"""

import argparse
import contextlib
import ctypes
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

MiB = 1 << 20
GiB = 1 << 30
RANGE = 2 * MiB
STOCK_QEMU = "/usr/bin/qemu-system-x86_64"
KINDS = ("file", "memfd", "anon")


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tests"))
from harness.qmp import QMP  # noqa: E402  (the tests' QMP client)


class Qmp(QMP):
    """The tests' QMP client, with arguments spelt the Python way
    (max_bandwidth= for "max-bandwidth") and a longer default timeout."""

    def __init__(self, path, timeout=60.0):
        super().__init__(path, timeout)

    def cmd(self, name, **args):
        return self.command(name, **{k.replace("_", "-"): v for k, v in args.items()})


@dataclasses.dataclass
class Result:
    mode: str
    src_qemu: str
    dst_qemu: str
    src_kind: str
    dst_kind: str
    size: int
    status: str = ""
    src_before: int = 0          # bytes backed before the migration
    src_peak: int = 0            # ... at the peak during
    src_after: int = 0
    dst_after: int = 0           # bytes backed (Rss for anon) at the end
    dst_later: int = 0           # ... after `settle` seconds
    dst_holes: int = -1          # punched ranges still unbacked (-1: n/a)
    dst_pmd: int = 0             # bytes of RAM PMD-mapped at the end
    dst_rss: int = 0
    dst_pmd_later: int = 0       # ... after `settle` seconds
    dst_rss_later: int = 0
    seconds: float = 0.0
    transferred: int = 0
    data_ok: bool = False
    error: str = ""
    statuses: list = dataclasses.field(default_factory=list)
    read_ok: bool = None         # read_during: the dump taken during postcopy
    read_bad: list = dataclasses.field(default_factory=list)

    @property
    def pmd_share(self):
        return self.dst_pmd / self.dst_rss if self.dst_rss else 0.0

    @property
    def pmd_share_later(self):
        return (self.dst_pmd_later / self.dst_rss_later
                if self.dst_rss_later else 0.0)


def _backed(path):
    return os.stat(path).st_blocks * 512


def _ram_start(pid, size):
    """Start of QEMU's guest RAM mapping: the one mapping of exactly `size`."""
    with open(f"/proc/{pid}/maps") as f:
        starts = [int(lo, 16) for lo, hi in
                  (line.split()[0].split("-") for line in f)
                  if int(hi, 16) - int(lo, 16) == size]
    if len(starts) != 1:
        raise RuntimeError(f"{len(starts)} mappings of {size} bytes in {pid}")
    return starts[0]


def _ram_mappings(pid, lo, size):
    """Sum of smaps over [lo, lo+size), whatever the VMA split."""
    with open(f"/proc/{pid}/smaps") as f:
        text = f.read()
    tot = {"Rss": 0, "AnonHugePages": 0, "ShmemPmdMapped": 0,
           "FilePmdMapped": 0}
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", block)
        if not m:
            continue
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        if start < lo or end > lo + size:
            continue
        for k, v in re.findall(r"^(\w+):\s+(\d+) kB", block, re.M):
            if k in tot:
                tot[k] += int(v) * 1024
    return tot


def _memfd_path(pid):
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:memory-backend-memfd"):
            return f"/proc/{pid}/fd/{fd}"
    raise RuntimeError(f"no memfd in pid {pid}")


def _ranges(path, size):
    """Number of 2 MiB ranges of `path` that are entirely holes."""
    holes = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in range(0, size, RANGE):
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                data = size
            if data >= off + RANGE:
                holes += 1
    finally:
        os.close(fd)
    return holes


class Vm:
    """One QEMU with 1 GiB (or `size`) of RAM in the given backing."""

    def __init__(self, qemu, kind, size, workdir, name, incoming=False):
        self.kind, self.size, self.name = kind, size, name
        self.qmp_path = os.path.join(workdir, f"{name}.qmp")
        self.file = None
        if kind == "file":
            self.file = os.path.join(workdir, "tmpfs", f"{name}.ram")
            backend = (f"memory-backend-file,id=mem0,size={size},"
                       f"mem-path={self.file},share=on,align=2M")
        elif kind == "memfd":
            backend = f"memory-backend-memfd,id=mem0,size={size},share=on"
        elif kind == "anon":
            backend = f"memory-backend-ram,id=mem0,size={size}"
        else:
            raise ValueError(f"unknown kind {kind!r}")
        argv = [qemu, "-S", "-nodefaults", "-display", "none",
                "-no-user-config", "-accel", "tcg,tb-size=64",
                # Debian's firmware directories, for a QEMU built elsewhere
                "-L", "/usr/share/qemu", "-L", "/usr/share/seabios",
                "-L", "/usr/lib/ipxe/qemu",
                "-machine", "pc,memory-backend=mem0",
                "-m", str(size // MiB), "-object", backend,
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if incoming:
            argv += ["-incoming", "defer"]
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen(argv, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            self.qmp = Qmp(self.qmp_path)
        except Exception:
            self.kill()
            raise

    @property
    def backing(self):
        """A path through which the host reads/writes the backing file."""
        if self.kind == "file":
            return self.file
        if self.kind == "memfd":
            return _memfd_path(self.proc.pid)
        return None

    def backed(self):
        if self.kind == "anon":
            return _ram_mappings(self.proc.pid, self.ram_start,
                                 self.size)["Rss"]
        return _backed(self.backing)

    def kill(self):
        with contextlib.suppress(Exception):
            self.qmp.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def _fill_and_punch(path, size):
    """Fill with data, punch every other 2 MiB range; digests of the rest."""
    digests = {}
    fd = os.open(path, os.O_RDWR)
    try:
        for off in range(0, size, RANGE):
            buf = os.urandom(RANGE)
            os.pwrite(fd, buf, off)
            if off % (2 * RANGE) == 0:
                digests[off] = hashlib.sha256(buf).hexdigest()
        for off in range(RANGE, size, 2 * RANGE):
            _punch(fd, off, RANGE)
    finally:
        os.close(fd)
    return digests


def _punch(fd, off, length):
    libc = ctypes.CDLL(None, use_errno=True)
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
    if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                      ctypes.c_long(off), ctypes.c_long(length)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"fallocate(PUNCH_HOLE): {os.strerror(e)}")


def _check(dst, digests, size):
    """Every data range has its digest, every punched range reads zero."""
    zero = hashlib.sha256(bytes(RANGE)).hexdigest()
    if dst.kind == "anon":
        fd = os.open(f"/proc/{dst.proc.pid}/mem", os.O_RDONLY)
        base = dst.ram_start
    else:
        fd = os.open(dst.backing, os.O_RDONLY)
        base = 0
    try:
        for off in range(0, size, RANGE):
            buf = os.pread(fd, RANGE, base + off)
            want = digests.get(off, zero)
            if hashlib.sha256(buf).hexdigest() != want:
                return False
    finally:
        os.close(fd)
    return True


class _Sampler(threading.Thread):
    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.peak, self.stop = fn, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self.fn())
            self.stop.wait(0.02)


@contextlib.contextmanager
def huge_tmpfs(workdir, size):
    mnt = os.path.join(workdir, "tmpfs")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o",
                    f"size={size},huge=within_size", "vmdefrag-mig", mnt],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", mnt], check=False)


def _wait_migration(qmp, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = qmp.cmd("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            return info
        time.sleep(0.05)
    raise TimeoutError("migration did not finish")


def _wait_event(qmp, status, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == "MIGRATION" and
               e["data"]["status"] == status for e in qmp.events):
            return
        qmp.cmd("query-status")  # collects the events that came meanwhile
        time.sleep(0.02)
    raise TimeoutError(f"no MIGRATION {status} event")


def _check_dump(path, digests, size):
    """A guest-physical dump against the digests of RAM offsets.

    Guest-physical 0xa0000-0xfffff is the VGA window and BIOS ROMs on pc,
    not RAM: the first 2 MiB range is compared around it.
    """
    zero = hashlib.sha256(bytes(RANGE)).hexdigest()
    bad = []
    with open(path, "rb") as f:
        for off in range(0, size, RANGE):
            buf = f.read(RANGE)
            if off == 0:
                ok = True  # checked below from the RAM side
            else:
                ok = hashlib.sha256(buf).hexdigest() == digests.get(off, zero)
            if not ok:
                bad.append(off)
    return bad


def run_case(src_qemu, dst_qemu, src_kind="file", dst_kind="file",
             mode="precopy", size=1 * GiB, settle=10.0, workdir=None,
             timeout=600.0, read_during=False, caps=()):
    """Migrate a filled-and-punched VM once; returns a Result.

    read_during (postcopy): the destination reads all of guest RAM
    (pmemsave) while postcopy runs at a limited rate, as a guest touching
    its memory would: pages not there yet are faulted in through
    userfaultfd, zero pages not placed must be resolved locally; the dump
    is checked like the RAM.  caps: more migration capabilities to turn
    on at both ends (e.g. "multifd", "postcopy-preempt").
    """
    if src_kind == "anon":
        raise ValueError("the source's data is written through its backing "
                         "file: src_kind must be file or memfd")
    r = Result(mode, src_qemu, dst_qemu, src_kind, dst_kind, size)
    more_caps = list(caps)
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="vdf-mig-")
    src = dst = None
    try:
        with huge_tmpfs(workdir, 2 * size + 64 * MiB), \
                contextlib.ExitStack() as vms:
            # the VMs go before the tmpfs their RAM is on
            vms.callback(lambda: [vm.kill() for vm in (dst, src) if vm])
            src = Vm(src_qemu, src_kind, size, workdir, "src")
            digests = _fill_and_punch(src.backing, size)
            dst = Vm(dst_qemu, dst_kind, size, workdir, "dst", incoming=True)
            dst.ram_start = _ram_start(dst.proc.pid, size)
            src.ram_start = _ram_start(src.proc.pid, size)
            sock = os.path.join(workdir, "mig.sock")
            caps = [{"capability": "events", "state": True}]
            if mode == "postcopy":
                caps.append({"capability": "postcopy-ram", "state": True})
            caps += [{"capability": c, "state": True} for c in more_caps]
            for vm in (src, dst):
                vm.qmp.cmd("migrate-set-capabilities", capabilities=caps)
            # 7.2 limits precopy to 32 MiB/s by default: take the machine
            src.qmp.cmd("migrate-set-parameters", max_bandwidth=64 * GiB)
            r.src_before = src.backed()
            dst.qmp.cmd("migrate-incoming", uri=f"unix:{sock}")
            sampler = _Sampler(src.backed)
            sampler.start()
            t0 = time.monotonic()
            src.qmp.cmd("migrate", uri=f"unix:{sock}")
            if mode == "postcopy" and read_during:
                # slow enough that the read overtakes the background copy
                src.qmp.cmd("migrate-set-parameters",
                            max_postcopy_bandwidth=64 * MiB)
            if mode == "postcopy":
                src.qmp.cmd("migrate-start-postcopy")
            if mode == "postcopy" and read_during:
                _wait_event(dst.qmp, "postcopy-active", timeout)
                dump = os.path.join(workdir, "dst.dump")
                dst.qmp.cmd("pmemsave", val=0, size=size, filename=dump)
                r.read_bad = _check_dump(dump, digests, size)
                r.read_ok = not r.read_bad
                os.unlink(dump)
            info = _wait_migration(src.qmp, timeout)
            dinfo = _wait_migration(dst.qmp, timeout)
            r.seconds = time.monotonic() - t0
            sampler.stop.set()
            sampler.join()
            r.status = info["status"]
            r.statuses = [e["data"]["status"] for e in src.qmp.events
                          if e.get("event") == "MIGRATION"]
            if mode == "postcopy" and "postcopy-active" not in r.statuses:
                r.error = "never entered postcopy: " + ",".join(r.statuses)
                return r
            if info["status"] != "completed" or dinfo["status"] != "completed":
                r.error = info.get("error-desc") or dinfo.get("error-desc") or \
                    f"src {info['status']}, dst {dinfo['status']}"
                return r
            r.transferred = info.get("ram", {}).get("transferred", 0)
            r.src_peak = max(sampler.peak, r.src_before)
            r.src_after = src.backed()
            r.dst_after = dst.backed()
            m = _ram_mappings(dst.proc.pid, dst.ram_start, size)
            r.dst_rss = m["Rss"]
            r.dst_pmd = m["AnonHugePages"] + m["ShmemPmdMapped"] + \
                m["FilePmdMapped"]
            if settle:
                time.sleep(settle)
            m = _ram_mappings(dst.proc.pid, dst.ram_start, size)
            r.dst_later = dst.backed()
            r.dst_rss_later = m["Rss"]
            r.dst_pmd_later = m["AnonHugePages"] + m["ShmemPmdMapped"] + \
                m["FilePmdMapped"]
            if dst.kind != "anon":
                r.dst_holes = _ranges(dst.backing, size)
            r.data_ok = _check(dst, digests, size)
            return r
    except Exception as e:  # a failed case is a row, not a crash
        r.error = f"{type(e).__name__}: {e}"
        return r
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def _name(path):
    return "stock" if os.path.realpath(path) == os.path.realpath(STOCK_QEMU) \
        else "patched"


def format_table(results):
    rows = ["| QEMU src→dst | mode | RAM src→dst | src before / peak / after "
            "(MiB) | dst after / +settle (MiB) | punched ranges unbacked | "
            "2M-mapped at end / +settle | time (s) | sent (MiB) | data |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error:
            rows.append(f"| {_name(r.src_qemu)}→{_name(r.dst_qemu)} | {r.mode}"
                        f" | {r.src_kind}→{r.dst_kind} | FAILED: {r.error} "
                        "| | | | | | |")
            continue
        n_punched = r.size // (2 * RANGE)
        holes = "–" if r.dst_holes < 0 else f"{r.dst_holes}/{n_punched}"
        rows.append(
            f"| {_name(r.src_qemu)}→{_name(r.dst_qemu)} | {r.mode} | "
            f"{r.src_kind}→{r.dst_kind} | "
            f"{r.src_before // MiB} / {r.src_peak // MiB} / "
            f"{r.src_after // MiB} | {r.dst_after // MiB} / "
            f"{r.dst_later // MiB} | {holes} | "
            f"{r.pmd_share:.0%} / {r.pmd_share_later:.0%} | "
            f"{r.seconds:.1f} | {r.transferred // MiB} | "
            f"{'ok' if r.data_ok else 'BAD'}"
            f"{'' if r.read_ok is None else ', read during: '}"
            f"{'' if r.read_ok is None else ('ok' if r.read_ok else 'BAD')} |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patched", default=os.path.join(
        os.path.dirname(__file__), "..", "..", "build", "qemu",
        "qemu-system-x86_64"))
    ap.add_argument("--stock", default=STOCK_QEMU)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--settle", type=float, default=10.0,
                    help="seconds between the two mapping samples")
    ap.add_argument("--modes", default="precopy,postcopy")
    ap.add_argument("--src", default="file", help="source kinds, comma list")
    ap.add_argument("--dst", default="file,memfd,anon",
                    help="destination kinds, comma list")
    ap.add_argument("--pairs", default="stock:stock,patched:patched",
                    help="QEMU pairs src:dst, comma list")
    ap.add_argument("--read-during", action="store_true",
                    help="postcopy: the destination reads all RAM meanwhile")
    ap.add_argument("--caps", default="",
                    help="more migration capabilities, comma list")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    bins = {"stock": a.stock, "patched": os.path.realpath(a.patched)}
    results = []
    for pair in a.pairs.split(","):
        s, d = pair.split(":")
        for mode in a.modes.split(","):
            for sk in a.src.split(","):
                for dk in a.dst.split(","):
                    r = run_case(bins[s], bins[d], sk, dk, mode,
                                 size=a.size_mib * MiB, settle=a.settle,
                                 read_during=a.read_during,
                                 caps=[c for c in a.caps.split(",") if c])
                    print(format_table([r]).split("\n")[-1], flush=True)
                    results.append(r)
    print()
    print(format_table(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in results], f, indent=1)
    return 0 if all(r.data_ok and r.read_ok is not False and not r.error
                    for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
