"""vmdefragd reclaim / return / reconcile against real guests.

Each figure here is measured by the harness from the kernel's own
accounting (st_blocks of QEMU's memfd, /proc/kpageflags), never taken from
the daemon; the daemon's counters are checked against those measurements.

test_reclaim_cycle  one 1024 MiB guest per kernel, the module and the agent
                    in it, memcheck data and a fragmented free memory:
  reclaim   `vmdefragctl reclaim g SIZE --wait` (75 % of the guest's free
            memory) exits 0 and the backing shrinks by at least SIZE;
            beside it, what free page reporting alone could have taken
            (whole free 2 MiB blocks before, /proc/buddyinfo).
  return    `vmdefragctl return g 128M --wait` with the host's
            shmem_enabled at advise: the blocks that were holes and hold
            data again are 2 MiB folios (kpageflags); the guest then uses
            memory again and every memcheck stays intact.
  restart   a big reclaim without --wait, the daemon killed with SIGKILL
            after its first progress, a new daemon: it reconciles, its
            "reclaimed" equals the measured backing drop, and a second small
            reclaim adds exactly what it freed (nothing counted twice).
  pressure  the guest allocates past its free memory: the module's shrinker
            releases captured blocks (they were ACKed), the guest keeps
            running with memcheck intact, and status shows the released
            blocks as the guest's.
test_cancel         `vmdefragctl cancel g ID` in the middle of a big
                    reclaim that a `--wait` client follows: the operation
                    ends "stopped", the waiter exits 1 with the reason, the
                    guest's request in flight completes (every block the
                    guest holds captured is a hole, and exactly what the
                    daemon counts), guest data intact, and the VM takes the
                    next operation.  Then a reload (SIGHUP) sets and lifts
                    the VM's max_reclaim without a restart.
test_hint_backend   anonymous RAM without a balloon: reclaim and return
                    refuse with "no reclaim backend", exit 1, one line
                    (the hint backend itself: test_hint.py).
"""
import signal
import subprocess
import time

import pytest

from harness import folios, hostmem
from harness.guest import Guest, BUILD
from harness.vmdefragd import VMDEFRAGCTL, Daemon
from test_daemon import PausedQemu, one_error_line

MIB = 1 << 20
BLOCK = 2 * MIB
SHMEM_ENABLED = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"


@pytest.fixture
def shmem_advise():
    """shmem_enabled=advise for the test, the old value restored on every path."""
    old = hostmem.shmem_enabled()
    with open(SHMEM_ENABLED, "w") as f:
        f.write("advise")
    try:
        yield
    finally:
        with open(SHMEM_ENABLED, "w") as f:
            f.write(old)


def meminfo(g, key):
    return g.meminfo()[key]


def mem(d):
    return d.status("g")["g"]["memory"]


def op(d):
    return d.status("g")["g"]["operation"]


