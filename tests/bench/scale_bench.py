"""make bench, scale section: N VMs (default 100) against one vmdefragd.

    tests/bench/run-bench --only scale [--scale-vms N] [--scale-phase S]
    tests/bench/scale_bench.py [--vms N] [--phase S]     (the section alone)

Each VM is a real QEMU, paused before its guest runs (-S, TCG, RAM_MIB of
memory-backend-memfd share=on, a QMP socket: test_daemon.PausedQemu), so
the daemon attaches to a real monitor and reclaims from a real memfd.  Its
guest is a fake one (test_daemon.FakeGuest, extended here) that serves the
VM's channel socket and speaks the real protocol (include/vmdefrag/proto.h,
harness/wire.py): HELLO with the module, and consistent answers to
REQ_LIST, REQ_CAPTURE, REQ_ACK, REQ_RELEASE, REQ_STATS, REQ_SCAN and
REQ_SET_FLOOR from its own model of which blocks it holds for the host
(PENDING until ACKed, then HOST); it sends EVT_RELEASED (reason shrinker)
when the bench asks it for a pressure release.  All fake guests live in one
child process (a thread each), so the measuring threads of this process
share no interpreter lock with them.

Before the daemon starts, DATA_MIB of each memfd is written (from 2 MiB up:
block 0 is not wholly RAM), so the daemon has backed blocks to punch.

Measured (daemon figures from /proc/PID of the daemon, never its own):
  - RSS idle: one daemon with no VM, then the daemon with N VMs once every
    session is ready and reconciled; VmRSS, and RssAnon + RssFile (the
    daemon's own memory: RssShmem is guest RAM the daemon maps to
    populate, which counts in every process mapping it);
  - three phases of PHASE_S seconds each, with the same load:
      healthy      all VMs answer at once;
      slow-guest   VM SLOW's fake guest answers every request after
                   SLOW_GUEST_S (well below request_timeout_ms);
      qemu-stopped VM SLOW's QEMU is SIGSTOPped (its QMP hangs) and its
                   guest names a range just past its RAM every
                   HOTPLUG_EVERY_S, as a guest using hot-plugged memory
                   does, which makes the daemon ask that QEMU for its
                   layout again (a stopped QEMU alone is never asked
                   anything while nothing changes);
    the load: DRIVERS threads, one control connection each, cycle every
    VM through reclaim RECLAIM_MIB -> (return RECLAIM_MIB, or every third
    cycle a pressure release of PRESSURE_BLOCKS blocks by the guest), all
    VMs' operations in flight at once; PROBES threads send `status VM`
    round robin over the VMs (one every PROBE_GAP_S per thread);
  - latency: round trip of every `status VM` and of every `reclaim` start
    (its answer, with the operation's id, comes at once) on the control
    socket; p50/p99 over the healthy VMs (all but SLOW) and of SLOW;
  - reclaimed: the drop of st_blocks of the VM's memfd over each reclaim
    operation, measured here; daemon CPU (utime + stime) per GiB of it;
  - dropped sessions: "dropping guest session" lines of the daemon log
    in the phase, healthy VMs' and SLOW's apart;
  - consistency at the end: every block a fake guest holds for the host
    is a hole in its memfd (SEEK_DATA), and every reclaim's drop is >= 0.

Goals (issue #14, reported, never failed on): RSS < 8 MiB + 256 KiB per
VM; healthy VMs' p99 with a slow VM within 2x of the healthy phase's; no
healthy session dropped.
"""
import argparse
import datetime
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "tests"))
sys.path.insert(0, str(TOP / "tests/integration"))

from harness.initramfs import BUILD  # noqa: E402
from harness.vmdefragd import Daemon  # noqa: E402
from harness.wire import (  # noqa: E402
    ACK_ALL, ACK_REQ_FMT, ACK_RESP_FMT, CAPTURE_REQ_FMT, EVT_FMT, EVT_RELEASED,
    FEAT_EVENTS, FEAT_MODULE, HELLO, HELLO_FMT, LIST_RESP_FMT, RANGE_FMT,
    RANGES_RESP_FMT, RELEASE_REQ_FMT, REQ_ACK, REQ_CAPTURE, REQ_LIST,
    REQ_RELEASE, REQ_SCAN, REQ_SET_FLOOR, REQ_STATS, RESP, SCAN_FMT, STATS_FMT,
    STATUS_FMT, frame)
from test_daemon import FakeGuest, PausedQemu  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
BLOCK = 2 * MIB
OUT = BUILD / "bench"
VMS = 100
RAM_MIB = 64
DATA_MIB = 48
RECLAIM_MIB = 16
PRESSURE_BLOCKS = RECLAIM_MIB // 2   # what the cycle reclaimed: held blocks stay level
PHASE_S = 60
DRIVERS = 8
PROBES = 8
PROBE_GAP_S = 0.02
POLL_S = 0.1
BULK_MIB = 32                # the reclaim-only / return-only measurement
SLOW = 0                     # index of the VM made slow
SLOW_GUEST_S = 2.0
HOTPLUG_EVERY_S = 15.0
STALL_S = 1.0                # a round trip this long counts as a stall
CLIENTS_PER_UID = 32
RELEASE_SHRINKER = 1
PHASES = ("healthy", "slow-guest", "qemu-stopped", "qemu-stopped-hotplug", "healthy-again")
GOAL_BASE_MIB, GOAL_PER_VM_KIB, GOAL_P99_X = 8, 256, 2.0

T0 = time.monotonic()


def log(msg):
    print(f"[scale {time.monotonic() - T0:6.0f}s] {msg}", flush=True)


def vm_name(i):
    return f"vm{i:03d}"


# ---- the fake guests (run in a child process) --------------------------------

