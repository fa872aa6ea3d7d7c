"""Automatic densification: vmdefragd keeps a VM dense by itself.

test_auto_shrink_then_grow   one real guest (512 MiB, memfd RAM, the module
                             and the agent, which reports its memory signals
                             every 2 s): the guest frees a dataset and the
                             daemon, with policy auto and nobody typing
                             reclaim, takes the memory back (the backing's
                             allocated bytes drop) within the configured
                             time; then the guest grows toward most of its
                             RAM while the policy holds that memory: it gets
                             memory back before any OOM (no OOM kill on the
                             console, the allocation succeeds), a dataset
                             held throughout keeps its checksums, and status
                             reports the returns and the policy's misses.
test_policy_switch_persists  vmdefragctl policy switches a VM's mode at run
                             time; the choice survives a daemon restart (it
                             wins over the config), a corrupt state file is
                             one warning and manual; bad input is one line
                             and a distinct exit status.  No guest needed.
test_meminfo_hostile         a fake guest on a paused QEMU: a valid
                             EVT_MEMINFO shows in status; one whose fields
                             disagree, or one sent in a version-1 session,
                             drops the session with one line saying why.
"""
import json
import re
import struct
import threading
import time

import pytest

from harness.guest import Guest, BUILD, guest_kernels
from harness.vmdefragd import Daemon, VMDEFRAGCTL  # noqa: F401
from harness.wire import HELLO, HELLO_FMT, frame
from test_daemon import FakeGuest, PausedQemu, one_error_line

MIB = 1 << 20
BLOCK = 2 * MIB
EVT_MEMINFO = 0x0023
MEMINFO_FMT = struct.Struct("<11Q4I")
F_PSI, F_MODULE = 1, 2
EXIT_USAGE, EXIT_UNKNOWN_VM = 2, 5

# the policy's settings in the test: calm 2 s, 64 MiB/s
POLICY_CONF = """[daemon]
reconnect_min_ms = 100
reconnect_max_ms = 500

[vm g]
policy = auto
policy_calm = 2
policy_reclaim_rate = 64
"""
RECLAIM_DEADLINE_S = 120	# the configured time, generous for TCG


def policy(d, vm="g"):
    return d.status(vm)[vm]["policy"]