def captured_holes(g):
    """Bytes the guest module holds captured whose backing is a hole: the
    harness's own count of "reclaimed" (the guest's LIST via vdfnl, the
    holes via SEEK_DATA; guest-physical == backing offset below 4 GiB)."""
    data = folios.data_blocks(g.pid, g.ram_bytes)
    partial = set()
    for start, end in hostmem.backing_data_map(g.pid, g.ram_bytes):
        for off in range(start // BLOCK * BLOCK, end, BLOCK):
            partial.add(off)
    total = 0
    for addr, length in g.captured_ranges():
        for off in range(addr, addr + length, BLOCK):
            if off not in data and off not in partial:
                total += BLOCK
    return total


def close_enough(a, b, slack=8 * MIB, frac=0.02):
    return abs(a - b) <= slack + frac * max(a, b)


def test_reclaim_cycle(kernel, workdir, figures, shmem_advise):  # noqa: F811
    agent = BUILD / "agent/vmdefrag-agent"
    if not agent.exists() or not (BUILD / "module" / kernel / "vmdefrag.ko").exists():
        pytest.skip("needs build/agent/vmdefrag-agent and the module for " + kernel)
    qmp2 = workdir / "daemon.qmp"
    # the daemon's default guest limits: the agent batches the module's
    # per-block pressure events, so a burst must not drop the session
    config = "[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"
    # free page reporting off: the guest's free memory stays backed once
    # touched, as in a guest that has run a while; what reporting could take
    # is computed from /proc/buddyinfo instead
    with Guest(kernel, ram_mib=1024, fpr=False,
               extra_args=["-qmp", f"unix:{qmp2},server=on,wait=off"]) as g:
        # a 64 MiB floor: 75 % of the free memory stays above it
        g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
        g.check("vmdefrag-agent -v >/tmp/agent.log 2>&1 &")
        # back all guest RAM, as in a guest that has run a while (then
        # migration targets are backed pages, not holes); done from the
        # host, because touching it from inside a guest risks its OOM killer
        g.populate_backing()
        g.check("memcheck start --mib 128 --id a --seed 5", timeout=300)
        g.check("fragment --seed 7 --files 120 --anon 120 --slab 8000", timeout=600)
        d = Daemon(workdir, [("g", qmp2, g.vdf_socket)], config=config)
        try:
            d.wait_reconciled("g")

            # ---- reclaim -------------------------------------------------
            free = meminfo(g, "MemFree")
            fpr_alone = hostmem.buddyinfo_free_bytes(g.read("/proc/buddyinfo"), 9)
            size = int(0.75 * free) // BLOCK * BLOCK
            # impossible sizes: one line, exit 2, nothing started
            p = d.ctl("reclaim", "g", "4G", check=False)
            assert p.returncode == 2 and "cannot reclaim" in one_error_line(p)
            p = d.ctl("reclaim", "g", "3M", check=False)
            assert p.returncode == 2 and "multiple of 2 MiB" in one_error_line(p)
            p = d.ctl("return", "g", "2M", check=False)
            assert p.returncode == 2 and "cannot return" in one_error_line(p)

            b0 = g.backing_bytes()
            t0 = time.monotonic()
            p = d.ctl("reclaim", "g", f"{size // MIB}M", "--wait", check=False)
            took = time.monotonic() - t0
            assert p.returncode == 0, (p.stderr, d.text()[-3000:], g.read("/tmp/agent.log"))
            b1 = g.backing_bytes()
            assert b0 - b1 >= size, (b0, b1, size, p.stdout)
            assert "done" in p.stdout
            # no free page reporting here: the daemon's own punches are the
            # drop (give or take pages the guest's migrations faulted in)
            assert op(d)["punched_bytes"] >= size, op(d)
            assert "vmdefrag punched" not in p.stdout, p.stdout
            g.check("memcheck verify --id a")
            st = mem(d)
            assert close_enough(st["reclaimed_bytes"], b0 - b1), (st, b0 - b1)
            assert st["pending_bytes"] == 0, st
            figures("guest free before reclaim", free / MIB, "MiB")
            figures("free page reporting alone (whole free 2 MiB blocks)",
                    fpr_alone / MIB, "MiB")
            figures("vmdefrag reclaim (backing drop, harness)", (b0 - b1) / MIB, "MiB")
            figures("reclaim rate", (b0 - b1) / MIB / took, "MiB/s")

            # ---- return --------------------------------------------------
            before = folios.data_blocks(g.pid, g.ram_bytes)
            p = d.ctl("return", "g", "128M", "--wait")
            assert "warning" not in p.stdout, p.stdout
            o = op(d)
            assert (o["kind"], o["state"], o["done_bytes"]) == ("return", "done", 128 * MIB)
            assert o["reback"] == "huge", o
            back = sorted(folios.data_blocks(g.pid, g.ram_bytes) - before)
            assert len(back) * BLOCK >= 128 * MIB, len(back)
            huge = folios.huge_blocks(g.pid, g.ram_bytes, back)
            nhuge = sum(huge.values())
            figures("returned blocks backed by 2 MiB folios",
                    f"{nhuge} / {len(back)}", "blocks")
            assert nhuge * BLOCK >= 128 * MIB, huge
            assert mem(d)["returned_bytes"] == 128 * MIB
            g.check("memcheck start --mib 96 --id b --seed 6", timeout=300)
            g.check("memcheck verify --id a")
            g.check("memcheck verify --id b")

            # ---- kill -9 mid-reclaim, restart, reconcile -----------------
            rk, bk = mem(d)["reclaimed_bytes"], g.backing_bytes()
            big = int(0.75 * meminfo(g, "MemFree")) // BLOCK * BLOCK
            p = d.ctl("reclaim", "g", f"{big // MIB}M")
            assert "started" in p.stdout
            p = d.ctl("return", "g", "2M", check=False)
            assert p.returncode == 1 and "still running" in one_error_line(p)
            d.wait_for(lambda: op(d)["done_bytes"] > 0, "the first progress", 120)
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            d.log.close()
            d = Daemon(workdir, [("g", qmp2, g.vdf_socket)], config=config)
            d.wait_reconciled("g")
            r2, b2 = mem(d)["reclaimed_bytes"], g.backing_bytes()
            assert mem(d)["pending_bytes"] == 0
            # derived from the guest's list and the backing's holes: exactly
            # what the harness counts, and at least the backing's drop
            # (the guest's migrations may have filled holes elsewhere)
            assert r2 == captured_holes(g), (r2, captured_holes(g))
            assert r2 > rk and bk - b2 <= r2 - rk + 4 * MIB, (rk, r2, bk, b2)
            # give some back (the guest is at its floor), then a small
            # reclaim: the counters move by exactly what was done
            d.ctl("return", "g", "64M", "--wait")
            r2, b2 = mem(d)["reclaimed_bytes"], g.backing_bytes()
            assert r2 == captured_holes(g)
            p = d.ctl("reclaim", "g", "32M", "--wait")
            r3, b3 = mem(d)["reclaimed_bytes"], g.backing_bytes()
            # measured after the daemon's last look: the guest keeps running
            assert b2 - b3 >= 31 * MIB, (b2, b3)
            assert r3 == captured_holes(g), (r3, captured_holes(g))
            assert r3 - r2 >= b2 - b3 - 4 * MIB, (r2, r3, b2, b3)
            g.check("memcheck verify --id a")
            g.check("memcheck verify --id b")
            figures("reclaimed after restart (daemon / harness)",
                    f"{(r3 - rk) // MIB} / {(bk - b3) // MIB}", "MiB")

            # ---- guest pressure --------------------------------------------
            captured = mem(d)["captured_bytes"]
            want = meminfo(g, "MemFree") + 128 * MIB
            g.check(f"memcheck start --mib {want // MIB} --id c --seed 8", timeout=600)
            g.check("memcheck verify --id a")
            g.check("memcheck verify --id b")
            g.check("memcheck verify --id c")
            d.wait_for(lambda: mem(d)["guest_released_bytes"] >= 64 * MIB,
                       "the daemon to see the pressure release", 60)
            m = mem(d)
            assert m["captured_bytes"] <= captured - 64 * MIB, (captured, m)
            figures("released by guest pressure", m["guest_released_bytes"] / MIB, "MiB")
            assert "guest took back" in d.text()
            g.check("memcheck stop --id c; memcheck stop --id b")
        finally:
            rc = d.close()
            (BUILD / "test-logs").mkdir(parents=True, exist_ok=True)
            (BUILD / "test-logs" / f"vmdefragd-reclaim-{kernel}.log").write_text(d.text())
        assert rc == 0, d.text()[-3000:]
        assert "dropping guest session" not in d.text(), d.text()[-3000:]
        g.check("memcheck verify --id a")
        g.check("kill $(pidof vmdefrag-agent)")


def test_cancel(agent_kernel, workdir, shmem_advise):  # noqa: F811
    qmp2 = workdir / "daemon.qmp"
    config = "[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"
    with Guest(agent_kernel, ram_mib=1024, fpr=False,
               extra_args=["-qmp", f"unix:{qmp2},server=on,wait=off"]) as g:
        g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
        g.check("vmdefrag-agent -v >/tmp/agent.log 2>&1 &")
        g.populate_backing()
        g.check("memcheck start --mib 64 --id a --seed 5", timeout=300)
        with Daemon(workdir, [("g", qmp2, g.vdf_socket)], config=config) as d:
            d.wait_reconciled("g")
            p = d.ctl("cancel", "g", check=False)
            assert p.returncode == 1
            assert one_error_line(p) == ("vmdefragctl: VM 'g': no reclaim or "
                                         "return is running")
            p = d.ctl("cancel", "nosuchvm", check=False)
            assert p.returncode == 5

            size = int(0.8 * meminfo(g, "MemFree")) // BLOCK * BLOCK
            b0 = g.backing_bytes()
            waiter = subprocess.Popen([str(VMDEFRAGCTL), "--socket", str(d.socket),
                                       "reclaim", "g", f"{size // MIB}M", "--wait"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
            try:
                d.wait_for(lambda: (op(d) or {}).get("state") == "running" and
                           op(d)["done_bytes"] > 0, "the first progress", 120)
                oid = op(d)["id"]
                # another id: refused, the operation goes on
                p = d.ctl("cancel", "g", str(oid + 1), check=False)
                assert p.returncode == 1 and f"no reclaim or return #{oid + 1}" in \
                    one_error_line(p)
                p = d.ctl("cancel", "g", str(oid), check=False)
                assert p.returncode == 0, (p.stderr, op(d))
                assert p.stderr == ""
                assert p.stdout.startswith(f"reclaim #{oid} on g: "), p.stdout
                assert "(stopped, " in p.stdout, p.stdout
                out, err = waiter.communicate(timeout=120)
            finally:
                if waiter.poll() is None:
                    waiter.kill()
                    waiter.wait()
            assert waiter.returncode == 1, (out, err)
            assert err == "vmdefragctl: reclaim stopped: cancelled (vmdefragctl cancel)\n"
            o = op(d)
            assert (o["id"], o["state"]) == (oid, "stopped"), o
            assert 0 < o["done_bytes"] < size, o

            # the request in flight completes (until then a new operation is
            # refused, which a return of more than is reclaimed probes
            # harmlessly): nothing captured is left unpunched, nothing
            # punched is left unacknowledged
            def settled():
                p = d.ctl("return", "g", "1024G", check=False)
                assert p.returncode in (1, 2), p.stderr
                if p.returncode == 1:
                    assert "still answering the last request of reclaim " \
                        f"#{oid}, which was stopped" in one_error_line(p)
                    return False
                assert "cannot return 1048576 MiB" in p.stderr
                return True
            d.wait_for(settled, "the request in flight to complete", 120)
            d.wait_for(lambda: mem(d)["pending_bytes"] == 0, "the last ACK", 30)
            m = mem(d)
            assert m["captured_bytes"] == m["reclaimed_bytes"], m
            assert m["reclaimed_bytes"] == captured_holes(g), (m, captured_holes(g))
            assert m["reclaimed_bytes"] >= o["punched_bytes"] > 0, (m, o)
            assert b0 - g.backing_bytes() >= m["reclaimed_bytes"] - 8 * MIB
            g.check("memcheck verify --id a")
            # the VM takes the next operation, and the cancelled one's
            # blocks come back like any others
            d.ctl("return", "g", "32M", "--wait")
            assert mem(d)["reclaimed_bytes"] == m["reclaimed_bytes"] - 32 * MIB
            g.check("memcheck verify --id a")

            # a VM's limit changes with a reload (SIGHUP), no restart: the
            # config file gains [vm g] max_reclaim (the --vm spec still
            # gives its sockets), then loses it again
            held = mem(d)["reclaimed_bytes"] // MIB
            for limit in (f"[vm g]\nmax_reclaim = {held + 2}M\n", ""):
                n = d.text().count("configuration reloaded from")
                (workdir / "vmdefragd.conf").write_text(config + limit)
                d.proc.send_signal(signal.SIGHUP)
                d.wait_for(lambda: d.text().count("configuration reloaded from") > n,
                           "the reload", 10)
                p = d.ctl("reclaim", "g", "4M", "--wait", check=False)
                if limit:
                    assert p.returncode == 2
                    assert one_error_line(p) == (
                        f"vmdefragctl: VM 'g': cannot reclaim 4 MiB: max_reclaim is "
                        f"{held + 2} MiB and {held} MiB are reclaimed already")
                else:
                    assert p.returncode == 0, p.stderr
            assert "needs a restart" not in d.text()
            g.check("memcheck verify --id a")
        assert "dropping guest session" not in d.text(), d.text()[-3000:]
        g.check("kill $(pidof vmdefrag-agent)")


def test_hint_backend(workdir):  # noqa: F811
    q = PausedQemu(workdir, "h", backend="anon")
    d = Daemon(workdir, [("h", q.qmp, workdir / "absent.sock")])
    try:
        d.wait_for(lambda: d.status()["h"]["backend"] == "none", "QMP attach")
        for cmd in ("reclaim", "return"):
            p = d.ctl(cmd, "h", "64M", check=False)
            assert p.returncode == 1
            assert "no reclaim backend" in one_error_line(p)
        assert d.status()["h"]["operation"] is None
    finally:
        rc = d.close()
        q.close()
    assert rc == 0, d.text()