def runs(blocks):
    """Ascending block indexes -> merged (gpa, len) ranges."""
    out = []
    for b in sorted(blocks):
        if out and out[-1][0] + out[-1][1] == b * BLOCK:
            out[-1][1] += BLOCK
        else:
            out.append([b * BLOCK, BLOCK])
    return [tuple(r) for r in out]


def range_blocks(payload, off, n):
    bl = []
    for i in range(n):
        gpa, ln = RANGE_FMT.unpack_from(payload, off + RANGE_FMT.size * i)
        bl += range(gpa // BLOCK, (gpa + ln) // BLOCK)
    return bl


def ranges_bytes(rs):
    return b"".join(RANGE_FMT.pack(a, n) for a, n in rs)


class ModelGuest(FakeGuest):
    """A guest with the module, modelled: which of its blocks it holds for
    the host (PENDING: reported, not yet ACKed; HOST: ACKed).  Blocks not
    held are the guest's."""

    def __init__(self, path, ram_bytes):
        self.ram = ram_bytes
        self.held = {}                 # block -> "pending" | "host"
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.conn = None
        self.delay = 0.0
        self.answered = 0
        super().__init__(path, lambda conn, n: self.serve(conn))

    def send(self, data):
        with self.send_lock:
            self.conn.sendall(data)

    def serve(self, conn):
        buf = bytearray()
        self.conn = conn
        with self.lock:           # a new connection: the host ACKs nothing left
            for b in self.held:   # of the old one, the agent ACKs them itself
                self.held[b] = "host"
        for type_, id_, payload in self.frames(conn, buf):
            if type_ != HELLO and self.delay:
                time.sleep(self.delay)
            with self.lock:
                out = self.answer(type_, id_, payload)
            self.send(out)
            self.answered += 1

    def answer(self, type_, id_, p):
        if type_ == HELLO:
            return frame(HELLO, 0, HELLO_FMT.pack(1, 1, 0, FEAT_EVENTS | FEAT_MODULE,
                                                  4096, BLOCK, self.ram))
        if type_ == REQ_LIST:
            for b in self.held:
                self.held[b] = "pending"
            rs = runs(self.held)
            return frame(RESP | REQ_LIST, id_, LIST_RESP_FMT.pack(0, len(rs)) + ranges_bytes(rs))
        if type_ == REQ_CAPTURE:
            want, mode, _, _, nr, flags = CAPTURE_REQ_FMT.unpack_from(p)
            got = []
            for b in range_blocks(p, CAPTURE_REQ_FMT.size, nr):
                if len(got) * BLOCK >= want:
                    break
                if b not in self.held and b not in got:
                    got.append(b)
            for b in got:
                self.held[b] = "pending"
            rs = runs(got)
            return frame(RESP | REQ_CAPTURE, id_,
                         RANGES_RESP_FMT.pack(0, 0 if got else -28, len(got) * BLOCK,
                                              len(rs), 0) + ranges_bytes(rs))
        if type_ == REQ_ACK:
            _, flags, nr = ACK_REQ_FMT.unpack_from(p)
            bl = list(self.held) if flags & ACK_ALL else range_blocks(p, ACK_REQ_FMT.size, nr)
            n = 0
            for b in bl:
                if self.held.get(b) == "pending":
                    self.held[b] = "host"
                    n += 1
            return frame(RESP | REQ_ACK, id_, ACK_RESP_FMT.pack(0, 0, n * BLOCK))
        if type_ == REQ_RELEASE:
            want, nr, _ = RELEASE_REQ_FMT.unpack_from(p)
            if nr:
                bl = [b for b in range_blocks(p, RELEASE_REQ_FMT.size, nr) if b in self.held]
            else:
                bl = sorted(self.held)[:want // BLOCK]
            for b in bl:
                del self.held[b]
            rs = runs(bl)
            return frame(RESP | REQ_RELEASE, id_,
                         RANGES_RESP_FMT.pack(0, 0, len(bl) * BLOCK, len(rs), 0)
                         + ranges_bytes(rs))
        if type_ == REQ_STATS:
            st = [0] * 13
            st[11] = len(self.held) * BLOCK
            return frame(RESP | REQ_STATS, id_, STATUS_FMT.pack(0, 0) + STATS_FMT.pack(*st))
        if type_ == REQ_SCAN:
            return frame(RESP | REQ_SCAN, id_, self.scan())
        if type_ == REQ_SET_FLOOR:
            return frame(RESP | REQ_SET_FLOOR, id_, STATUS_FMT.pack(0, 0))
        return frame(RESP | type_, id_, STATUS_FMT.pack(-95, 0))     # EOPNOTSUPP

    def scan(self):
        nblocks = self.ram // BLOCK
        captured = len(self.held)
        free = (nblocks - captured) // 2
        classes = [captured, free, nblocks - captured - free] + [0] * 13
        held_b = captured * BLOCK
        free_b = free * BLOCK
        return SCAN_FMT.pack(0, 0, self.ram, free_b, free_b, free_b, held_b, free_b,
                             1000, 5, 1, 1, 0, 0, *classes, *([0] * 16),
                             *([0, 16, 64, 128, 256] + [0] * 11), *([0] * 16))

    def pressure(self, n):
        """Releases up to n HOST blocks, as the shrinker does: EVT_RELEASED
        (the blocks are the guest's only once the host can have heard)."""
        with self.lock:
            bl = sorted(b for b, s in self.held.items() if s == "host")[:n]
            if not bl or self.conn is None:
                return 0
            rs = runs(bl)
            try:
                self.send(frame(EVT_RELEASED, 0, EVT_FMT.pack(RELEASE_SHRINKER, len(rs))
                                + ranges_bytes(rs)))
            except OSError:
                return 0
            for b in bl:
                del self.held[b]
        return len(bl) * BLOCK

    def outside(self):
        """EVT_RELEASED of one block just past this guest's RAM: what a guest
        using hot-plugged memory the host has not seen yet says."""
        if self.conn is None:
            return False
        try:
            self.send(frame(EVT_RELEASED, 0, EVT_FMT.pack(RELEASE_SHRINKER, 1)
                            + RANGE_FMT.pack(self.ram + 64 * MIB, BLOCK)))
            return True
        except OSError:
            return False


def farm_main(paths, ram_bytes, pipe):
    """The child process: one ModelGuest per path; commands from `pipe`."""
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    guests = [ModelGuest(p, ram_bytes) for p in paths]
    pipe.send("ready")
    try:
        while True:
            try:
                cmd, *args = pipe.recv()
            except EOFError:
                break
            if cmd == "pressure":
                pipe.send(guests[args[0]].pressure(args[1]))
            elif cmd == "outside":
                pipe.send(guests[args[0]].outside())
            elif cmd == "delay":
                guests[args[0]].delay = args[1]
                pipe.send(True)
            elif cmd == "held":
                out = []
                for g in guests:
                    with g.lock:
                        out.append(sorted(g.held))
                pipe.send(out)
            elif cmd == "stop":
                break
    finally:
        for g in guests:
            g.close()
        os._exit(0)


class Farm:
    def __init__(self, paths, ram_bytes):
        ctx = multiprocessing.get_context("fork")
        self.pipe, child = ctx.Pipe()
        self.lock = threading.Lock()
        self.proc = ctx.Process(target=farm_main, args=(paths, ram_bytes, child), daemon=True)
        self.proc.start()
        if not self.pipe.poll(60) or self.pipe.recv() != "ready":
            raise RuntimeError("the fake guests did not start")

    def call(self, *cmd):
        with self.lock:
            self.pipe.send(cmd)
            return self.pipe.recv()

    def close(self):
        if self.proc.is_alive():
            try:
                with self.lock:
                    self.pipe.send(("stop",))
            except OSError:
                pass
            self.proc.join(10)
            if self.proc.is_alive():
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.join(5)


# ---- host side -------------------------------------------------------------------

class Memfd:
    """One VM's RAM memfd, opened through QEMU's fd."""

    def __init__(self, pid, ram_bytes):
        from harness import hostmem
        # QEMU creates its QMP socket before the memory backend
        deadline = time.monotonic() + 30
        while not hostmem.ram_backing_fds(pid, ram_bytes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"QEMU {pid} holds no memfd of {ram_bytes} bytes")
            time.sleep(0.05)
        path = hostmem.ram_backing_fds(pid, ram_bytes)[0][0]
        self.fd = os.open(path, os.O_RDWR)
        self.ram = ram_bytes

    def backed(self):
        return os.fstat(self.fd).st_blocks * 512

    def fill(self, start, nbytes):
        chunk = bytes(range(256)) * (BLOCK // 256)
        for off in range(start, start + nbytes, BLOCK):
            os.pwrite(self.fd, chunk, off)

    def data_blocks(self):
        out, off = set(), 0
        while off < self.ram:
            try:
                s = os.lseek(self.fd, off, os.SEEK_DATA)
            except OSError:
                break
            e = os.lseek(self.fd, s, os.SEEK_HOLE)
            out.update(range(s // BLOCK, (e + BLOCK - 1) // BLOCK))
            off = e
        return out

    def close(self):
        os.close(self.fd)


def proc_status(pid):
    """VmRSS, RssAnon, RssFile, RssShmem (status) and Pss (smaps_rollup:
    shared pages divided among the processes mapping them), in bytes."""
    out = {}
    for name, keys in (("status", ("VmRSS", "RssAnon", "RssFile", "RssShmem")),
                       ("smaps_rollup", ("Pss",))):
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0]) * 1024
    return out


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Ctl:
    """One control connection, JSON lines (what vmdefragctl sends)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(120)
        self.s.connect(str(path))
        self.buf = b""
        self.sent = 0

    def ask(self, **req):
        self.sent += 1
        self.s.sendall((json.dumps(req) + "\n").encode())
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("the daemon closed the control connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        self.s.close()


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Phase:
    """The load of one phase and what it measured."""

    def __init__(self, name, sock, farm, memfds, names):
        self.name, self.sock, self.farm = name, sock, farm
        self.memfds, self.names = memfds, names
        self.stop = threading.Event()
        # kind -> vm index -> [s]; status_co: the probes a long wait held
        # back (vm -1: counted as healthy)
        self.lat = {"status": {}, "status_co": {}, "reclaim": {}}
        self.reclaimed = [0] * len(names)
        self.negative = []                 # reclaims whose backing grew
        self.disagree = []                 # (vm, drop measured here, daemon's done_bytes)
        self.ops = {"reclaim": 0, "return": 0, "pressure": 0, "failed": 0,
                    "refused": 0}
        self.failures = []
        self.errors = []
        self.requests = 0
        self.mu = threading.Lock()

    def note_lat(self, kind, i, dt):
        with self.mu:
            self.lat[kind].setdefault(i, []).append(dt)

    def driver(self, mine):
        """Cycles VMs `mine`: all their operations in flight at once."""
        try:
            c = Ctl(self.sock)
            st = {i: {"step": "idle", "cycle": 0} for i in mine}
            while not self.stop.is_set():
                for i in mine:
                    if self.stop.is_set():
                        break
                    self.step(c, i, st[i])
                time.sleep(POLL_S)
            # let every operation in flight end: the next phase starts clean
            deadline = time.monotonic() + 120
            while any(s["step"] != "idle" for s in st.values()) and \
                    time.monotonic() < deadline:
                for i in mine:
                    if st[i]["step"] != "idle":
                        self.step(c, i, st[i], finishing=True)
                time.sleep(POLL_S)
            c.close()
            with self.mu:
                self.requests += c.sent
        except Exception as e:
            self.errors.append(f"driver: {type(e).__name__}: {e}")

    def step(self, c, i, s, finishing=False):
        name = self.names[i]
        if s["step"] == "idle":
            if finishing:
                return
            s["before"] = self.memfds[i].backed()
            t = time.monotonic()
            r = c.ask(cmd="reclaim", vm=name, bytes=RECLAIM_MIB * MIB)
            self.note_lat("reclaim", i, time.monotonic() - t)
            if not r.get("ok"):
                with self.mu:
                    self.ops["refused"] += 1
                    self.failures.append(f"{name} reclaim: {r.get('error')}: {r.get('message')}")
                return
            s["id"], s["step"] = r["operation"]["id"], "reclaim"
            return
        r = c.ask(cmd="op", vm=name, id=s["id"])
        op = r.get("operation") or {"state": "failed", "reason": r.get("message")}
        if op.get("state") == "running":
            return
        with self.mu:
            self.ops[s["step"]] += 1
            if op.get("state") == "failed":
                self.ops["failed"] += 1
                self.failures.append(f"{name} {s['step']}: {op.get('reason')}")
        if s["step"] == "reclaim":
            drop = s["before"] - self.memfds[i].backed()
            with self.mu:
                if drop < 0:
                    self.negative.append((name, drop))
                if drop != op.get("done_bytes"):
                    self.disagree.append((name, drop, op.get("done_bytes")))
                self.reclaimed[i] += max(drop, 0)
            s["cycle"] += 1
            if s["cycle"] % 3 == 0:
                b0 = self.memfds[i].backed()
                n = self.farm.call("pressure", i, PRESSURE_BLOCKS)
                if n:
                    with self.mu:
                        self.ops["pressure"] += 1
                    # the daemon re-backs what the guest released when it
                    # reads the event; the next reclaim's "before" waits
                    # for that, or it would count the re-back against it
                    deadline = time.monotonic() + 30
                    while self.memfds[i].backed() < b0 + n:
                        if time.monotonic() > deadline:
                            with self.mu:
                                self.failures.append(f"{name}: the pressure release's "
                                                     "re-back not seen in 30 s")
                            break
                        time.sleep(0.005)
                s["step"] = "idle"
                return
            r = c.ask(cmd="return", vm=name, bytes=RECLAIM_MIB * MIB)
            if not r.get("ok"):
                with self.mu:
                    self.ops["refused"] += 1
                    self.failures.append(f"{name} return: {r.get('error')}: {r.get('message')}")
                s["step"] = "idle"
                return
            s["id"], s["step"] = r["operation"]["id"], "return"
            return
        s["step"] = "idle"

    def prober(self, mine):
        try:
            c = Ctl(self.sock)
            k = 0
            while not self.stop.is_set():
                i = mine[k % len(mine)]
                k += 1
                t = time.monotonic()
                r = c.ask(cmd="status", vm=self.names[i])
                dt = time.monotonic() - t
                self.note_lat("status", i, dt)
                # the probes this one's wait held back (it would have sent
                # one every gap): each would have waited as long, less its
                # delay (HdrHistogram's correction for coordinated
                # omission); counted for the healthy VMs
                gap = PROBE_GAP_S + 0.002
                late = dt - gap
                while late > gap:
                    self.note_lat("status_co", -1, late)
                    late -= gap
                if not r.get("ok"):
                    self.errors.append(f"status {self.names[i]}: {r.get('error')}: {r.get('message')}")
                time.sleep(PROBE_GAP_S)
            c.close()
            with self.mu:
                self.requests += c.sent
        except Exception as e:
            self.errors.append(f"prober: {type(e).__name__}: {e}")

    def run(self, seconds, during=None):
        n = len(self.names)
        threads = [threading.Thread(target=self.driver, args=(list(range(k, n, DRIVERS)),))
                   for k in range(min(DRIVERS, n))]
        threads += [threading.Thread(target=self.prober, args=(list(range(k, n, PROBES)),))
                    for k in range(min(PROBES, n))]
        for t in threads:
            t.start()
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                if during:
                    during()
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        finally:
            self.stop.set()
            for t in threads:
                t.join(180)

    def summary(self, slow):
        out = {"ops": dict(self.ops), "requests": self.requests, "reclaimed_bytes": sum(self.reclaimed),
               "negative_drops": self.negative[:10],
               "disagree": len(self.disagree), "disagree_first": self.disagree[:5], "errors": self.errors[:10],
               "failures": self.failures[:10], "failures_total": len(self.failures)}
        for kind in ("status", "reclaim"):
            per = self.lat[kind]
            healthy = [x for i, xs in per.items() if i != slow for x in xs]
            worst = [pct(xs, 99) for i, xs in per.items() if i != slow and xs]
            out[kind] = {"n": len(healthy), "p50_ms": ms(pct(healthy, 50)),
                         "p99_ms": ms(pct(healthy, 99)), "max_ms": ms(max(healthy, default=None)),
                         "worst_vm_p99_ms": ms(max(worst, default=None)),
                         "slow_p50_ms": ms(pct(per.get(slow, []), 50)),
                         "slow_p99_ms": ms(pct(per.get(slow, []), 99)),
                         "stalls": sum(1 for x in healthy if x >= STALL_S)}
        co = out["status"]
        extra = self.lat["status_co"].get(-1, [])
        healthy = [x for i, xs in self.lat["status"].items() if i != slow for x in xs] + extra
        co["co_added"] = len(extra)
        co["co_p50_ms"], co["co_p99_ms"] = ms(pct(healthy, 50)), ms(pct(healthy, 99))
        return out


def ms(x):
    return None if x is None else round(x * 1000, 2)


def drops(text, names, slow):
    """(healthy VMs' drop lines, SLOW's) among `text`'s log lines."""
    h, s = [], []
    for line in text.splitlines():
        m = re.search(r"VM '([^']+)': dropping guest session", line)
        if m:
            (s if m.group(1) == names[slow] else h).append(line.strip())
    return h, s


def bulk(sock, names, memfds, kind, nbytes):
    """`kind` of nbytes (None: all the VM has reclaimed) on every VM at
    once, until all ended: (bytes the
    memfds' backing moved, measured here, failures)."""
    before = [m.backed() for m in memfds]
    ids, failed = {}, []
    c = Ctl(sock)
    try:
        for i, n in enumerate(names):
            want = nbytes
            if want is None:        # all the VM has reclaimed
                st = c.ask(cmd="status", vm=n)
                want = ((st.get("vms") or [{}])[0].get("memory") or {}).get("reclaimed_bytes")
                if not want:
                    continue
            r = c.ask(cmd=kind, vm=n, bytes=want)
            if r.get("ok"):
                ids[i] = r["operation"]["id"]
            else:
                failed.append(f"{n}: {r.get('message')}")
        deadline = time.monotonic() + 300
        while ids and time.monotonic() < deadline:
            for i in list(ids):
                r = c.ask(cmd="op", vm=names[i], id=ids[i])
                st = (r.get("operation") or {}).get("state")
                if st != "running":
                    if st != "done":
                        failed.append(f"{names[i]}: {st}: "
                                      f"{(r.get('operation') or {}).get('reason')}")
                    del ids[i]
            time.sleep(POLL_S)
    finally:
        c.close()
    after = [m.backed() for m in memfds]
    sign = 1 if kind == "reclaim" else -1
    return sum(max(0, sign * (b - a)) for b, a in zip(before, after)), failed


def config(names=(), request_timeout_ms=None):
    """The daemon's config; request_timeout_ms, if given, for every VM
    (the daemon's default is 60 s)."""
    out = ("[daemon]\n"
           f"socket_clients_per_uid = {CLIENTS_PER_UID}\n"
           "reconnect_min_ms = 200\nreconnect_max_ms = 1000\n")
    if request_timeout_ms:
        out += "".join(f"\n[vm {n}]\nrequest_timeout_ms = {request_timeout_ms}\n"
                       for n in names)
    return out


def wait_all(d, names, timeout):
    deadline = time.monotonic() + timeout
    while True:
        st = d.status()
        ok = [n for n in names if st.get(n, {}).get("session", {}).get("state") == "ready"
              and (st[n].get("memory") or {}).get("reconciled")]
        if len(ok) == len(names):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ok)} of {len(names)} VMs ready and reconciled "
                               f"after {timeout} s")
        time.sleep(0.5)