def test_auto_shrink_then_grow(workdir, figures):
    kernel = guest_kernels()[0]
    if not (BUILD / "module" / kernel / "vmdefrag.ko").exists() or \
            not (BUILD / "agent/vmdefrag-agent").exists():
        pytest.skip("needs the agent and the module for " + kernel)
    qmp2 = workdir / "daemon.qmp"
    with Guest(kernel, ram_mib=512, fpr=False,
               extra_args=["-qmp", f"unix:{qmp2},server=on,wait=off"]) as g:
        g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
        g.check("vmdefrag-agent -v >/tmp/agent.log 2>&1 &")
        # a guest that has run a while: all its RAM backed on the host
        g.populate_backing()
        # data that must survive every reclaim and return below
        g.check("memcheck start --mib 32 --id keep --seed 21", timeout=300)
        # the guest uses memory, then frees it
        g.check("memcheck start --mib 192 --id burst --seed 22", timeout=300)
        d = Daemon(workdir, [("g", qmp2, g.vdf_socket)], config=POLICY_CONF)
        try:
            d.wait_reconciled("g")
            d.wait_for(lambda: policy(d)["signals"] is not None,
                       "the guest's memory signals", timeout=60)
            p = policy(d)
            assert p["mode"] == "auto" and p["signals"]["total_bytes"] > 400 * MIB, p
            assert p["signals"]["floor_bytes"] == 64 * MIB, p
            assert p["signals"]["wmark_high_bytes"] > 0, p

            # (a) the guest frees memory: the host takes it back unasked
            b0 = g.backing_bytes()
            t0 = time.monotonic()
            g.check("memcheck stop --id burst")
            d.wait_for(lambda: b0 - g.backing_bytes() >= 160 * MIB,
                       "the policy to take freed memory back",
                       timeout=RECLAIM_DEADLINE_S)
            took = time.monotonic() - t0
            figures("auto: 160 MiB freed in the guest back on the host", f"{took:.0f}", "s")
            st = d.status("g")["g"]
            p = st["policy"]
            assert p["reclaims"] >= 1 and p["last_action"]["action"] == "reclaim", p
            assert "headroom" in p["last_action"]["reason"], p
            assert st["memory"]["reclaimed_bytes"] >= 160 * MIB, st["memory"]
            # never below the floor: the guest keeps floor + margin free
            mi = g.meminfo()
            assert mi["MemFree"] >= 64 * MIB, mi
            # the decisions are in the log, at debug, with their reasons
            assert re.search(r"VM 'g': policy: reclaim \d+ MiB: \d+ MiB free", d.text())
            # it settles: no flapping while the guest is idle
            time.sleep(6)
            p1 = policy(d)
            time.sleep(6)
            p2 = policy(d)
            assert p2["returns"] == p1["returns"] == 0, (p1, p2)
            held = d.status("g")["g"]["memory"]["captured_bytes"]
            figures("auto: held for the host when idle", held // MIB, "MiB")

            # (b) the guest grows toward most of its RAM while the policy
            # holds `held`: it must get memory back before any OOM
            avail = g.meminfo()["MemAvailable"]
            grow = (avail + held) // MIB - 96
            assert grow * MIB > avail, (grow, avail, held)
            t0 = time.monotonic()
            g.check(f"memcheck start --mib {grow} --id grow --seed 23", timeout=600)
            figures(f"auto: guest allocated {grow} MiB ({held // MIB} MiB held)",
                    f"{time.monotonic() - t0:.0f}", "s")
            g.check("memcheck verify --id grow", timeout=300)
            g.check("memcheck verify --id keep", timeout=300)
            st = d.status("g")["g"]
            p = st["policy"]
            assert p["returns"] >= 1, p
            assert st["memory"]["returned_bytes"] > 0, st["memory"]
            # misses: the guest's own pressure releases, counted and shown
            released = st["memory"]["guest_released_bytes"]
            assert isinstance(p["policy_misses"], int), p
            assert (p["policy_misses"] > 0) == (released > 0), (p, released)
            figures("auto: returned by the policy / released by the guest",
                    f"{st['memory']['returned_bytes'] // MIB} / {released // MIB}", "MiB")
            figures("auto: policy misses", p["policy_misses"])
            human = d.ctl("status", "g").stdout
            assert "policy:          auto" in human and "last decision:" in human, human
            # what the policy did shows in the history (who asked) and metrics
            hist = json.loads(d.ctl("history", "g", "--json").stdout)["history"]
            by_policy = [e for e in hist if e["origin"] == "policy"]
            assert {e["kind"] for e in by_policy} >= {"reclaim", "return"}, hist
            assert not [e for e in hist if e["origin"] == "user"], hist
            metrics = d.ctl("metrics").stdout
            assert re.search(r'^vmdefrag_policy_auto\{vm="g"\} 1$', metrics, re.M), metrics
            assert re.search(r'^vmdefrag_policy_misses_total\{vm="g"\} %d$'
                             % p["policy_misses"], metrics, re.M), metrics
            g.check("memcheck stop --id grow")
            g.check("memcheck stop --id keep")
        finally:
            rc = d.close()
        assert rc == 0, d.text()[-3000:]
        assert "dropping guest session" not in d.text(), d.text()[-3000:]
        console = g.console_text()
        assert not re.search(r"Out of memory|oom-kill|invoked oom-killer", console), \
            console[-3000:]


def test_policy_switch_persists(workdir):
    vms = [("web1", workdir / "web1.qmp", workdir / "web1.vdf")]
    conf = "[vm web1]\npolicy = auto\n"
    state = workdir / "state" / "web1.policy"

    def mode(d):
        return d.status("web1")["web1"]["policy"]["mode"]

    with Daemon(workdir, vms, config=conf) as d:
        assert mode(d) == "auto"
        assert not state.exists()
        p = d.ctl("policy", "web1", "manual")
        assert p.stdout == "web1: policy manual\n" and p.stderr == ""
        assert mode(d) == "manual"
        assert state.read_text() == "vmdefrag-policy 1\nmode=manual\n"
        answer = json.loads(d.ctl("policy", "web1", "manual", "--json").stdout)
        assert answer == {"schema": 1, "ok": True,
                          "policy": {"vm": "web1", "mode": "manual"}}, answer
        # bad input: one line, a distinct exit status, nothing changes
        for args, code in ((("policy", "web1", "fast"), EXIT_USAGE),
                           (("policy", "web1"), EXIT_USAGE),
                           (("policy", "web1", "auto", "x"), EXIT_USAGE),
                           (("policy", "nosuch", "auto"), EXIT_UNKNOWN_VM)):
            r = d.ctl(*args, check=False)
            assert r.returncode == code, (args, r)
            one_error_line(r)
        assert mode(d) == "manual"
    # the run-time choice outlives the daemon and wins over the config
    with Daemon(workdir, vms, config=conf) as d:
        assert mode(d) == "manual"
        d.ctl("policy", "web1", "auto")
    with Daemon(workdir, vms, config=conf) as d:
        assert mode(d) == "auto"
    # a corrupt file: one warning, manual
    state.write_text("vmdefrag-policy 1\nmode=turbo\n")
    with Daemon(workdir, vms, config=conf) as d:
        assert mode(d) == "manual"
        warnings = [ln for ln in d.text().splitlines()
                    if "policy state" in ln and "invalid" in ln]
        assert len(warnings) == 1, d.text()
    # a reload that changes the config's key applies it, and keeps it
    with Daemon(workdir, vms, config="[vm web1]\npolicy = manual\n") as d:
        (workdir / "vmdefragd.conf").write_text("[vm web1]\npolicy = auto\n"
                                                "policy_weight = 300\n")
        d.proc.send_signal(1)	# SIGHUP
        d.wait_for(lambda: mode(d) == "auto", "the reload to apply policy = auto")
        assert d.status("web1")["web1"]["policy"]["weight"] == 300
        assert state.read_text() == "vmdefrag-policy 1\nmode=auto\n"


def meminfo(total=256 * MIB, free=150 * MIB, avail=180 * MIB, low=4 * MIB, high=5 * MIB,
            rate=MIB, captured=0, floor=64 * MIB, vacate_ns=0, some=150, full=20,
            flags=F_PSI | F_MODULE, interval=2000):
    return frame(EVT_MEMINFO, 0, MEMINFO_FMT.pack(
        total, free, avail, low, high, rate, captured, floor, vacate_ns,
        10000 if flags & F_PSI else 0, 100 if flags & F_PSI else 0,
        some if flags & F_PSI else 0, full if flags & F_PSI else 0, flags, interval))


def guest_hello_v(vmax):
    return frame(HELLO, 0, HELLO_FMT.pack(1, vmax, 0, 1, 4096, BLOCK, 256 * MIB))


def test_meminfo_hostile(workdir):
    q = PausedQemu(workdir, "a")
    first_seen = threading.Event()

    class V3Guest(FakeGuest):
        def handshake_v(self, conn, buf, vmax):
            type_, id_, payload = next(self.frames(conn, buf))
            assert (type_, id_) == (HELLO, 0)
            # the host offers version 3
            assert HELLO_FMT.unpack(payload)[1] == 3, payload
            conn.sendall(guest_hello_v(vmax))

    def script(conn, n):
        buf = bytearray()
        # n = 0: a good report, then hang up; 1: free above total;
        # 2: a report in a version-1 session; then a quiet guest
        g.handshake_v(conn, buf, 1 if n == 2 else 3)
        if n == 0:
            conn.sendall(meminfo())
            first_seen.wait(30)
            return
        if n == 1:
            conn.sendall(meminfo(free=300 * MIB))
        elif n == 2:
            conn.sendall(meminfo())
        g.behave(conn, buf)

    g = V3Guest(workdir / "a.vdf", script)
    conf = "[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 200\n"
    try:
        with Daemon(workdir, [("a", q.qmp, g.path)], config=conf) as d:
            d.wait_for(lambda: (d.status("a")["a"]["policy"]["signals"] or {})
                       .get("free_bytes") == 150 * MIB, "the guest's signals")
            sig = d.status("a")["a"]["policy"]["signals"]
            assert sig["psi_some_avg10_percent"] == 1.5 and sig["floor_bytes"] == 64 * MIB
            assert sig["psi_some_total_ns"] == 10000 * 1000 and sig["total_bytes"] == 256 * MIB
            assert "dropping guest session" not in d.text()
            first_seen.set()
            d.wait_for(lambda: "EVT_MEMINFO in protocol version 1" in d.text(),
                       "the version-1 report to be refused", timeout=30)
            text = d.text()
            drops = [ln for ln in text.splitlines() if "dropping guest session" in ln]
            assert len(drops) == 2, drops
            assert re.search(r"undecodable EVT_MEMINFO frame .*: Invalid argument",
                             drops[0]), drops
            assert d.alive()
    finally:
        first_seen.set()
        g.close()
        q.close()
