"""Live migration of a test guest between two QEMUs on this machine.

    with Guest(kernel, backend="tmpfs") as src:
        with IncomingGuest(src) as dst:           # same devices, -incoming defer
            migrate(src, dst, postcopy=True, during=lambda: ...)
            src.stop()                            # the guest runs in dst now
            dst.check("memcheck verify --id a")   # dst is a Guest

The destination is the same machine and devices as the source (a Guest
with `-incoming defer`), with its own workdir, sockets and RAM backing
(backend may differ: a tmpfs file, a memfd or anonymous RAM), and the
QEMU binary may differ (`qemu`: e.g. a patched build on one end, stock
on the other; the source's binary by default).  Its
control channel is connected before the migration starts, so the guest's
vdf-testd keeps one open port across the hop and the test runs commands on
`dst` afterwards.  migrate() drives QMP on both ends: capabilities
(postcopy-ram), migrate-incoming, migrate, migrate-start-postcopy, and
waits for the source's query-migrate to say completed.

PeakSampler samples QEMUs' RAM backing (st_blocks) in a thread while a
migration runs, for the peak a migration reaches on either end:

    with PeakSampler(src, dst) as peak:
        migrate(src, dst)
    peak.peak[src], peak.peak[dst]          # bytes (None: anonymous RAM)
"""
import threading
import time

from .guest import Guest, GuestError
from .qmp import QMP
from .vmdefragd import Daemon


class IncomingGuest(Guest):
    def __init__(self, src, backend=None, extra_args=(), name=None, qemu=None):
        super().__init__(src.kernel, ram_mib=src.ram_mib, fpr=src.fpr, smp=src.smp,
                         backend=backend or src.backend,
                         name=name or src.name + "-dst", accel=src.accel,
                         extra_args=list(extra_args) + ["-incoming", "defer"],
                         cmdline=src.cmdline, qemu=qemu or src.qemu)
        self.src = src

    def initrd(self):
        return self.src.initrd()

    def start(self):
        self.launch()
        self.qmp_conn = QMP(self.qmp_socket)
        status = self.qmp("query-status")["status"]
        if status != "inmigrate":
            raise GuestError(f"destination QEMU is {status!r}, not inmigrate")


def captures(g):
    """The guest module's list of captured ranges (vdfnl, in the guest):
    what a migration must carry over unchanged."""
    return sorted(line for line in g.check("vdfnl list").splitlines()
                  if line.startswith("range="))


def migration_status(g):
    return g.qmp("query-migrate").get("status", "none")


def migrate(src, dst, postcopy=False, bandwidth=8 << 30, during=None,
            timeout=600):
    """Migrates src's guest into dst; returns src's final query-migrate.

    during(), if given, runs once while the migration is active (after the
    switch to post-copy for postcopy=True)."""
    uri = f"unix:{dst.workdir}/migrate.sock"
    caps = [{"capability": "postcopy-ram", "state": bool(postcopy)}]
    for g in (src, dst):
        g.qmp("migrate-set-capabilities", capabilities=caps)
    src.qmp("migrate-set-parameters", **{"max-bandwidth": bandwidth,
                                         "max-postcopy-bandwidth": bandwidth})
    dst.qmp("migrate-incoming", uri=uri)
    src.qmp("migrate", uri=uri)
    deadline = time.monotonic() + timeout
    started_postcopy = False
    ran = during is None
    while time.monotonic() < deadline:
        info = src.qmp("query-migrate")
        st = info.get("status", "none")
        if st in ("completed", "failed", "cancelled"):
            if not ran:
                raise GuestError(f"migration {st} before during() could run")
            return info
        if postcopy and st == "active" and not started_postcopy:
            src.qmp("migrate-start-postcopy")
            started_postcopy = True
        if not ran and st == ("postcopy-active" if postcopy else "active"):
            during()
            ran = True
        time.sleep(0.1)
    raise GuestError(f"migration did not end in {timeout} s: {migration_status(src)}")


def prepare_reclaimed(g, workdir, qmp, config, reclaim):
    """A guest as the migration tests start from: the module (64 MiB
    floor) and the agent, its RAM backed, memcheck data (id a), fragmented
    free memory, and a vmdefragd in `workdir` (made here) on the monitor
    `qmp` that reclaimed `reclaim` bytes; returns the daemon."""
    g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
    g.check("vmdefrag-agent >/tmp/agent.log 2>&1 &")
    g.populate_backing()
    g.check("memcheck start --mib 64 --id a --seed 21", timeout=300)
    g.check("fragment --seed 5 --anon 80 --files 40", timeout=600)
    workdir.mkdir()
    d = Daemon(workdir, [("g", qmp, g.vdf_socket)], config=config)
    d.wait_reconciled("g")
    d.ctl("reclaim", "g", f"{reclaim >> 20}M", "--wait")
    return d


def wait_migration(g, states, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = migration_status(g)
        if st in states:
            return st
        time.sleep(0.1)
    raise GuestError(f"migration still {migration_status(g)!r}, waited for {states}")


class PeakSampler:
    """The highest backing_bytes() of each guest while the block runs."""

    def __init__(self, *guests, interval=0.1):
        self.guests = guests
        self.interval = interval
        self.peak = {g: None for g in guests}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        for g in self.guests:
            try:
                b = g.backing_bytes()
            except (OSError, AttributeError, TypeError):
                continue    # QEMU gone or stopping: its last sample stands
            if b is not None and (self.peak[g] is None or b > self.peak[g]):
                self.peak[g] = b

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        return False


__all__ = ["IncomingGuest", "PeakSampler", "migrate", "migration_status",
           "prepare_reclaimed", "wait_migration"]