def daemon_max_vms():
    """CONFIG_MAX_VMS of the daemon's source (it refuses more VMs), or None."""
    try:
        m = re.search(r"#define\s+CONFIG_MAX_VMS\s+(\d+)", (TOP / "daemon/config.h").read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def run(vms=VMS, phase_s=PHASE_S, request_timeout_ms=None):
    """The section: (record, info).  More VMs than the daemon takes are
    cut to its limit, and the record says so."""
    asked, limit = vms, daemon_max_vms()
    if limit and vms > limit:
        log(f"vmdefragd takes at most {limit} VMs (CONFIG_MAX_VMS): {limit}, not {vms}")
        vms = limit
    slow_guest_s = SLOW_GUEST_S
    if request_timeout_ms:
        slow_guest_s = min(SLOW_GUEST_S, request_timeout_ms / 2000)
    rec = {"vms": vms, "vms_asked": asked, "phase_s": phase_s, "ram_mib": RAM_MIB, "data_mib": DATA_MIB,
           "request_timeout_ms": request_timeout_ms, "slow_guest_s": slow_guest_s,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    workdir = OUT / "scale"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    names = [vm_name(i) for i in range(vms)]
    qemus, memfds, farm, d, stopped = [], [], None, None, None
    t_start = time.monotonic()
    try:
        # the idle daemon with no VM
        w0 = workdir / "idle0"
        w0.mkdir()
        # vmdefragd refuses to start with no VM: one whose QEMU does not
        # exist (never attached, retried every reconnect_max_ms) is the
        # nearest to none
        with Daemon(w0, [("absent", w0 / "absent.qmp", w0 / "absent.vdf")],
                    config=config(), log_level="info") as d0:
            time.sleep(2)
            rec["rss_0"] = proc_status(d0.proc.pid)
        log(f"daemon with 0 VMs: VmRSS {rec['rss_0']['VmRSS'] // 1024} KiB")

        for i, n in enumerate(names):
            q = PausedQemu(workdir, n, ram=f"{RAM_MIB}M")
            qemus.append(q)
            m = Memfd(q.proc.pid, RAM_MIB * MIB)
            memfds.append(m)
            m.fill(BLOCK, DATA_MIB * MIB)
        qrss = [proc_status(q.proc.pid)["VmRSS"] for q in qemus]
        rec["qemu_rss_mean"] = sum(qrss) // len(qrss)
        log(f"{vms} paused QEMUs, {DATA_MIB} MiB written in each; QEMU VmRSS mean "
            f"{rec['qemu_rss_mean'] // MIB} MiB")
        farm = Farm([str(workdir / f"{n}.vdf") for n in names], RAM_MIB * MIB)
        d = Daemon(workdir, [(n, q.qmp, workdir / f"{n}.vdf") for n, q in zip(names, qemus)],
                   config=config(names, request_timeout_ms), log_level="info")
        t = time.monotonic()
        wait_all(d, names, 120 + vms * 2)
        rec["ready_s"] = round(time.monotonic() - t, 1)
        time.sleep(2)
        rec["rss_n"] = proc_status(d.proc.pid)
        log(f"daemon with {vms} VMs ready and reconciled in {rec['ready_s']} s: VmRSS "
            f"{rec['rss_n']['VmRSS'] // 1024} KiB")

        rec["phases"] = {}
        last_hot = [0.0]
        for ph in PHASES:
            during = None
            if ph == "slow-guest":
                farm.call("delay", SLOW, slow_guest_s)
            if ph == "qemu-stopped":
                stopped = qemus[SLOW].proc.pid
                os.kill(stopped, signal.SIGSTOP)
            if ph == "qemu-stopped-hotplug":
                last_hot[0] = 0.0

                def during():
                    if time.monotonic() - last_hot[0] >= HOTPLUG_EVERY_S:
                        last_hot[0] = time.monotonic()
                        farm.call("outside", SLOW)
            log(f"phase {ph}: {phase_s} s")
            log_off = len(d.text())
            p = Phase(ph, d.socket, farm, memfds, names)
            c0, t0 = cpu_s(d.proc.pid), time.monotonic()
            p.run(phase_s, during)
            c1, t1 = cpu_s(d.proc.pid), time.monotonic()
            s = p.summary(SLOW)
            s["cpu_s"] = round(c1 - c0, 2)
            s["requests_per_s"] = round(s["requests"] / (t1 - t0))
            s["wall_s"] = round(t1 - t0, 1)
            s["cpu_s_per_gib"] = (round((c1 - c0) / (s["reclaimed_bytes"] / GIB), 2)
                                  if s["reclaimed_bytes"] else None)
            h, sl = drops(d.text()[log_off:], names, SLOW)
            s["healthy_drops"], s["slow_drops"] = len(h), len(sl)
            s["healthy_drop_lines"], s["slow_drop_lines"] = h[:5], sl[:3]
            s["rss"] = proc_status(d.proc.pid)
            rec["phases"][ph] = s
            log(f"phase {ph}: status p99 {s['status']['p99_ms']} ms, reclaim p99 "
                f"{s['reclaim']['p99_ms']} ms, {s['reclaimed_bytes'] / GIB:.2f} GiB reclaimed, "
                f"{s['cpu_s']} s CPU, healthy drops {len(h)}, slow drops {len(sl)}")
            if ph == "slow-guest":
                farm.call("delay", SLOW, 0.0)
            if ph == "qemu-stopped-hotplug":
                os.kill(stopped, signal.SIGCONT)
                stopped = None
        # the cycles mix reclaims with returns (re-backing zeroes huge
        # folios): the daemon's CPU of each alone, every VM at once
        # (what the cycles left reclaimed is returned first, unmeasured)
        bulk(d.socket, names, memfds, "return", None)
        for kind, nbytes in (("reclaim", BULK_MIB * MIB), ("return", None)):
            c0, t0 = cpu_s(d.proc.pid), time.monotonic()
            moved, failed = bulk(d.socket, names, memfds, kind, nbytes)
            c1 = cpu_s(d.proc.pid)
            rec[f"bulk_{kind}"] = {
                "bytes": moved, "cpu_s": round(c1 - c0, 2),
                "wall_s": round(time.monotonic() - t0, 1), "failed": failed[:5],
                "cpu_s_per_gib": round((c1 - c0) / (moved / GIB), 3) if moved else None}
            log(f"{kind} only, all VMs at once: {moved / GIB:.2f} GiB, "
                f"{c1 - c0:.2f} s daemon CPU")
            if kind == "reclaim":
                # what the guests hold for the host is a hole in the memfd
                held = farm.call("held")
                bad = []
                for i, bl in enumerate(held):
                    both = sorted(set(bl) & memfds[i].data_blocks())
                    if both:
                        bad.append((names[i], both[:4]))
                rec["held_blocks"] = sum(len(b) for b in held)
                rec["held_but_backed"] = bad[:10]
                rec["held_but_backed_vms"] = len(bad)
            else:
                rec["held_after_return"] = sum(len(b) for b in farm.call("held"))
        rec["alive"] = d.alive()
        rec["log_warnings"] = sum(1 for ln in d.text().splitlines() if "warning" in ln.lower())
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: " + " ".join(str(e).split())[:300]
        (OUT / "error-scale.txt").write_text(traceback.format_exc())
        log("ERROR " + rec["error"])
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
        if d is not None:
            rec["daemon_exit"] = d.close()
        if farm is not None:
            farm.close()
        for m in memfds:
            m.close()
        for q in qemus:
            q.close()
    rec["wall_min"] = round((time.monotonic() - t_start) / 60, 1)
    (OUT / "scale.json").write_text(json.dumps(rec, indent=1, default=str))
    info = {"scale section": f"{vms} VMs, {phase_s} s phases, {rec['wall_min']} min"}
    return rec, info


# ---- report ----------------------------------------------------------------------

def kib(x):
    return "-" if x is None else f"{x // 1024}"


def per_vm(r, r0, key, n):
    return f"{(r.get(key, 0) - r0.get(key, 0)) / n / 1024:.0f}"


def rss_rows(rec):
    r0, rn, n = rec.get("rss_0"), rec.get("rss_n"), rec["vms"]
    if not r0 or not rn:
        return []
    rows = [["0 VMs attached", kib(r0["VmRSS"]), kib(r0["RssAnon"]), kib(r0["RssFile"]),
             kib(r0["RssShmem"]), kib(r0["Pss"]), "-", "-"]]
    for label, r in [(f"{n} VMs, idle", rn)] + [
            (f"{n} VMs, after {ph}", x["rss"]) for ph, x in rec.get("phases", {}).items()]:
        rows.append([label, kib(r["VmRSS"]), kib(r["RssAnon"]), kib(r["RssFile"]),
                     kib(r["RssShmem"]), kib(r["Pss"]), per_vm(r, r0, "VmRSS", n),
                     per_vm(r, r0, "RssAnon", n)])
    return rows


RSS_HEAD = ["vmdefragd", "VmRSS KiB", "RssAnon", "RssFile", "RssShmem", "Pss",
            "VmRSS KiB/VM", "RssAnon KiB/VM"]
PHASE_HEAD = ["phase", "status p50/p99 ms", "p99 corr.", "max ms", "stalls",
              "worst VM p99", "slow VM p50/p99", "reclaim p50/p99 ms", "max ms",
              "slow VM p50/p99", "reclaimed GiB", "CPU s", "CPU s/GiB",
              "ops rcl/ret/prs/fail", "req/s", "dropped healthy/slow"]


def f(x):
    return "-" if x is None else (f"{x:.1f}" if isinstance(x, float) else str(x))


def phase_rows(rec):
    rows = []
    for ph, s in rec.get("phases", {}).items():
        st, rc, o = s["status"], s["reclaim"], s["ops"]
        rows.append([ph, f"{f(st['p50_ms'])}/{f(st['p99_ms'])}", f(st.get("co_p99_ms")),
                     f(st["max_ms"]), f(st["stalls"] + rc["stalls"]),
                     f(st["worst_vm_p99_ms"]),
                     f"{f(st['slow_p50_ms'])}/{f(st['slow_p99_ms'])}",
                     f"{f(rc['p50_ms'])}/{f(rc['p99_ms'])}", f(rc["max_ms"]),
                     f"{f(rc['slow_p50_ms'])}/{f(rc['slow_p99_ms'])}",
                     f"{s['reclaimed_bytes'] / GIB:.2f}", f(s["cpu_s"]), f(s["cpu_s_per_gib"]),
                     f"{o['reclaim']}/{o['return']}/{o['pressure']}/{o['failed'] + o['refused']}",
                     f(s.get("requests_per_s")), f"{s['healthy_drops']}/{s['slow_drops']}"])
    return rows


def table(head, rows):
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    return "\n".join("  " + "  ".join(str(c).ljust(x) for c, x in zip(r, w))
                     for r in [head] + rows)


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def text(rec):
    if "error" in rec and "phases" not in rec:
        return "  error: " + rec["error"]
    out = table(RSS_HEAD, rss_rows(rec)) + "\n\n" + table(PHASE_HEAD, phase_rows(rec))
    if "error" in rec:
        out += "\n  error: " + rec["error"]
    return out


def md(rec):
    if "error" in rec and "phases" not in rec:
        return "error: " + rec["error"]
    out = md_table(RSS_HEAD, rss_rows(rec)) + "\n\n" + md_table(PHASE_HEAD, phase_rows(rec))
    if "error" in rec:
        out += "\n\nerror: " + rec["error"]
    return out


def notes(rec):
    out = []
    if rec.get("vms_asked", rec["vms"]) != rec["vms"]:
        out.append(f"{rec['vms_asked']} VMs asked, {rec['vms']} run: vmdefragd refuses more "
                   "(CONFIG_MAX_VMS in daemon/config.h).")
    out += [f"{rec['vms']} VMs, each a paused QEMU (-S, TCG, {rec['ram_mib']} MiB memfd "
           f"share=on; mean VmRSS {rec.get('qemu_rss_mean', 0) // MIB} MiB) with a fake "
           "guest speaking the real protocol (all fake guests in one child process); "
           f"{rec['data_mib']} MiB of each memfd written before the daemon starts; "
           f"{rec['phase_s']} s per phase; date {rec['date']}; sessions ready and "
           f"reconciled {rec.get('ready_s', '?')} s after the daemon started.",
           f"Load: {DRIVERS} control connections cycle every VM through reclaim "
           f"{RECLAIM_MIB} MiB, then return {RECLAIM_MIB} MiB or (every third cycle) a "
           f"pressure release of {PRESSURE_BLOCKS} blocks by the guest (EVT_RELEASED, "
           f"the daemon re-backs them); {PROBES} more connections send `status VM` "
           f"round robin, each one {PROBE_GAP_S * 1000:.0f} ms after its last answer.",
           "Latency: control-socket round trips of the healthy VMs (all but "
           f"{vm_name(SLOW)}): `status VM`, and `reclaim`'s start (answered at once with "
           "the operation id); the slow VM's own apart.  p99 corr.: status p99 with "
           "the probes a long wait held back added (HdrHistogram's correction for "
           f"coordinated omission).  stalls: round trips >= {STALL_S:.0f} s.",
           f"slow-guest: {vm_name(SLOW)}'s guest answers every request after "
           f"{rec.get('slow_guest_s', SLOW_GUEST_S):.1f} s; request_timeout_ms "
           f"{rec.get('request_timeout_ms') or 'the default (60000)'}.  qemu-stopped: its QEMU is SIGSTOPped (QMP hangs), "
           "nothing else changes.  qemu-stopped-hotplug: still stopped, and its guest "
           f"names a block past its RAM every {HOTPLUG_EVERY_S:.0f} s (what a guest in "
           "hot-plugged memory does), so the daemon asks the stopped QEMU for its layout "
           "again.",
           "reclaimed: the drop of each memfd's st_blocks over each reclaim, measured "
           "here; CPU: the daemon's utime + stime over the phase, per GiB of that (it "
           "includes serving the bench's control requests, req/s).  healthy-again: "
           "the healthy phase once more at the end, for the noise.",
           "RSS: RssFile is mostly the shared libraries' pages (libvirt, libxml2, "
           "json-c), shared with every process mapping them; Pss divides them; RssShmem "
           "is guest RAM the daemon has mapped."]
    for kind in ("reclaim", "return"):
        b = rec.get(f"bulk_{kind}")
        if b:
            out.append(f"{kind} alone, every VM at once ({BULK_MIB if kind == 'reclaim' else 'all'}"
                       f" MiB each, after the phases): {b['bytes'] / GIB:.2f} GiB "
                       f"{'freed' if kind == 'reclaim' else 're-backed'} in {b['wall_s']} s, "
                       f"{b['cpu_s']} s of daemon CPU"
                       + (f", {b['cpu_s_per_gib']} s/GiB" if b["cpu_s_per_gib"] else "")
                       + (f"; failed or short: {b['failed']}" if b["failed"] else ""))
    if rec.get("held_but_backed_vms") is not None:
        out.append(f"Consistency after the reclaim alone: {rec['held_blocks']} blocks held "
                   f"for the host by the guests, {rec['held_but_backed_vms']} VMs with a held "
                   "block still backed (0 expected); after the return alone "
                   f"{rec.get('held_after_return', '?')} blocks held (0 expected); reclaims "
                   "whose backing grew: "
                   f"{sum(len(s['negative_drops']) for s in rec['phases'].values())}; "
                   "reclaims whose drop measured here differs from the daemon's done_bytes: "
                   f"{sum(s['disagree'] for s in rec['phases'].values())}.")
    for ph, s in rec.get("phases", {}).items():
        if s["healthy_drop_lines"]:
            out.append(f"{ph}: healthy session drops, e.g.: {s['healthy_drop_lines'][0]}")
        if s["slow_drop_lines"]:
            out.append(f"{ph}: the slow VM's drops ({s['slow_drops']}), e.g.: "
                       f"{s['slow_drop_lines'][0]}")
        if s["errors"] or s["failures"]:
            out.append(f"{ph}: {s['failures_total']} operations failed or refused, "
                       f"e.g. {(s['failures'] + s['errors'])[:2]}")
    return out


def goals(rec):
    out = []
    r0, rn, n = rec.get("rss_0"), rec.get("rss_n"), rec["vms"]
    if r0 and rn:
        limit = GOAL_BASE_MIB * MIB + n * GOAL_PER_VM_KIB * 1024
        rs = [rn] + [s["rss"] for s in rec.get("phases", {}).values()]
        for key, what in (("VmRSS", "VmRSS"), ("Pss", "Pss"),
                          ("RssAnon", "RssAnon (its private memory)")):
            worst = max(r[key] for r in rs)
            out.append(f"daemon {what} with {n} VMs, at most {worst // 1024} KiB, vs "
                       f"{GOAL_BASE_MIB} MiB + {n} x {GOAL_PER_VM_KIB} KiB = {limit // 1024} "
                       "KiB: " + ("met" if worst < limit else "NOT met"))
    ph = rec.get("phases", {})
    base = ph.get("healthy")
    again = ph.get("healthy-again")
    if base and again and base["status"]["p99_ms"] and again["status"]["p99_ms"]:
        out.append("noise: all healthy again at the end, status p99 "
                   f"{again['status']['p99_ms']:.1f} ms vs {base['status']['p99_ms']:.1f} ms, "
                   f"reclaim p99 {f(again['reclaim']['p99_ms'])} ms vs "
                   f"{f(base['reclaim']['p99_ms'])} ms at the start")
    for name in PHASES[1:-1]:
        s = ph.get(name)
        if not base or not s:
            continue
        for kind, key in (("status", "p99_ms"), ("status", "co_p99_ms"), ("reclaim", "p99_ms")):
            b, x = base[kind].get(key), s[kind].get(key)
            if b and x:
                what = f"{kind} p99" + (" (corrected)" if key.startswith("co") else "")
                out.append(f"{name}: healthy VMs' {what} {x:.1f} ms vs {b:.1f} ms all "
                           f"healthy ({x / b:.1f}x, goal <= {GOAL_P99_X:.0f}x): "
                           + ("met" if x <= GOAL_P99_X * b else "NOT met"))
        out.append(f"{name}: healthy sessions dropped: {s['healthy_drops']} (goal 0): "
                   + ("met" if s["healthy_drops"] == 0 else "NOT met"))
    return out


def main():
    ap = argparse.ArgumentParser(description="vmdefragd scale bench (make bench, scale)")
    ap.add_argument("--vms", type=int, default=VMS)
    ap.add_argument("--phase", type=int, default=PHASE_S, help="seconds per phase")
    ap.add_argument("--request-timeout-ms", type=int, default=None,
                    help="request_timeout_ms of every VM (default: the daemon's)")
    args = ap.parse_args()
    if args.vms < 2:
        ap.error("--vms wants at least 2 (one VM is made slow)")
    if args.phase < 1:
        ap.error("--phase wants at least 1 second")
    for sig in (signal.SIGTERM, signal.SIGHUP):     # cleanup runs in finally
        signal.signal(sig, lambda s, _: sys.exit(128 + s))
    OUT.mkdir(parents=True, exist_ok=True)
    if args.request_timeout_ms is not None and args.request_timeout_ms < 100:
        ap.error("--request-timeout-ms wants at least 100")
    rec, info = run(args.vms, args.phase, args.request_timeout_ms)
    print(f"\nScale: {rec['vms']} VMs against one vmdefragd\n" + text(rec))
    print("\nNotes:\n" + "\n".join(f"  - {n}" for n in notes(rec)))
    print("\nScale goals (reported, never failed on):\n"
          + "\n".join(f"  - {g}" for g in goals(rec)))
    return 1 if "error" in rec else 0


if __name__ == "__main__":
    sys.exit(main())
