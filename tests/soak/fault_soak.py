#!/usr/bin/python3
"""Fault soak: reclaim / return / pressure cycles on a real guest while
vmdefragd, the guest agent or the daemon's QMP connection is killed.

    tests/soak/fault_soak.py --iterations 20 [--seed S] [--kernel RELEASE]
        [--ram MIB] [--data MIB] [--faults daemon,agent,qmp] [--points ...]
        [--plan KIND@POINT,...]
    make soak ITER=20 [SEED=S] [KERNEL=release]

One TCG guest (shared backend: memfd RAM, share=on; every page backed and
written at the start, so every hole in the backing is one the daemon
punched; holes are counted with mincore(), per 2 MiB block), the module
(floor 64 MiB), the agent, a memcheck holder "a" (--data MiB of seeded
data), one vmdefragd on a QMP monitor of its own, whose connection the
soak can cut (harness.sockcut).  Each iteration is one cycle:

  reclaim   up to a target drawn from the seed (the guest's captured total)
  return    a size drawn from the seed
  pressure  the guest allocates its free memory plus part of what it holds
            captured (memcheck "pN", in the background): the module's
            shrinker releases captured blocks, the daemon re-backs them

and exactly one fault, at a point drawn from the seed:

  before-punch     right after the reclaim is asked for (the guest is
                   capturing, nothing punched yet)
  during-punch     as soon as the backing shrinks (the first punch; polled
                   with stat(2) every 2 ms), plus 0-50 ms from the seed
  after-punch      the reclaim ended, before the return
  during-return    the return's re-back runs: as soon as the backing grows
                   (polled with stat(2) every 2 ms)
  during-pressure  the guest is releasing blocks (the daemon's
                   captured_bytes dropped, or 0-3 s passed)

of one kind, drawn from the seed:

  daemon   kill -9 vmdefragd, start it again on the same state_dir
           after 0-2 s (drawn)
  agent    kill -9 the agent in the guest, start it again after 0-2 s
  qmp      cut the daemon's QMP connection (shutdown(2) of QEMU's end,
           taken with pidfd_getfd); the daemon reconnects by itself

After the fault the soak waits for the daemon to be back and reconciled
(QMP attached, after a cut on a new connection; the session ready;
memory.reconciled; no operation running), lets the rest of
the cycle run, waits for it to settle (no operation, nothing pending, the
daemon's captured bytes = the guest's list), and checks:

  data      memcheck verify of "a" and of the cycle's "pN": every page
  counters  the daemon's captured_bytes and reclaimed_bytes (status
            --json) = the bytes of the guest's captured list (vdfnl list)
  backing   every captured block is a hole whole (nothing captured and
            backed, not even in part) and every block with a hole is
            captured (nothing the guest uses stays punched).  The one
            exception: blocks the guest took back under pressure while the
            daemon or the agent was down (a during-pressure fault) are
            never re-backed (a new daemon cannot tell them from RAM never
            touched, and must not back all of that); they are counted as
            "unseen-release holes", not as mismatches, and stay excused
            until captured again
  console   no kernel splat (checked once more at the end)

One line per iteration (its fault and point, the ops' outcomes, captured
MiB, pages checked, the mismatches), then a summary: iterations, faults
by kind and point, pages checked, pages corrupted, mismatches.  The seed
is printed; the same seed replays the same plan (the timing of a fault
inside an operation is what the guest's speed makes it).  Exit status 1 if
any page was corrupted or any check failed, 2 on a setup error.
"""
import argparse
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import hostmem  # noqa: E402
from harness.guest import BUILD, SPLAT, Guest, GuestCommandError, guest_kernels  # noqa: E402
from harness.sockcut import conn_inodes, cut_unix_server_conns  # noqa: E402
from harness.vmdefragd import Daemon, DaemonError  # noqa: E402
from soak.common import SoakError, require_built  # noqa: E402

