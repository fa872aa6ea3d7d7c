"""make bench, migration section: what a live migration does to a
fragmented, reclaimed guest, patched QEMU (qemu-patches/) against stock.

    tests/bench/run-bench --only migration [--ram-mib 1024]

One guest (1 GiB, 2 vCPUs, the oldest guest kernel, the module and the
agent in it) is prepared once: its RAM fully backed, 64 MiB of memcheck
data held, its free memory written once and freed (memcheck; as in a guest
that ran a while, free pages hold stale data), the `fragment` workload (anon
FRAG_ANON_MIB, files FRAG_FILES_MIB per GiB, survivors held), then half of
its MemFree reclaimed by its vmdefragd (`vmdefragctl reclaim --wait`).
That guest then hops from row to row: each row migrates it from the QEMU
it runs in into a new one (`-incoming defer`) on this machine, so the
destination of one row is the source of the next.  Every QEMU has its own
vmdefragd from its start (the source's and, in the rows that say so, the
destination's), except a destination without one, which gets its daemon
only after the row's last sample, for the next row.

Before each row the source is put back in the prepared state: its backing
file allocated whole (fallocate, which never changes a byte) and its
daemon restarted, whose reconcile punches every block the guest holds
captured: backing = RAM - captured, whatever the previous hop left.

Rows (each for the patched pair and the stock pair, in that order):
  precopy and postcopy, RAM in a tmpfs file (huge=within_size, align=2M)
  on both ends, a memfd on both ends, and a tmpfs file on the source into
  anonymous RAM on the destination (a shared backend needs a file or a
  memfd on the source; anonymous RAM is the destination's choice); and for
  stock, postcopy tmpfs -> tmpfs once more with no destination daemon:
  stock QEMU and khugepaged alone.  After each anonymous destination, and
  from the patched rows to the stock ones, an unmeasured postcopy hop
  brings the guest to the next row's source (RAM kind and QEMU).

Measured, from the kernel's own accounting (never the daemon's):
  source     backing before the migration (st_blocks) and its peak during
             it (sampled every SAMPLE_S in a thread);
  dest       backing when the migration completed and END_LATER_S later
             (st_blocks; anonymous RAM: Rss of QEMU's RAM mapping);
  2 MiB      PMD-mapped share of QEMU's resident guest RAM (smaps of the
             RAM mapping: AnonHugePages + ShmemPmdMapped + FilePmdMapped)
             when the migration completed, +10 s and +60 s;
  migration  the source's query-migrate total-time, downtime and
             ram.transferred;
  data       memcheck verify of the held data, after the +60 s sample.

"When the migration completed" is the source's query-migrate saying
completed: the switch-over for precopy; for postcopy the destination has
run the guest since postcopy-active (the time is in the row's raw data)
and this is when its last page arrived.

No writer runs in the guest during the migrations (the memcheck and
fragment holders only hold): stock QEMU 7.2 under TCG loses guest writes
in precopy (see tests/integration/test_migration_soak.py); the data column
says what happened in any case.
"""
import shutil
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "tests"))
sys.path.insert(0, str(TOP / "qemu-patches" / "tests"))

from harness.guest import Guest, patched_qemu  # noqa: E402
from harness.migration import IncomingGuest, PeakSampler, captures, migrate  # noqa: E402
from harness.vmdefragd import Daemon  # noqa: E402
from migrate_ram import _ram_mappings, _ram_start  # noqa: E402

MIB = 1 << 20
BLOCK = 2 * MIB
STOCK_QEMU = "/usr/bin/qemu-system-x86_64"
SAMPLE_S = 0.02
LATER_S = (10, 30, 60)
END_LATER_S = 30
FRAG_ANON_MIB = 160
FRAG_FILES_MIB = 80
HELD_MIB = 64
SEED = 11
CONFIG = "[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"

# (mode, source backend, destination backend, destination daemon)
ROWS = [
    ("precopy", "tmpfs", "tmpfs", True),
    ("postcopy", "tmpfs", "tmpfs", True),
    ("precopy", "tmpfs", "anon", True),
    ("postcopy", "tmpfs", "anon", True),
    ("precopy", "memfd", "memfd", True),
    ("postcopy", "memfd", "memfd", True),
]
STOCK_EXTRA = [("postcopy", "tmpfs", "tmpfs", False)]


