#!/usr/bin/python3
"""Migration soak: one fragmented, reclaimed guest migrated back and forth.

    tests/soak/migration_soak.py --hops 8 [--qemu PATH] [--qemu-b PATH]
        [--kernel RELEASE] [--modes alternate|precopy|postcopy|random]
    make migration-soak HOPS=8 [QEMU=path] [QEMU_B=path] [KERNEL=release]

Two sides on this machine, A and B, each with its own vmdefragd that lives
for the whole soak and re-attaches to whichever QEMU runs on its side: its
QMP socket has a fixed path per side, its channel is a symlink the soak
points at the side's current QEMU.  The guest (the module, the agent,
64 MiB of memcheck data, fragmented free memory, RAM fully backed, then
--reclaim MiB reclaimed by side A's daemon) starts on A.  Hop N goes from
the side the guest is on to the other one, into a new QEMU started there
with -incoming defer (side A's binary is --qemu, side B's --qemu-b, so a
patched build can migrate to and from a stock one), precopy or postcopy.

While each migration runs:
  op        a reclaim (odd hops) or a return (even hops) started on the
            source daemon right before the migration: the daemon stops it
            cleanly when the migration starts (the request in flight
            completes); a reclaim asked for during the migration is
            refused with one line, and the source daemon says "outgoing";
  pressure  the guest allocates its free memory plus --pressure MiB
            (memcheck, in the background), so the module's shrinker
            releases captured blocks while pages move (precopy: on the
            source; postcopy: on the destination, after the switch).
After each hop, once the destination daemon reconciled and its collapse
pass ended (checked, with the kernel's own accounting, not the daemon's):
  data      every page of memcheck "a" and of the hop's pressure memcheck;
            no kernel splat on the source's console;
  backing   every block the guest holds captured is a hole in the
            destination's backing; the backing is at most guest RAM minus
            the captured bytes (8 MiB + 2 % tolerance), and with a stock
            destination QEMU (which writes every page) at least that too;
  counters  the daemon's captured_bytes and reclaimed_bytes equal what the
            guest's capture list (vdfnl) holds;
  2 MiB     the collapse pass collapsed every block the backing held whole
            when it ran, with no failure; tmpfs backing, when the guest
            released no block during the hop: at least 90 % of QEMU's
            resident guest RAM is PMD-mapped (blocks released under
            pressure after the pass are re-backed around what the guest
            already wrote, on 4 KiB folios, and left to khugepaged: the
            share is reported); memfd: 2 MiB folios, reported only (QEMU
            7.2 maps a memfd 4 KiB-aligned).
Then the pressure memcheck is stopped and the destination daemon reclaims
back up to --reclaim MiB, so every hop starts from the same state.

One line per hop (hop, direction, mode, the op, source backing before /
source peak / destination after, the 2 MiB-mapped share, the data check),
then "N passed, N failed"; the exit status is 1 if any hop failed.  A hop
whose migration or guest broke (an exception) ends the soak: the hops
left are counted as failed.
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import hostmem  # noqa: E402
from harness.guest import (BUILD, SPLAT, Guest, GuestCommandError, default_qemu,  # noqa: E402
                           guest_kernels)
from harness.migration import IncomingGuest, PeakSampler, migrate  # noqa: E402
from harness.vmdefragd import Daemon  # noqa: E402
from soak.common import SoakError, require_built  # noqa: E402

MIB = 1 << 20
BLOCK = 2 * MIB
STOCK_QEMU = "/usr/bin/qemu-system-x86_64"
PMD_SHARE_MIN = 0.90
CONFIG = ("[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"
          "collapse_cpu_percent = {cpu}\n")


def resolve_qemu(path):
    """An absolute path for a QEMU binary (PATH lookup for a bare name)."""
    found = shutil.which(path)
    if found is None:
        raise SoakError(f"QEMU binary {path!r} not found or not executable")
    return os.path.realpath(found)


def is_stock(qemu):
    return qemu == os.path.realpath(STOCK_QEMU)


def hole_blocks(g):
    """Offsets of the 2 MiB blocks of g's RAM backing with no data at all."""
    backed = set()
    for start, end in hostmem.backing_data_map(g.pid, g.ram_bytes):
        for off in range(start // BLOCK * BLOCK, end, BLOCK):
            backed.add(off)
    return set(range(0, g.ram_bytes, BLOCK)) - backed


def mem(d):
    return d.status("g")["g"]["memory"] or {}


def mig(d):
    return d.status("g")["g"]["migration"]


def last_op(d):
    return d.status("g")["g"]["operation"]


def refused(d):
    """A reclaim asked for now is refused with one line naming the migration."""
    p = d.ctl("reclaim", "g", "8M", check=False)
    lines = p.stderr.strip().splitlines()
    return p.returncode == 1 and len(lines) == 1 and "live migration" in lines[0]


def close_enough(a, b, slack=8 * MIB, frac=0.02):
    return abs(a - b) <= slack + frac * max(a, b)


class Side:
    """One end: a QEMU binary, a fixed QMP path, a channel symlink, a daemon."""

    def __init__(self, name, root, qemu, config):
        self.name = name
        self.qemu = qemu
        self.dir = root / name
        self.dir.mkdir()
        self.qmp = self.dir / "daemon.qmp"
        self.channel = self.dir / "vdf.sock"
        self.daemon = Daemon(self.dir, [("g", self.qmp, self.channel)], config=config)

    def qemu_args(self):
        return ["-qmp", f"unix:{self.qmp},server=on,wait=off"]

    def point_at(self, g):
        """The daemon's channel path now reaches g's vmdefrag port."""
        tmp = self.dir / "vdf.sock.new"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(g.vdf_socket)
        os.replace(tmp, self.channel)


class Hop:
    def __init__(self, n, src, dst, mode):
        self.n, self.src, self.dst, self.mode = n, src, dst, mode
        self.failures = []
        self.data = "not checked"
        self.op = "-"
        self.before = self.peak = self.after = self.expect = None
        self.share = "-"
        self.cap_before = self.cap_after = None
        self.took = 0.0

    def check(self, ok, what):
        if not ok:
            self.failures.append(what)
        return ok

    @property
    def passed(self):
        return not self.failures

    def line(self, hops):
        def m(b):
            return "?" if b is None else str(b // MIB)
        return (f"hop {self.n}/{hops} {self.src}->{self.dst} {self.mode:8} "
                f"op {self.op:26} backing MiB before {m(self.before)} "
                f"peak {m(self.peak)} after {m(self.after)} (expect {m(self.expect)}) "
                f"2M-mapped {self.share:>10} captured {m(self.cap_before)}->{m(self.cap_after)}M "
                f"migration {self.took:.1f}s data {self.data} "
                f"{'PASS' if self.passed else 'FAIL'}")


class Soak:
    def __init__(self, kernel=None, hops=4, qemu_a=None, qemu_b=None, ram_mib=512,
                 backend="tmpfs", modes="alternate", seed=1, reclaim_mib=96,
                 pressure_mib=32, op_mib=32, bandwidth_mib=256, cpu_percent=50,
                 workdir=None, out=print):
        self.kernel = kernel or guest_kernels()[0]
        self.hops = hops
        self.qemu_a = resolve_qemu(qemu_a or default_qemu())
        self.qemu_b = resolve_qemu(qemu_b or self.qemu_a)
        self.ram_mib = ram_mib
        self.backend = backend
        self.modes = modes
        self.rng = random.Random(seed)
        self.reclaim = reclaim_mib * MIB
        self.pressure = None if pressure_mib is None else pressure_mib * MIB
        self.op_bytes = op_mib * MIB
        self.bandwidth = bandwidth_mib * MIB
        self.config = CONFIG.format(cpu=cpu_percent)
        self.workdir = Path(workdir) if workdir else None
        self.out = out
        self.results = []
        self.guests = []
        self.sides = []

    # ---- setup -------------------------------------------------------------

    def needs(self):
        require_built(self.kernel)

    def mode(self, n):
        if self.modes == "alternate":
            return "precopy" if n % 2 else "postcopy"
        if self.modes == "random":
            return self.rng.choice(("precopy", "postcopy"))
        return self.modes

    def start_guest(self, side):
        g = Guest(self.kernel, ram_mib=self.ram_mib, fpr=False, backend=self.backend,
                  name=f"soak-{side.name}0", extra_args=side.qemu_args(),
                  qemu=side.qemu)
        self.guests.append(g)
        g.__enter__()
        side.point_at(g)
        g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
        g.check("vmdefrag-agent >/tmp/agent.log 2>&1 &")
        g.populate_backing()
        g.check("memcheck start --mib 64 --id a --seed 21", timeout=300)
        g.check("fragment --seed 5 --anon 80 --files 40", timeout=600)
        d = side.daemon
        d.wait_reconciled("g", timeout=180)
        d.ctl("reclaim", "g", f"{self.reclaim // MIB}M", "--wait")
        return g

    # ---- one hop -------------------------------------------------------------

    def hop(self, n, g, S, D):
        mode = self.mode(n)
        h = Hop(n, S.name, D.name, mode)
        self.results.append(h)
        dS, dD = S.daemon, D.daemon
        postcopy = mode == "postcopy"

        h.before = g.backing_bytes()
        free = g.meminfo()["MemFree"]
        h.cap_before = sum(length for _, length in g.captured_ranges())
        pid = f"p{n}"
        pmib = (free + (self.pressure or 0)) // MIB
        dst = IncomingGuest(g, name=f"soak-{D.name}{n}", qemu=D.qemu,
                            extra_args=D.qemu_args())
        self.guests.append(dst)
        dst.__enter__()
        D.point_at(dst)
        dD.wait_for(lambda: mig(dD)["state"] == "incoming", f"side {D.name}: incoming")

        # an operation on the source, running when the migration starts
        kind = "reclaim" if n % 2 else "return"
        if self.op_bytes:
            dS.ctl(kind, "g", f"{self.op_bytes // MIB}M")
        seen = {}

        def during():
            # the daemon first: a short post-copy (the rest streams in a
            # second or two) may be over by the time a guest command returns
            seen["state"] = mig(dS)["state"]
            seen["refused"] = refused(dS)
            on = dst if postcopy else g
            if self.pressure is not None:
                on.check(f"(memcheck start --mib {pmib} --id {pid} --seed {n} "
                         f">/tmp/{pid}.log 2>&1; echo $? >/tmp/{pid}.rc) >/dev/null 2>&1 &")

        t0 = time.monotonic()
        with PeakSampler(g, dst) as peak:
            info = migrate(g, dst, postcopy=postcopy, bandwidth=self.bandwidth,
                           during=during)
        h.took = time.monotonic() - t0
        h.peak = peak.peak[g]
        if info.get("status") != "completed":
            raise SoakError(f"hop {n}: migration {info.get('status')}: {info}")
        h.check(seen.get("refused"), "a reclaim during the migration was not refused")
        h.check(seen.get("state") == "outgoing",
                f"source daemon said {seen.get('state')!r} during the migration")
        dS.wait_for(lambda: mig(dS)["state"] == "migrated-away",
                    f"side {S.name}: migrated away")
        o = last_op(dS) or {}
        h.op = f"{kind} {o.get('state', '?')} {o.get('done_bytes', 0) // MIB}M"
        if self.op_bytes:
            h.check(o.get("kind") == kind,
                    f"source's last operation is {o!r}, not the {kind}")
        else:
            h.op = "none"
        g.stop()
        try:
            g.check_console()
        except Exception as e:  # noqa: BLE001 (a splat is a finding, not an abort)
            h.check(False, f"source console: {e}")

        # the pressure allocation finished (in the guest, now on dst)
        deadline = time.monotonic() + 600
        while self.pressure is not None:
            st, rc = dst.run(f"cat /tmp/{pid}.rc 2>/dev/null")
            if st == 0 and rc.strip():
                break
            if time.monotonic() > deadline:
                raise SoakError(f"hop {n}: the pressure memcheck never ended")
            time.sleep(1)
        if self.pressure is not None:
            h.check(rc.strip() == "0", f"pressure memcheck start exited {rc.strip()}: "
                    + dst.run(f"cat /tmp/{pid}.log")[1][-500:])

        dD.wait_for(lambda: mig(dD)["state"] == "migrated-in" and mig(dD).get("reconciled")
                    and (mig(dD).get("collapse") or {}).get("state")
                    in ("done", "failed", "disabled"),
                    f"side {D.name}: reconcile and collapse pass", 600)
        c = mig(dD)["collapse"]
        h.check(c["state"] == "done", f"collapse pass {c['state']}: {c.get('note')}")

        # ---- data ----
        bad = []
        for ident in ("a", pid) if self.pressure is not None else ("a",):
            try:
                dst.check(f"memcheck verify --id {ident}", timeout=600)
            except GuestCommandError as e:
                bad.append(f"{ident}: {e.output.strip()[-300:]}")
        h.data = "ok" if not bad else "BAD"
        h.check(not bad, "memcheck: " + "; ".join(bad))

        # ---- backing and counters, once the capture list is settled ----
        def settled():
            caps = dst.captured_ranges()
            m = mem(dD)
            total = sum(length for _, length in caps)
            return (m.get("captured_bytes") == total and m.get("pending_bytes") == 0,
                    caps, total, m)
        deadline = time.monotonic() + 60
        ok, caps, captured, m = settled()
        while not ok and time.monotonic() < deadline:
            time.sleep(1)
            ok, caps, captured, m = settled()
        h.check(ok, f"daemon captured_bytes {m.get('captured_bytes')} / pending "
                f"{m.get('pending_bytes')}, guest list {captured}")
        holes = hole_blocks(dst)
        unpunched = [a for a, length in caps for off in range(a, a + length, BLOCK)
                     if off < dst.ram_bytes and off not in holes]
        h.check(not unpunched, f"{len(unpunched)} captured blocks backed on the "
                f"destination, first at 0x{unpunched[0]:x}" if unpunched else "")
        h.check(m.get("reclaimed_bytes") == captured,
                f"daemon reclaimed_bytes {m.get('reclaimed_bytes')} != captured {captured}")
        h.after = dst.backing_bytes()
        h.expect = dst.ram_bytes - captured
        slack = 8 * MIB + 0.02 * h.expect
        h.check(h.after <= h.expect + slack,
                f"destination backing {h.after // MIB} MiB > RAM - captured "
                f"{h.expect // MIB} MiB")
        if is_stock(D.qemu):
            h.check(h.after >= h.expect - slack,
                    f"destination backing {h.after // MIB} MiB < RAM - captured "
                    f"{h.expect // MIB} MiB (stock QEMU writes every page)")
        h.cap_after = captured

        # ---- 2 MiB mappings ----
        if self.backend == "tmpfs":
            pmd, rss = dst.pmd_share()
            h.share = f"{100 * pmd / rss:.1f}%" if rss else "-"
            if c["state"] == "done":
                # every block the backing held whole when the pass ran
                h.check(c.get("collapsed_bytes") == c.get("candidate_bytes")
                        and not c.get("failed_bytes"),
                        f"collapse pass: {c.get('collapsed_bytes', 0) // MIB} of "
                        f"{c.get('candidate_bytes', 0) // MIB} MiB collapsed, "
                        f"{c.get('failed_bytes', 0) // MIB} MiB failed")
                # blocks the guest released under pressure after the pass
                # are re-backed around what it already wrote, on 4 KiB
                # folios, and are left to khugepaged: the share is a bound
                # only for a hop whose guest released nothing
                if h.cap_before is not None and captured >= h.cap_before:
                    h.check(pmd >= PMD_SHARE_MIN * rss,
                            f"PMD-mapped {pmd // MIB} of {rss // MIB} MiB resident")
        else:
            h.share = f"folios {c.get('folio_only_bytes', 0) // MIB}M"

        # ---- back to the starting state for the next hop ----
        if self.pressure is not None:
            dst.check(f"memcheck stop --id {pid}")
        need = (self.reclaim - captured) // BLOCK * BLOCK
        if need >= BLOCK:
            p = dD.ctl("reclaim", "g", f"{need // MIB}M", "--wait", check=False)
            h.check(p.returncode == 0, f"top-up reclaim of {need // MIB} MiB: "
                    f"{p.stderr.strip()}")
        return dst

    # ---- the whole soak --------------------------------------------------------

    def run(self):
        self.needs()
        own_dir = self.workdir is None
        root = Path(tempfile.mkdtemp(prefix="vdf-soak-")) if own_dir else self.workdir
        try:
            config = self.config
            a = Side("A", root, self.qemu_a, config)
            self.sides.append(a)
            b = Side("B", root, self.qemu_b, config)
            self.sides.append(b)
            self.out(f"migration soak: {self.hops} hops, guest {self.kernel}, "
                     f"{self.ram_mib} MiB RAM ({self.backend}), modes {self.modes}")
            self.out(f"  side A: {self.qemu_a}{' (stock)' if is_stock(self.qemu_a) else ''}")
            self.out(f"  side B: {self.qemu_b}{' (stock)' if is_stock(self.qemu_b) else ''}")
            g = self.start_guest(a)
            self.out(f"  guest ready on A: backing {g.backing_bytes() // MIB} MiB, "
                     f"{self.reclaim // MIB} MiB reclaimed")
            here, there = a, b
            for n in range(1, self.hops + 1):
                try:
                    g = self.hop(n, g, here, there)
                except Exception as e:  # noqa: BLE001 (report it and stop)
                    if not self.results or self.results[-1].n != n:
                        self.results.append(Hop(n, here.name, there.name, self.mode(n)))
                    self.results[-1].check(False, f"{type(e).__name__}: {e}")
                    for line in self.splats():
                        self.results[-1].check(False, f"guest console: {line}")
                    self.out(self.results[-1].line(self.hops))
                    self.report_failures(self.results[-1])
                    traceback.print_exc(file=sys.stderr)
                    break
                self.out(self.results[-1].line(self.hops))
                self.report_failures(self.results[-1])
                here, there = there, here
        finally:
            self.cleanup()
            if own_dir:
                shutil.rmtree(root, ignore_errors=True)
        passed = sum(h.passed for h in self.results)
        failed = self.hops - passed
        self.out(f"{passed} passed, {failed} failed")
        return failed == 0

    def splats(self):
        """The first kernel splat line of each guest still around."""
        out = []
        for g in self.guests:
            if g.proc is None:
                continue
            text = g.console_text()
            m = SPLAT.search(text)
            if m:
                start = text.rfind("\n", 0, m.start()) + 1
                out.append(f"{g.name}: " + text[start:text.find("\n", m.end())])
        return out

    def report_failures(self, h):
        for f in h.failures:
            self.out(f"    FAILED: {f}")

    def cleanup(self):
        for g in self.guests:
            g.stop()
        logs = BUILD / "test-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for s in self.sides:
            s.daemon.close()
            shutil.copy(s.daemon.log_path, logs / f"vmdefragd-soak-{s.name}.log")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hops", type=int, default=4)
    ap.add_argument("--qemu", help="side A's QEMU (default $VMDEFRAG_QEMU or "
                    "qemu-system-x86_64)")
    ap.add_argument("--qemu-b", help="side B's QEMU (default: side A's)")
    ap.add_argument("--kernel", help="guest kernel release (default: the oldest installed)")
    ap.add_argument("--ram", type=int, default=512, help="guest RAM in MiB")
    ap.add_argument("--backend", choices=("tmpfs", "memfd"), default="tmpfs")
    ap.add_argument("--modes", choices=("alternate", "precopy", "postcopy", "random"),
                    default="alternate")
    ap.add_argument("--seed", type=int, default=1, help="for --modes random")
    ap.add_argument("--op-mib", type=int, default=32,
                    help="size of the reclaim/return started before each "
                    "migration (0: none)")
    ap.add_argument("--pressure-mib", type=int, default=32,
                    help="the guest allocates its free memory plus this much "
                    "during each migration")
    ap.add_argument("--no-pressure", action="store_true",
                    help="no guest allocation during the migrations")
    args = ap.parse_args(argv)
    if args.hops < 1:
        print("migration-soak: --hops must be at least 1", file=sys.stderr)
        return 2
    if args.kernel and args.kernel not in guest_kernels():
        print(f"migration-soak: no guest kernel {args.kernel!r} (installed: "
              f"{' '.join(guest_kernels())})", file=sys.stderr)
        return 2
    try:
        soak = Soak(kernel=args.kernel, hops=args.hops, qemu_a=args.qemu,
                    qemu_b=args.qemu_b, ram_mib=args.ram, backend=args.backend,
                    modes=args.modes, seed=args.seed, op_mib=args.op_mib,
                    pressure_mib=None if args.no_pressure else args.pressure_mib,
                    out=lambda s: print(s, flush=True))
        return 0 if soak.run() else 1
    except SoakError as e:
        print(f"migration-soak: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