MIB = 1 << 20
BLOCK = 2 * MIB
# what a pressure step leaves of the guest's free + captured memory: the
# watermarks and the kernel's own allocations while memcheck fills
PRESSURE_SLACK = 24 * MIB
KINDS = ("daemon", "agent", "qmp")
POINTS = ("before-punch", "during-punch", "after-punch", "during-return",
          "during-pressure")
CONFIG = "[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"
VM = "g"
MEMCHECK = re.compile(r"pages=(\d+) bad_pages=(\d+)")


def block_holes(g):
    """(blocks that are a hole whole, blocks partly holes) of g's backing,
    as sets of 2 MiB-aligned guest offsets, from the page cache's own
    account (mincore)."""
    res = hostmem.resident_pages(g.pid, g.ram_bytes)
    holes = {i * BLOCK for i, n in enumerate(res) if n == 0}
    partial = {i * BLOCK for i, n in enumerate(res) if 0 < n < BLOCK // hostmem.PAGE}
    return holes, partial


class Iteration:
    def __init__(self, n, kind, point):
        self.n, self.kind, self.point = n, kind, point
        self.ops = []
        self.failures = []
        self.pages = 0
        self.bad_pages = 0
        self.mismatches = 0
        self.captured = None
        self.injected = False
        self.at = "-"
        self.down = 0.0
        self.unseen = 0
        self.took = 0.0

    def fail(self, what, mismatch=True):
        self.failures.append(what)
        if mismatch:
            self.mismatches += 1

    @property
    def passed(self):
        return not self.failures

    def line(self, total):
        cap = "?" if self.captured is None else f"{self.captured // MIB}M"
        return (f"iter {self.n}/{total} fault {self.kind:6} at {self.point:15} "
                f"{'injected' if self.injected else 'NOT INJECTED'} | "
                f"{' '.join(self.ops):60} | captured {cap:>5} pages {self.pages} "
                f"bad {self.bad_pages} mismatches {self.mismatches} "
                f"{f'unseen-release holes {self.unseen // MIB}M ' if self.unseen else ''}"
                f"{self.took:.0f}s {'PASS' if self.passed else 'FAIL'}")


class Soak:
    def __init__(self, iterations=4, seed=None, kernel=None, ram_mib=512, data_mib=96,
                 plan=None, kinds=KINDS, points=POINTS, workdir=None, out=print):
        self.iterations = len(plan) if plan else iterations
        self.seed = random.randrange(1 << 32) if seed is None else seed
        self.rng = random.Random(self.seed)
        self.kernel = kernel or guest_kernels()[0]
        self.ram_mib = ram_mib
        self.data_mib = data_mib
        self.plan = list(plan) if plan else self.draw_plan(kinds, points)
        self.workdir = Path(workdir) if workdir else None
        self.out = out
        self.results = []
        self.g = self.d = None
        self.excused = set()     # holes the guest took back unseen

    def draw_plan(self, kinds, points):
        """[(kind, point)]: kinds round-robin in a seeded order (each kind
        as often as the others), points drawn from the seed."""
        plan = []
        while len(plan) < self.iterations:
            ks = list(kinds)
            self.rng.shuffle(ks)
            plan += [(k, self.rng.choice(points)) for k in ks]
        return plan[:self.iterations]

    # ---- setup -------------------------------------------------------------

    def needs(self):
        require_built(self.kernel)

    def start(self, root):
        self.root = root
        self.g = Guest(self.kernel, ram_mib=self.ram_mib, fpr=False, backend="memfd",
                       name="fault-soak", daemon_monitor=True)
        self.g.__enter__()
        g = self.g
        g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
        self.start_agent()
        g.populate_backing()
        hostmem.populate_written(g.pid, g.ram_bytes)
        g.check(f"memcheck start --mib {self.data_mib} --id a --seed {self.seed % 1000 + 1}",
                timeout=600)
        self.start_daemon()
        self.wait_back("the first reconcile")

    def start_agent(self):
        self.g.check("vmdefrag-agent >>/tmp/agent.log 2>&1 &")

    def start_daemon(self):
        self.d = Daemon(self.root, [(VM, self.g.daemon_qmp_socket, self.g.vdf_socket)],
                        config=CONFIG)

    # ---- daemon state ---------------------------------------------------------

    def st(self):
        return self.d.status(VM)[VM]

    def op(self):
        return self.st().get("operation") or {}

    def held(self):
        return (self.st().get("memory") or {}).get("captured_bytes", 0)

    def running(self, st=None):
        o = (st or self.st()).get("operation") or {}
        return o.get("state") == "running"

    def wait(self, cond, what, timeout=180):
        self.d.wait_for(cond, what, timeout)

    def wait_back(self, what, connects=None, qmp_old=None):
        """The daemon is attached to QEMU and the guest and has reconciled
        (after a new guest session, or a new QMP connection, if given)."""
        def back():
            st = self.st()
            m = st.get("memory") or {}
            if connects is not None and st["session"]["connects"] <= connects:
                return False
            if qmp_old is not None and not conn_inodes(self.g.daemon_qmp_socket) - qmp_old:
                return False
            return (st["qmp"]["connected"] and st["session"]["state"] == "ready"
                    and m.get("reconciled") and not self.running(st))
        self.wait(back, what, 240)

    def ctl_op(self, kind, mib):
        """Starts a reclaim or return; (started, the refusal).  Asked again
        while the daemon says the last request of a stopped operation is
        still out (after a fault, the guest's answer may take a while)."""
        deadline = time.monotonic() + 120
        while True:
            p = self.d.ctl(kind, VM, f"{mib}M", check=False)
            if (p.returncode == 0 or "try again" not in p.stderr
                    or time.monotonic() > deadline):
                return p.returncode == 0, p.stderr.strip()
            time.sleep(0.2)

    def wait_op_end(self, timeout=600):
        self.wait(lambda: not self.running(), "the operation to end", timeout)
        o = self.op()
        return f"{o.get('kind', '?')}:{o.get('state', '?')}:{o.get('done_bytes', 0) // MIB}M"

    # ---- faults ---------------------------------------------------------------

    def inject(self, it, at):
        """Injects it.kind now (at: what was going on, for the report) and
        waits for the daemon to be back."""
        if it.injected:
            return
        it.injected = True
        it.at = at
        if it.kind == "daemon":
            self.d.kill()
            time.sleep(it.down)
            self.start_daemon()
            self.wait_back("vmdefragd back after kill -9")
        elif it.kind == "agent":
            self.g.check("kill -9 $(pidof vmdefrag-agent)")
            self.g.check("while pidof vmdefrag-agent >/dev/null; do sleep 0.1; done",
                         timeout=30)
            time.sleep(it.down)
            self.start_agent()
            self.wait_back("the session back after the agent's kill -9",
                           connects=None)
            # the daemon learns of a new agent from its HELLO: wait until the
            # session answered a fresh request (reconciled again, below)
        else:
            old = conn_inodes(self.g.daemon_qmp_socket)
            if cut_unix_server_conns(self.g.pid, self.g.daemon_qmp_socket) == 0:
                it.fail("the daemon had no QMP connection to cut", mismatch=False)
            self.wait_back("QMP back after the cut", qmp_old=old)
        it.ops.append(f"[{it.kind} at {it.at}, down {it.down:.1f}s]")

    # ---- one cycle --------------------------------------------------------------

    def cycle(self, it):
        g, rng = self.g, self.rng
        it.down = 0.0 if it.kind == "qmp" else rng.uniform(0, 2)
        target = rng.choice((96, 128, 160, 192))
        ret_mib = rng.choice((16, 32, 48))
        extra = rng.choice((16, 32, 48))
        delay = rng.random()
        pid = f"p{it.n}"

        # reclaim
        have = sum(length for _, length in g.captured_ranges()) // MIB
        want = max(BLOCK // MIB, (target - have) // 2 * 2)
        if it.point == "before-punch":
            ok, err = self.ctl_op("reclaim", want)
            self.inject(it, "reclaim asked")
        else:
            backing = g.backing_bytes()
            ok, err = self.ctl_op("reclaim", want)
            if it.point == "during-punch" and ok:
                # the backing shrinks at the first punch: poll it (a stat),
                # not the daemon's status (a vmdefragctl run per look)
                deadline = time.monotonic() + 600
                while g.backing_bytes() > backing - BLOCK and time.monotonic() < deadline:
                    time.sleep(0.002)
                time.sleep(0.05 * delay)
                self.inject(it, f"{(backing - g.backing_bytes()) // MIB}M punched")
        if not ok:
            it.ops.append(f"reclaim {want}M refused ({err})")
        else:
            it.ops.append(f"reclaim {want}M " + self.wait_op_end())
        if it.point in ("during-punch", "after-punch"):
            self.inject(it, "reclaim over")    # during-punch: if refused

        # return
        backing = g.backing_bytes()
        ok, err = self.ctl_op("return", ret_mib)
        if it.point == "during-return":
            # the re-back grows the backing before the guest gets its
            # blocks back (RELEASE): catch it growing
            deadline = time.monotonic() + 60
            while (ok and g.backing_bytes() < backing + BLOCK
                   and time.monotonic() < deadline):
                time.sleep(0.002)
            self.inject(it, f"{(g.backing_bytes() - backing) // MIB}M re-backed")
        it.ops.append(f"return {ret_mib}M " + (self.wait_op_end() if ok
                                               else f"refused ({err})"))

        # pressure: free memory plus part of what is captured, always
        # leaving PRESSURE_SLACK of free + captured untouched: when a fault
        # left nothing captured (the agent gave back blocks its dead daemon
        # never ACKed), "all of MemFree" is below the watermarks, and the
        # guest's OOM killer, not the agent, answers it
        caps = sum(length for _, length in g.captured_ranges())
        free = g.meminfo()["MemFree"]
        over = min(extra * MIB, caps // 2, caps - PRESSURE_SLACK)
        pmib = max(8, (free + over) // MIB)
        held0 = self.held()
        g.check(f"(memcheck start --mib {pmib} --id {pid} --seed {it.n} "
                f">/tmp/{pid}.log 2>&1; echo $? >/tmp/{pid}.rc) >/dev/null 2>&1 &")
        if it.point == "during-pressure":
            deadline = time.monotonic() + 3 * delay
            while time.monotonic() < deadline:
                if self.held() < held0:
                    break
                time.sleep(0.05)
            self.inject(it, f"{held0 // MIB}->{self.held() // MIB}M held")
        deadline = time.monotonic() + 600
        while True:
            st, rc = g.run(f"cat /tmp/{pid}.rc 2>/dev/null")
            if st == 0 and rc.strip():
                break
            if time.monotonic() > deadline:
                raise SoakError(f"iteration {it.n}: the pressure memcheck never ended")
            time.sleep(0.5)
        if rc.strip() != "0":
            it.fail(f"pressure memcheck start exited {rc.strip()}: "
                    + g.run(f"cat /tmp/{pid}.log")[1][-300:], mismatch=False)
        it.ops.append(f"pressure {pmib}M")
        self.check(it, ("a", pid) if rc.strip() == "0" else ("a",))
        if rc.strip() == "0":
            g.check(f"memcheck stop --id {pid}")

    # ---- checks -------------------------------------------------------------------

    def settled(self):
        caps = self.g.captured_ranges()
        st = self.st()
        m = st.get("memory") or {}
        total = sum(length for _, length in caps)
        ok = (m.get("reconciled") and not self.running(st)
              and m.get("pending_bytes") == 0 and m.get("captured_bytes") == total
              and m.get("reclaimed_bytes") == total)
        return ok, caps, total, m

    def check(self, it, ids):
        g = self.g
        for ident in ids:
            try:
                out = g.check(f"memcheck verify --id {ident}", timeout=600)
            except GuestCommandError as e:
                out = e.output
                it.fail(f"memcheck {ident}: {out.strip()[-400:]}", mismatch=False)
            m = MEMCHECK.search(out)
            if m:
                it.pages += int(m.group(1))
                it.bad_pages += int(m.group(2))
            else:
                it.fail(f"memcheck {ident}: no result: {out.strip()[-200:]}",
                        mismatch=False)
        # counters, once the daemon and the guest agree or 60 s passed
        deadline = time.monotonic() + 60
        ok, caps, total, m = self.settled()
        while not ok and time.monotonic() < deadline:
            time.sleep(0.5)
            ok, caps, total, m = self.settled()
        it.captured = total
        if m.get("captured_bytes") != total:
            it.fail(f"daemon captured_bytes {m.get('captured_bytes')} != guest list {total}")
        if m.get("reclaimed_bytes") != total:
            it.fail(f"daemon reclaimed_bytes {m.get('reclaimed_bytes')} != guest list {total}")
        if m.get("pending_bytes"):
            it.fail(f"daemon pending_bytes {m.get('pending_bytes')} after settling")
        holes, partial = block_holes(g)
        listed = {off for a, length in caps for off in range(a, a + length, BLOCK)
                  if off < g.ram_bytes}
        backed = sorted(listed - holes)
        if backed:
            it.fail(f"{len(backed)} captured blocks backed, first at 0x{backed[0]:x}")
        if partial & listed:
            it.fail(f"{len(partial & listed)} captured blocks are partly backed, "
                    f"first at 0x{min(partial & listed):x}")
        # holes the guest's list does not hold: blocks it took back while no
        # daemon or agent could hear of it (pressure during a fault) stay
        # holes until written (a new daemon cannot tell them from RAM never
        # touched); anything else is a punch of a block the guest uses
        stray = (holes | partial) - listed
        new = stray - self.excused
        if new and it.point == "during-pressure":
            it.unseen = len(new) * BLOCK
            self.excused |= new
        elif new:
            it.fail(f"{len(new)} blocks not captured are holes ({len(new & holes)} "
                    f"whole), first at 0x{min(new):x}")
        self.excused &= stray
        if len(holes & listed) * BLOCK != total:
            it.fail(f"captured blocks that are holes {len(holes & listed) * 2} MiB "
                    f"!= guest list {total // MIB} MiB")
        text = g.console_text()
        s = SPLAT.search(text)
        if s:
            it.fail("guest kernel splat: " + text[s.start():s.start() + 300], mismatch=False)

    # ---- the whole soak ---------------------------------------------------------

    def run(self):
        self.needs()
        own = self.workdir is None
        root = Path(tempfile.mkdtemp(prefix="vdf-fault-soak-")) if own else self.workdir
        self.out(f"fault soak: seed {self.seed}, {self.iterations} iterations, guest "
                 f"{self.kernel}, {self.ram_mib} MiB RAM (memfd, shared backend), "
                 f"{self.data_mib} MiB memcheck data")
        self.out("  plan: " + ", ".join(f"{k}@{p}" for k, p in self.plan))
        aborted = None
        try:
            self.start(root)
            for n, (kind, point) in enumerate(self.plan, 1):
                it = Iteration(n, kind, point)
                self.results.append(it)
                t0 = time.monotonic()
                try:
                    self.cycle(it)
                except (SoakError, DaemonError, GuestCommandError, OSError) as e:
                    it.fail(f"{type(e).__name__}: {e}"[:2000], mismatch=False)
                    aborted = e
                    traceback.print_exc(file=sys.stderr)
                it.took = time.monotonic() - t0
                self.out(it.line(self.iterations))
                for f in it.failures:
                    self.out(f"    FAILED: {f}")
                if aborted:
                    break
        finally:
            self.cleanup(root, own)
        return self.summary(aborted)

    def summary(self, aborted):
        done = [it for it in self.results if it.injected]
        kinds = Counter(it.kind for it in done)
        points = Counter(it.point for it in done)
        pages = sum(it.pages for it in self.results)
        bad = sum(it.bad_pages for it in self.results)
        mism = sum(it.mismatches for it in self.results)
        failed = sum(not it.passed for it in self.results)
        self.totals = {"iterations": len(self.results), "faults": len(done),
                       "kinds": dict(kinds), "points": dict(points), "pages": pages,
                       "bad_pages": bad, "mismatches": mism, "failed": failed}
        self.out(f"fault soak seed {self.seed}: {len(self.results)} iterations, "
                 f"{len(done)} faults injected ("
                 + ", ".join(f"{k} {kinds[k]}" for k in KINDS) + "; "
                 + ", ".join(f"{p} {points[p]}" for p in POINTS) + f"), "
                 f"{pages} pages checked, {bad} corrupted, {mism} counter/backing "
                 f"mismatches, {failed} iterations failed"
                 + (f", aborted: {aborted}" if aborted else ""))
        return not failed and not aborted and len(self.results) == self.iterations

    def cleanup(self, root, own):
        logs = BUILD / "test-logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self.d is not None:
            self.d.close()
            shutil.copy(self.d.log_path, logs / "vmdefragd-fault-soak.log")
        if self.g is not None:
            try:
                self.g.run("cat /tmp/agent.log >/dev/console", timeout=10)
            except Exception:  # noqa: BLE001 (the guest may be gone)
                pass
            self.g.stop()
            try:
                self.g.check_console()
            except Exception as e:  # noqa: BLE001
                if self.results:
                    self.results[-1].fail(f"console: {str(e)[:600]}", mismatch=False)
        if own:
            shutil.rmtree(root, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--seed", type=int, help="replays a run (default: a random one, printed)")
    ap.add_argument("--kernel", help="guest kernel release (default: the oldest installed)")
    ap.add_argument("--ram", type=int, default=512, help="guest RAM in MiB")
    ap.add_argument("--data", type=int, default=96, help="memcheck data held, MiB")
    ap.add_argument("--faults", default=",".join(KINDS),
                    help="fault kinds to draw from (daemon,agent,qmp)")
    ap.add_argument("--points", default=",".join(POINTS),
                    help="points to draw from (" + ",".join(POINTS) + ")")
    ap.add_argument("--plan", help="KIND@POINT,... instead of a drawn plan "
                    "(e.g. daemon@during-punch,agent@during-return)")
    args = ap.parse_args(argv)
    plan = [tuple(x.split("@", 1)) for x in args.plan.split(",")] if args.plan else None
    if plan and any(len(x) != 2 or x[0] not in KINDS or x[1] not in POINTS for x in plan):
        print(f"fault-soak: bad --plan {args.plan!r} (KIND@POINT: {'|'.join(KINDS)} @ "
              f"{'|'.join(POINTS)})", file=sys.stderr)
        return 2
    kinds = [k for k in args.faults.split(",") if k]
    points = [p for p in args.points.split(",") if p]
    bad = [k for k in kinds if k not in KINDS] + [p for p in points if p not in POINTS]
    if args.iterations < 1 or not kinds or not points or bad:
        print(f"fault-soak: need --iterations >= 1 and known faults/points "
              f"(unknown: {' '.join(bad) or '-'})", file=sys.stderr)
        return 2
    if args.kernel and args.kernel not in guest_kernels():
        print(f"fault-soak: no guest kernel {args.kernel!r} (installed: "
              f"{' '.join(guest_kernels())})", file=sys.stderr)
        return 2
    try:
        soak = Soak(iterations=args.iterations, seed=args.seed, kernel=args.kernel,
                    ram_mib=args.ram, data_mib=args.data, kinds=kinds, points=points,
                    plan=plan, out=lambda s: print(s, flush=True))
        return 0 if soak.run() else 1
    except SoakError as e:
        print(f"fault-soak: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