def log(msg):
    print(f"[bench-migration {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Host:
    """One QEMU (a Guest or IncomingGuest), the QMP socket its daemon uses,
    its daemon (or None) and where guest RAM starts in its address space."""

    def __init__(self, guest, qmp, workdir):
        self.guest, self.qmp, self.workdir = guest, qmp, workdir
        self.daemon = None
        self.ram_start = None

    @property
    def backend(self):
        return self.guest.backend

    def start_daemon(self):
        d = self.workdir / f"d{time.monotonic_ns()}"
        d.mkdir()
        self.daemon = Daemon(d, [("g", self.qmp, self.guest.vdf_socket)], config=CONFIG,
                             log_level="info")
        return self.daemon

    def stop_daemon(self):
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None

    def stop(self):
        self.stop_daemon()
        self.guest.stop()

    def mapping(self):
        """(backed bytes, PMD-mapped bytes, resident bytes) of guest RAM."""
        g = self.guest
        m = _ram_mappings(g.pid, self.ram_start, g.ram_bytes)
        pmd = m["AnonHugePages"] + m["ShmemPmdMapped"] + m["FilePmdMapped"]
        backed = m["Rss"] if g.backend == "anon" else g.backing_bytes()
        return backed, pmd, m["Rss"]


def _qmp_args(path):
    return ["-qmp", f"unix:{path},server=on,wait=off"]


def captured_bytes(g):
    return sum(int(line[6:].split(":")[1], 16) for line in captures(g))


def _mig(d):
    return d.status("g")["g"]["migration"]


def final_info(g, info):
    """The source's query-migrate once its totals are in: QEMU 7.2 says
    "completed" before migration_calculate_complete() has set total-time
    and downtime (a fast migration reads 0 for both), so ask again."""
    deadline = time.monotonic() + 5
    while not info.get("total-time") and time.monotonic() < deadline:
        time.sleep(0.1)
        info = g.qmp("query-migrate")
    return info


def prepare(kernel, ram_mib, qemu, backend, root):
    """A fresh guest in the prepared state, with its daemon; a Host."""
    wd = Path(tempfile.mkdtemp(prefix="h-", dir=root))
    qmp = wd / "daemon.qmp"
    g = Guest(kernel, ram_mib=ram_mib, fpr=False, backend=backend, name="bench-mig0",
              qemu=qemu, extra_args=_qmp_args(qmp))
    h = Host(g, qmp, wd)
    g.__enter__()
    try:
        h.ram_start = _ram_start(g.pid, g.ram_bytes)
        g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
        g.check("vmdefrag-agent >/tmp/agent.log 2>&1 &")
        g.populate_backing()
        g.check(f"memcheck start --mib {HELD_MIB} --id held --seed {SEED}", timeout=600)
        # as run-bench's guest rows: every free page written once, so free
        # memory holds stale data as in a guest that ran a while, not the
        # zeros of a fresh boot (which a patched destination never allocates)
        touch = (g.meminfo()["MemFree"] - 112 * MIB) // MIB
        g.check(f"memcheck start --mib {touch} --id touch --seed {SEED + 1}", timeout=900)
        g.check("memcheck stop --id touch")
        scale = ram_mib / 1024
        g.check(f"fragment --seed {SEED} --anon {int(FRAG_ANON_MIB * scale)} "
                f"--files {int(FRAG_FILES_MIB * scale)}", timeout=1200)
        d = h.start_daemon()
        d.wait_reconciled("g", timeout=180)
        free = g.meminfo()["MemFree"]
        want = free // 2 // BLOCK * BLOCK
        p = d.ctl("reclaim", "g", f"{want // MIB}M", "--wait", check=False, timeout=1200)
        h.prepared = {"guest_free": free, "asked": want, "captured": captured_bytes(g),
                      "reclaim_exit": p.returncode, "reclaim_err": p.stderr.strip()[-200:]}
        log(f"prepared on {backend}: MemFree {free // MIB} MiB, reclaim {want // MIB} MiB "
            f"asked, {h.prepared['captured'] // MIB} MiB captured, backing "
            f"{g.backing_bytes() // MIB} MiB")
    except BaseException:
        h.stop()
        raise
    return h


def normalize(h):
    """Back to the prepared state: backing = RAM - captured (file/memfd)."""
    g = h.guest
    g.populate_backing()
    h.stop_daemon()
    d = h.start_daemon()
    d.wait_reconciled("g", timeout=180)
    want = g.ram_bytes - captured_bytes(g)
    deadline = time.monotonic() + 60
    while g.backing_bytes() > want + BLOCK and time.monotonic() < deadline:
        time.sleep(0.5)


def hop(src, mode, dst_backend, qemu, root, dst_daemon=True, measure=True, label=""):
    """Migrates src's guest into a new QEMU; (row dict, destination Host).
    The source QEMU and its daemon are stopped."""
    postcopy = mode == "postcopy"
    g = src.guest
    row = {"mode": mode, "src_backend": src.backend, "dst_backend": dst_backend,
           "qemu": label, "dst_daemon": dst_daemon}
    if measure:
        normalize(src)
        row["captured"] = captured_bytes(g)
        row["src_before"] = g.backing_bytes()
    wd = Path(tempfile.mkdtemp(prefix="h-", dir=root))
    qmp = wd / "daemon.qmp"
    dst = IncomingGuest(g, backend=dst_backend, qemu=qemu, extra_args=_qmp_args(qmp),
                        name=f"bench-mig-{int(time.monotonic())}")
    h = Host(dst, qmp, wd)
    dst.__enter__()
    try:
        h.ram_start = _ram_start(dst.pid, dst.ram_bytes)
        if dst_daemon:
            d = h.start_daemon()
            d.wait_for(lambda: _mig(d)["state"] == "incoming", "incoming state")
        seen = {}

        def during():
            seen["switch"] = time.monotonic()

        t0 = time.monotonic()
        with PeakSampler(g, interval=SAMPLE_S) as peak:
            info = migrate(g, dst, postcopy=postcopy, during=during)
        t_end = time.monotonic()
        if info.get("status") != "completed":
            raise RuntimeError(f"migration {info.get('status')}: "
                               f"{info.get('error-desc', info)}")
        if measure:
            b, pmd, rss = h.mapping()
            info = final_info(g, info)
            row.update(dst_end=b, pmd_end=pmd, rss_end=rss,
                       src_peak=max(peak.peak[g] or 0, row["src_before"]),
                       wall_s=t_end - t0, total_ms=info.get("total-time"),
                       downtime_ms=info.get("downtime"),
                       sent=info.get("ram", {}).get("transferred"),
                       switch_s=(seen["switch"] - t0) if postcopy and "switch" in seen else None)
        if src.daemon is not None:
            try:
                src.daemon.wait_for(lambda: _mig(src.daemon)["state"] == "migrated-away",
                                    "source daemon: migrated away", 30)
            except Exception as e:  # noqa: BLE001 (a note, not a failed row)
                row["src_daemon_note"] = str(e).splitlines()[0]
        src.stop()
        try:
            g.check_console()
        except Exception as e:  # noqa: BLE001 (a finding, reported with the row)
            row["src_console"] = str(e)[:300]
        if not measure:
            if h.daemon is None:
                h.start_daemon()
            h.daemon.wait_reconciled("g", timeout=180)
            return row, h
        for s in LATER_S:
            time.sleep(max(0.0, t_end + s - time.monotonic()))
            b, pmd, rss = h.mapping()
            row[f"dst_{s}"], row[f"pmd_{s}"], row[f"rss_{s}"] = b, pmd, rss
        status, out = dst.run("memcheck verify --id held", timeout=600)
        row["data"] = "intact" if status == 0 else "CORRUPT"
        if status != 0:
            row["data_out"] = out.strip()[-300:]
        row["captured_after"] = captured_bytes(dst)
        if h.daemon is not None:
            st = h.daemon.status("g")["g"]
            row["dst_daemon_migration"] = st.get("migration")
            row["dst_daemon_backend"] = st.get("backend")
            text = h.daemon.ctl("status", "g", check=False).stdout
            row["dst_daemon_status"] = " ".join(
                line.strip() for line in text.splitlines() if "migrated in" in line)[:300]
        else:
            h.start_daemon()
            h.daemon.wait_reconciled("g", timeout=180)
        return row, h
    except BaseException:
        h.stop()
        raise


def plan(qemus):
    """[(label, qemu, mode, src backend, dst backend, daemon, measured)]."""
    steps = []
    for label, qemu in qemus:
        rows = ROWS + (STOCK_EXTRA if label == "stock" else [])
        for mode, sb, db, dd in rows:
            steps.append((label, qemu, mode, sb, db, dd, True))
    return steps


def run(kernel, ram_mib=1024, patched=None, stock=STOCK_QEMU):
    """All rows; returns (rows, info).  patched: a patched QEMU, None to
    look for one (harness.guest.patched_qemu()), False for stock rows only."""
    if patched is None:
        try:
            patched = patched_qemu()
        except RuntimeError as e:
            log(f"patched rows skipped: {e}")
    qemus = ([("patched", patched)] if patched else []) + [("stock", stock)]
    info = {"patched QEMU": patched or "none found (make qemu-test): patched rows skipped",
            "stock QEMU": stock}
    root = Path(tempfile.mkdtemp(prefix="vdf-bench-mig-"))
    rows = []
    cur = None
    t_start = time.monotonic()
    try:
        for label, qemu, mode, sb, db, dd, _ in plan(qemus):
            row = None
            try:
                if cur is None:
                    cur = prepare(kernel, ram_mib, qemu, sb, root)
                    info.setdefault("prepared", cur.prepared)
                elif cur.backend != sb or cur.guest.qemu != qemu:
                    # an unmeasured postcopy hop to the row's source
                    log(f"  re-home {cur.backend} -> {sb} ({label})")
                    _, cur = hop(cur, "postcopy", sb, qemu, root, measure=False)
                log(f"row {label} {mode} {sb} -> {db}, destination daemon "
                    f"{'yes' if dd else 'no'}")
                row, cur = hop(cur, mode, db, qemu, root, dst_daemon=dd, label=label)
                log("  " + summary(row))
                if row["data"] != "intact":
                    log("  guest data corrupt: the next row starts from a fresh guest")
                    cur.stop()
                    cur = None
            except Exception as e:  # noqa: BLE001 (a failed row is a row)
                row = {"qemu": label, "mode": mode, "src_backend": sb, "dst_backend": db,
                       "dst_daemon": dd, "error": f"{type(e).__name__}: "
                       + (str(e).splitlines() or [''])[0][:160]}
                log("  ERROR " + row["error"])
                if cur is not None:
                    cur.stop()
                cur = None
            rows.append(row)
    finally:
        if cur is not None:
            cur.stop()
        shutil.rmtree(root, ignore_errors=True)
    info["migration section wall time"] = f"{(time.monotonic() - t_start) / 60:.1f} min"
    return rows, info


# ---- output ---------------------------------------------------------------------

def mib(b):
    return "-" if b is None else f"{b / MIB:.0f}"


def pct(a, b):
    return "-" if not b else f"{100.0 * a / b:.0f}%"


def summary(r):
    return (f"src {mib(r['src_before'])} peak {mib(r['src_peak'])}; dst {mib(r['dst_end'])} "
            f"+30s {mib(r['dst_30'])}; 2M {pct(r['pmd_end'], r['rss_end'])} / "
            f"{pct(r['pmd_10'], r['rss_10'])} / {pct(r['pmd_60'], r['rss_60'])}; "
            f"{seconds(r)} s, {mib(r['sent'])} MiB sent; {r['data']}")


def seconds(r):
    """query-migrate's total-time, or the bench's own clock if QEMU gave none."""
    if r.get("total_ms"):
        return f"{r['total_ms'] / 1000:.1f}"
    return f"{r['wall_s']:.1f} (wall)"


HEAD = ["QEMU", "mode", "RAM src → dst", "dst vmdefragd", "src before / peak MiB",
        "dst at end / +30 s MiB", "dst 2 MiB-mapped at end / +10 s / +60 s",
        "time s", "sent MiB", "data"]

BACKEND = {"tmpfs": "tmpfs file", "memfd": "memfd", "anon": "anonymous"}


def daemon_cell(r):
    """What the destination's daemon did, from its own status."""
    if not r["dst_daemon"]:
        return "no"
    m = r.get("dst_daemon_migration")
    if not m:
        return "yes"
    c = m.get("collapse") or {}
    if r["dst_backend"] == "anon":
        return "yes: nothing to punch or collapse (anonymous RAM; khugepaged)"
    out = f"yes: punched {mib(m.get('reconcile_punched_bytes'))}"
    if c.get("state") != "done":
        return out + f", collapse {c.get('state')}"
    if c.get("folio_only_bytes"):
        return out + (f", {mib(c.get('folio_only_bytes'))} MiB made 2 MiB folios "
                      "(QEMU maps them 4 KiB)")
    return out + f", collapsed {mib(c.get('collapsed_bytes'))} MiB"


def cells(r):
    ram = f"{BACKEND[r['src_backend']]} → {BACKEND[r['dst_backend']]}"
    dd = daemon_cell(r)
    head = [r["qemu"], r["mode"], ram, dd]
    if "error" in r:
        return head + ["error: " + r["error"]] + [""] * (len(HEAD) - 5)
    return head + [
        f"{mib(r['src_before'])} / {mib(r['src_peak'])}",
        f"{mib(r['dst_end'])} / {mib(r['dst_30'])}",
        f"{pct(r['pmd_end'], r['rss_end'])} / {pct(r['pmd_10'], r['rss_10'])} / "
        f"{pct(r['pmd_60'], r['rss_60'])}",
        seconds(r), mib(r["sent"]), r["data"]]


def goals(r):
    """One line per goal for a measured row."""
    if "error" in r:
        return []
    name = (f"{r['qemu']} {r['mode']} {r['src_backend']}->{r['dst_backend']}"
            f"{'' if r['dst_daemon'] else ' (no dst daemon)'}")
    before = r["src_before"]
    out = []
    over = r["src_peak"] - before
    out.append(f"{name}: source peak {mib(r['src_peak'])} MiB, "
               f"{100.0 * over / before:+.1f}% of its {mib(before)} MiB before "
               "(goal <= +2%): " + ("met" if over <= 0.02 * before else "NOT met"))
    def verdict(b):
        diff = b - before
        if abs(diff) <= 0.02 * before:
            v = "met"
        elif diff < 0:
            v = "below it: met (zero pages never allocated)"
        else:
            v = "NOT met"
        return f"{mib(b)} MiB ({100.0 * diff / before:+.1f}%, {v})"
    out.append(f"{name}: destination backing vs the source's {mib(before)} MiB before "
               f"(goal: within 2%): at the end {verdict(r['dst_end'])}, +30 s "
               f"{verdict(r['dst_30'])}")
    share10 = r["pmd_10"] / r["rss_10"] if r["rss_10"] else 0
    out.append(f"{name}: 2 MiB-mapped at +10 s {100 * share10:.0f}% (goal >= 95%): "
               + ("met" if share10 >= 0.95 else "NOT met"))
    return out


def notes(info):
    p = info.get("prepared", {})
    return [
        "One guest (1 GiB, 2 vCPUs, TCG), prepared once: RAM fully backed, 64 MiB "
        "memcheck data held, free memory written once and freed (stale data, as in "
        f"a guest that ran a while), `fragment --anon {FRAG_ANON_MIB} --files {FRAG_FILES_MIB}`, "
        f"then half its MemFree reclaimed by vmdefragd ({mib(p.get('asked'))} MiB asked, "
        f"{mib(p.get('captured'))} MiB captured); it hops from row to row (each row's "
        "destination is the next row's source). Before each row the source's backing "
        "is reset to RAM minus what the guest holds captured (file allocated whole, "
        "the daemon's reconcile punches the captured blocks).",
        "anonymous: the source's RAM is a tmpfs file (the shared backend needs one), "
        "the destination's memory-backend-ram; backing there = Rss of QEMU's RAM "
        "mapping (zero-page PTEs are not counted). After such a row an unmeasured "
        "postcopy hop brings the guest back to a file or memfd.",
        "tmpfs file: memory-backend-file share=on align=2M on a tmpfs mounted "
        "huge=within_size; memfd: memory-backend-memfd share=on.",
        "at end: when the source's query-migrate said completed (precopy: the "
        "switch-over; postcopy: the last page arrived, the guest having run on the "
        "destination since postcopy-active); +10/+30/+60 s from then.",
        "2 MiB-mapped: AnonHugePages + ShmemPmdMapped + FilePmdMapped over Rss of "
        "QEMU's RAM mapping (smaps). Stock QEMU 7.2 maps a memfd 4 KiB-aligned: 0% "
        "there whatever the folios (the daemon's collapse pass makes 2 MiB folios "
        "QEMU still maps with 4 KiB entries).",
        "dst vmdefragd: a daemon attached to the incoming QEMU (default config: "
        "collapse_cpu_percent 25): after the migration it reconciles (punches the "
        "captured blocks stock QEMU wrote) and runs its collapse pass (file and memfd "
        "RAM; anonymous RAM is left to khugepaged); punched: backing it found under "
        "captured blocks. 'no': the stock path without "
        "vmdefragd (khugepaged only); a daemon is started after the +60 s sample.",
        "time: query-migrate total-time (marked (wall) where QEMU gave none: the "
        "bench's clock); sent: ram.transferred. data: memcheck verify "
        "of the 64 MiB after the +60 s sample. No writer runs in the guest during the "
        "migrations (stock QEMU 7.2 under TCG loses guest writes in precopy: "
        "tests/integration/test_migration_soak.py).",
        "Source peak: st_blocks sampled every 20 ms.",
    ]


def md(rows, info):
    out = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in rows]
    return "\n".join(out)


def text(rows):
    table = [cells(r) for r in rows]
    widths = [max(len(str(x[i])) for x in table + [HEAD]) for i in range(len(HEAD))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(HEAD, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(x, widths)) for x in table]
    return "\n".join(lines)


__all__ = ["run", "md", "text", "goals", "notes"]
