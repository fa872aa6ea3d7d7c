"""vmdefragd and vmdefragctl against real QEMU processes.

The daemon attaches to each VM's real QEMU monitor (layout, backing, pid
all come from QEMU) and connects to the VM's guest channel path.  In the
first three tests the channel is served by a fake guest written here
against include/vmdefrag/proto.h (a Python unix-socket server standing in
for QEMU's chardev server), so each test controls exactly what "the guest"
says; the last test uses a real guest with the real module and agent.

test_hostile_guest_isolated  VM A's guest sends a corrupt magic, an
                             oversized length, a response to no request,
                             an event with a range outside RAM and a flood;
                             each drops A's session with one log line
                             saying what was wrong, the daemon stays up,
                             and VM B's session keeps answering scans
                             during and after; a guest that swallows a
                             request is dropped after request_timeout_ms
                             and the scan fails cleanly; A reconnects and
                             recovers.
test_stopped_qemu_isolated   VM A's QEMU is SIGSTOPped and its guest names
                             memory past its RAM, which makes the daemon ask
                             that QEMU for its layout again (as after a
                             hot-plug) and wait up to the monitor timeout
                             (5 s), and VM C's QEMU is stopped before the
                             daemon starts (it accepts the QMP connection,
                             never greets, again on every retry):
                             meanwhile VM B's status and scan are answered
                             within STALL_BOUND_S each; then A's unanswered
                             question ends as a refusal would (A's session
                             drops, the range is not RAM), and C attaches
                             once it runs again.
test_stopped_incoming_qemu_isolated
                             VM A's QEMU waits for an incoming migration
                             (-incoming defer), so the daemon polls its
                             query-migrate every 500 ms; it is SIGSTOPped:
                             VM B's status and scan are still answered
                             within STALL_BOUND_S each while A's polls wait
                             (on a worker) for the monitor timeout, and A
                             is still attached and incoming once it runs.
test_status_backends         status reports each VM's RAM and backend as
                             QEMU has it: memfd -> shared (backing bytes as
                             the kernel counts them), memory-backend-ram
                             without a balloon -> "none", with the reason.
test_cli_errors              unknown VM, daemon not running, permission
                             denied, bad arguments, bad --vm size, bad
                             config line: one line each, distinct exit codes.
test_real_guest              a real guest with vmdefrag.ko and the agent:
                             scan totals close to the guest's RAM, status
                             backing bytes equal to what the harness measures.
"""
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.guest import Guest, BUILD
from harness.wire import (
    ACK_RESP_FMT, CAPTURE_REQ_FMT, EVT_CAPTURED, EVT_FMT, EVT_STATS,
    FEAT_EVENTS, FEAT_MODULE, HDR, HELLO, HELLO_FMT,
    LIST_RESP_FMT, MAGIC, RANGES_RESP_FMT, RANGE_FMT, REQ_ACK,
    REQ_CAPTURE, REQ_LIST, REQ_SCAN, RESP, SCAN_FMT,
    SLAB_FMT, STATS_FMT, STATUS_FMT, frame)
from harness import hostmem
from harness.otheruser import OtherUserDir, run_as
from harness.vmdefragd import VMDEFRAGD, VMDEFRAGCTL, Daemon, check_json_units  # noqa: F401

MIB = 1 << 20
BLOCK = 2 * MIB


EXIT_USAGE, EXIT_NO_DAEMON, EXIT_PERMISSION, EXIT_UNKNOWN_VM = 2, 3, 4, 5


def _pdeathsig():
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL, 0, 0, 0)



def guest_hello(ram=200 * MIB):
    return frame(HELLO, 0, HELLO_FMT.pack(1, 1, 0, 1, 4096, BLOCK, ram))


def scan_payload(total=200 * MIB):
    """A plausible RESP_SCAN: 100 blocks, 60 free, 30 movable, 10 unmovable."""
    classes = [0, 60, 30, 10, 0] + [0] * 11
    cost = [5, 10, 5, 5, 3, 2] + [0] * 10
    bounds = [0, 16, 64, 128, 256, 512] + [0] * 10
    unmov = [6, 2, 1, 1, 0] + [0] * 11
    body = SCAN_FMT.pack(0, 0, total, 150 * MIB, 120 * MIB, 170 * MIB, 0,
                         140 * MIB, 1234567, 5, 6, 5, 0, 2,
                         *classes, *cost, *bounds, *unmov)
    return body + SLAB_FMT.pack(b"dentry", 300, 4) + SLAB_FMT.pack(b"kmalloc-64", 40, 2)


class FakeGuest:
    """Serves a VM's channel path the way QEMU's chardev server would.

    script(conn, n) runs once per accepted connection (n counts from 0);
    the default is a well-behaved guest: HELLO, and SCAN answered.
    """

    def __init__(self, path, script=None):
        self.path = str(path)
        self.script = script or (lambda conn, n: self.behave(conn))
        self.connections = 0
        self.scans = 0
        self.stop = threading.Event()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(4)
        self.srv.settimeout(0.2)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            n = self.connections
            self.connections += 1
            try:
                conn.settimeout(0.2)
                self.script(conn, n)
            except (OSError, ConnectionError):
                pass
            finally:
                conn.close()

    def close(self):
        self.stop.set()
        self.srv.close()
        self.thread.join(timeout=5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def frames(self, conn, buf):
        """Yields (type, id, payload) from conn until it closes or we stop."""
        while not self.stop.is_set():
            while len(buf) >= HDR.size:
                magic, _, _, type_, id_, length = HDR.unpack_from(buf)
                assert magic == MAGIC, buf[:16]
                if len(buf) < HDR.size + length:
                    break
                payload = bytes(buf[HDR.size:HDR.size + length])
                del buf[:HDR.size + length]
                yield type_, id_, payload
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return
            buf += chunk

    def handshake(self, conn, buf):
        """Waits for the host's HELLO (it must come first) and answers it."""
        type_, id_, payload = next(self.frames(conn, buf))
        assert (type_, id_) == (HELLO, 0)
        conn.sendall(guest_hello())

    def behave(self, conn, buf=None):
        buf = buf if buf is not None else bytearray()
        for type_, id_, payload in self.frames(conn, buf):
            if type_ == HELLO:
                conn.sendall(guest_hello())
            elif type_ == REQ_SCAN:
                self.scans += 1
                conn.sendall(frame(RESP | REQ_SCAN, id_, scan_payload()))
            else:
                conn.sendall(frame(RESP | type_, id_, STATUS_FMT.pack(-19, 0)))

    def wait_closed(self, conn, timeout=10):
        """True once the daemon closed this connection."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not conn.recv(65536):
                    return True
            except socket.timeout:
                pass
            except ConnectionResetError:
                return True
        return False


class PausedQemu:
    """A real QEMU, paused before the guest runs, with a QMP socket; RAM in a
    memfd (backend="memfd") or anonymous (backend="anon"), plus one optional
    -device."""

    def __init__(self, workdir, name, backend="memfd", ram="256M", device=None,
                 extra=()):
        self.qmp = Path(workdir) / f"{name}.qmp"
        mem = (f"memory-backend-memfd,id=ram0,size={ram},share=on" if backend == "memfd"
               else f"memory-backend-ram,id=ram0,size={ram}")
        args = ["qemu-system-x86_64", "-S", "-nodefaults", "-no-user-config",
                "-display", "none", "-machine", "q35,accel=tcg,memory-backend=ram0",
                "-m", ram, "-object", mem,
                "-qmp", f"unix:{self.qmp},server=on,wait=off"]
        if device:
            args += ["-device", device]
        args += list(extra)
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=_pdeathsig)
        deadline = time.monotonic() + 30
        while not self.qmp.exists():
            if self.proc.poll() is not None:
                raise RuntimeError("QEMU exited: " + self.proc.stderr.read().decode())
            assert time.monotonic() < deadline, "QEMU did not create its QMP socket"
            time.sleep(0.05)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def ctl(*args, check=True, **kw):
    p = subprocess.run([str(VMDEFRAGCTL), *args], capture_output=True, text=True,
                       timeout=120, **kw)
    if check and p.returncode != 0:
        pytest.fail(f"vmdefragctl {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


@pytest.fixture(autouse=True)
def built():
    if not VMDEFRAGD.exists() or not VMDEFRAGCTL.exists():
        pytest.skip("vmdefragd/vmdefragctl not built (make daemon)")


def one_error_line(p):
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and p.stdout == "", (p.stdout, p.stderr)
    return lines[0]


# ---------------------------------------------------------------------------

def attack_bad_magic(conn, guest):
    conn.sendall(b"\xde\xad\xbe\xef" + b"\0" * 12)


def attack_oversized(conn, guest):
    buf = bytearray()
    guest.handshake(conn, buf)
    conn.sendall(HDR.pack(MAGIC, 1, 0, EVT_STATS, 0, 1 << 20))


def attack_bogus_id(conn, guest):
    buf = bytearray()
    guest.handshake(conn, buf)
    conn.sendall(frame(RESP | REQ_SCAN, 999, STATUS_FMT.pack(-5, 0)))


def attack_range_outside_ram(conn, guest):
    buf = bytearray()
    guest.handshake(conn, buf)
    # aligned and well-formed for the codec, but 64 GiB is not this VM's RAM
    conn.sendall(frame(EVT_CAPTURED, 0, EVT_FMT.pack(0, 1) + RANGE_FMT.pack(64 << 30, BLOCK)))


def attack_flood(conn, guest):
    buf = bytearray()
    guest.handshake(conn, buf)
    one = frame(EVT_STATS, 0, STATS_FMT.pack(*[0] * 13))
    try:
        for _ in range(20):
            conn.sendall(one * 500)
    except OSError:
        pass


ATTACKS = [
    (attack_bad_magic, "corrupt frame header: bad magic"),
    (attack_oversized, "corrupt frame header: length above 64 KiB"),
    (attack_bogus_id, "RESP_SCAN id 999 matches no outstanding request"),
    (attack_range_outside_ram,
     "EVT_CAPTURED range 0 [0x1000000000, +0x200000) is not guest RAM"),
    (attack_flood, "more than 50 events in one second"),
]

CONFIG = """\
# test configuration: quick reconnects, a low event rate limit for VM A
[daemon]
reconnect_min_ms = 100
reconnect_max_ms = 400

[vm A]
events_per_sec = 50
frames_per_sec = 5000
request_timeout_ms = 1000
"""


def test_hostile_guest_isolated(workdir, figures):
    qa = PausedQemu(workdir, "a")
    qb = PausedQemu(workdir, "b")
    attacked = threading.Event()
    silent = threading.Event()

    def evil(conn, n):
        if n < len(ATTACKS):
            ATTACKS[n][0](conn, guest_a)
            guest_a.wait_closed(conn)
            if n == len(ATTACKS) - 1:
                attacked.set()
        elif n == len(ATTACKS):
            # says HELLO, then never answers a request
            guest_a.handshake(conn, bytearray())
            silent.set()
            guest_a.wait_closed(conn, timeout=30)
        else:
            guest_a.behave(conn)         # reformed: a normal session again

    guest_a = FakeGuest(workdir / "a.vdf", evil)
    guest_b = FakeGuest(workdir / "b.vdf")
    d = Daemon(workdir, [("A", qa.qmp, workdir / "a.vdf"),
                         ("B", qb.qmp, workdir / "b.vdf")], config=CONFIG)
    try:
        d.wait_for(lambda: d.status()["B"]["session"]["state"] == "ready", "B ready")
        scans_during = 0
        while not attacked.is_set():
            p = d.ctl("scan", "B", "--json")
            scan = json.loads(p.stdout)["scan"]
            assert scan["total_bytes"] == 200 * MIB
            scans_during += 1
            assert d.alive()
            time.sleep(0.05)
        figures("scans of B answered during A's attacks", scans_during)
        assert scans_during >= 3

        # a guest that swallows a request: the scan fails, the session drops
        assert silent.wait(20)
        d.wait_for(lambda: d.status()["A"]["session"]["state"] == "ready", "A silent")
        t0 = time.monotonic()
        p = d.ctl("scan", "A", check=False)
        assert p.returncode == 1 and one_error_line(p) == \
            "vmdefragctl: VM 'A': guest session dropped before the scan was answered"
        assert 0.9 < time.monotonic() - t0 < 10
        assert "VM 'A': dropping guest session: no answer to REQ_SCAN id 1 " \
               "within 1000 ms" in d.text()

        # every attack: one warning naming what was wrong
        d.wait_for(lambda: guest_a.connections > len(ATTACKS) + 1, "A to reconnect")
        log = d.text()
        drops = [l for l in log.splitlines() if "VM 'A': dropping guest session" in l]
        for _, reason in ATTACKS:
            assert sum(reason in l for l in drops) == 1, (reason, drops)
        assert len(drops) == len(ATTACKS) + 1, drops
        assert "VM 'B': dropping" not in log

        # B unaffected; A recovered after its backoff and answers too
        st = d.status()
        assert st["B"]["session"]["state"] == "ready"
        assert st["B"]["session"]["drops"] == 0
        assert st["A"]["session"]["drops"] == len(ATTACKS) + 1
        assert st["A"]["session"]["last_drop"] == \
            "no answer to REQ_SCAN id 1 within 1000 ms"
        d.wait_for(lambda: d.status()["A"]["session"]["state"] == "ready", "A ready")
        assert json.loads(d.ctl("scan", "A", "--json").stdout)["scan"]["vm"] == "A"
        human = d.ctl("scan", "B").stdout
        assert "unmovable" in human and '"dentry"' in human and "movable" in human
        assert guest_b.connections == 1
        assert d.alive()
    finally:
        rc = d.close()
        guest_a.close()
        guest_b.close()
        qa.close()
        qb.close()
    assert rc == 0, d.text()[-3000:]


STALL_BOUND_S = 1.0      # a healthy VM's request while another VM's QEMU hangs
QMP_TIMEOUT_S = 5        # QMP_DEFAULT_TIMEOUT_MS


def time_healthy_b(sock, seconds, each_turn):
    """Times VM B's status + scan, on one control connection held open (as
    a monitoring agent would: the round trip is the daemon's, not a process
    start's), every 50 ms for `seconds`; each answer must say B's session
    is ready and its scan whole; each_turn(conn) checks more per turn.
    Returns the latencies (s)."""
    c = CtlConn(sock)
    lat = []
    t_end = time.monotonic() + seconds
    try:
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            st = c.ask(cmd="status", vm="B")
            scan = c.ask(cmd="scan", vm="B")
            lat.append(time.monotonic() - t0)
            assert st["ok"] and st["vms"][0]["session"]["state"] == "ready", st
            assert scan["ok"] and scan["scan"]["total_bytes"] == 200 * MIB, scan
            each_turn(c)
            time.sleep(0.05)
    finally:
        c.close()
    return lat

CONFIG_STOPPED = """\
[daemon]
reconnect_min_ms = 100
reconnect_max_ms = 400
"""


def test_stopped_qemu_isolated(workdir, figures):
    qa = PausedQemu(workdir, "a")
    qb = PausedQemu(workdir, "b")
    qc = PausedQemu(workdir, "c")
    os.kill(qc.proc.pid, signal.SIGSTOP)
    go, sent = threading.Event(), threading.Event()

    def script_a(conn, n):
        buf = bytearray()
        if n:
            guest_a.behave(conn, buf)
            return
        guest_a.handshake(conn, buf)
        assert go.wait(60)
        # well-formed, and past this VM's RAM: hot-plugged memory, or a lie
        conn.sendall(frame(EVT_CAPTURED, 0, EVT_FMT.pack(0, 1) +
                           RANGE_FMT.pack(64 << 30, BLOCK)))
        sent.set()
        guest_a.wait_closed(conn, timeout=60)

    guest_a = FakeGuest(workdir / "a.vdf", script_a)
    guest_b = FakeGuest(workdir / "b.vdf")
    d = Daemon(workdir, [("A", qa.qmp, workdir / "a.vdf"),
                         ("B", qb.qmp, workdir / "b.vdf"),
                         ("C", qc.qmp, workdir / "c.vdf")], config=CONFIG_STOPPED)
    drop = ("VM 'A': dropping guest session: EVT_CAPTURED range 0 "
            "[0x1000000000, +0x200000) is not guest RAM")
    stopped = False
    try:
        d.wait_for(lambda: all(d.status()[v]["session"]["state"] == "ready"
                               for v in "AB"), "A's and B's sessions ready")
        # the daemon asks a QEMU for its layout at most once a second
        # (VM_LAYOUT_REFRESH_MS), counted from the attach
        time.sleep(1.2)
        os.kill(qa.proc.pid, signal.SIGSTOP)
        stopped = True
        t_sent = time.monotonic()
        go.set()
        assert sent.wait(10)
        pending = 0

        def c_down_a_pending(c):
            nonlocal pending
            assert not c.ask(cmd="status", vm="C")["vms"][0]["qmp"]["connected"]
            # A's question is still unanswered: its verdict has not come
            if drop not in d.text():
                pending += 1

        lat = time_healthy_b(d.socket, t_sent + QMP_TIMEOUT_S - 1.5 - time.monotonic(),
                             c_down_a_pending)
        figures("VM B: slowest status + scan while VM A's QEMU was stopped (ms)",
                round(max(lat) * 1000))
        assert max(lat) < STALL_BOUND_S, lat
        assert pending >= 3, (pending, lat)
        # QEMU never answered: the range is refused as if it had said no
        d.wait_for(lambda: drop in d.text(), "A's verdict", timeout=30)
        assert time.monotonic() - t_sent >= QMP_TIMEOUT_S - 0.5
        assert "VM 'A': cannot discover the RAM layout again" in d.text()
        assert "VM 'B': dropping" not in d.text()
        os.kill(qa.proc.pid, signal.SIGCONT)
        stopped = False
        # A recovers: a new session, its monitor still attached
        d.wait_for(lambda: guest_a.connections >= 2 and
                   d.status("A")["A"]["session"]["state"] == "ready", "A back")
        st = d.status()
        assert st["A"]["qmp"]["connected"] and st["B"]["qmp"]["connected"]
        assert st["B"]["session"]["drops"] == 0
        # C's QEMU runs again: the next attempt attaches
        os.kill(qc.proc.pid, signal.SIGCONT)
        d.wait_for(lambda: d.status("C")["C"]["qmp"]["connected"], "C attached")
        assert d.status("C")["C"]["qmp"]["pid"] == qc.proc.pid
        assert d.alive()
    finally:
        if stopped:
            os.kill(qa.proc.pid, signal.SIGCONT)
        os.kill(qc.proc.pid, signal.SIGCONT)
        rc = d.close()
        guest_a.close()
        guest_b.close()
        qa.close()
        qb.close()
        qc.close()
    assert rc == 0, d.text()[-3000:]


def test_stopped_incoming_qemu_isolated(workdir, figures):
    # -incoming defer: QEMU waits for a migration that never comes, and the
    # daemon polls its query-migrate as long as it does (migration.c)
    qa = PausedQemu(workdir, "a", extra=["-incoming", "defer"])
    qb = PausedQemu(workdir, "b")
    guest_b = FakeGuest(workdir / "b.vdf")
    d = Daemon(workdir, [("A", qa.qmp, workdir / "a.vdf"),
                         ("B", qb.qmp, workdir / "b.vdf")], config=CONFIG_STOPPED)
    stopped = False
    try:
        d.wait_for(lambda: d.status("B")["B"]["session"]["state"] == "ready" and
                   d.status("A")["A"]["migration"]["state"] == "incoming",
                   "B's session ready, A incoming")
        assert d.status("A")["A"]["qmp"]["connected"]
        os.kill(qa.proc.pid, signal.SIGSTOP)
        stopped = True
        t_stop = time.monotonic()

        def a_incoming(c):
            a = c.ask(cmd="status", vm="A")["vms"][0]
            assert a["migration"]["state"] == "incoming", a["migration"]

        # several polls (MIGRATION_POLL_MS) come due meanwhile; the first
        # waits for the whole monitor timeout
        lat = time_healthy_b(d.socket, t_stop + QMP_TIMEOUT_S + 1 - time.monotonic(),
                             a_incoming)
        figures("VM B: slowest status + scan while incoming VM A's QEMU was "
                "stopped (ms)", round(max(lat) * 1000))
        assert max(lat) < STALL_BOUND_S, lat
        os.kill(qa.proc.pid, signal.SIGCONT)
        stopped = False
        # QEMU answers the late poll; A stays attached and incoming, and its
        # polls go on (a poll's reply after the timeout is dropped by id)
        t_cont = time.monotonic()
        while time.monotonic() - t_cont < 1.5:
            a = d.status("A")["A"]
            assert a["qmp"]["connected"] and a["migration"]["state"] == "incoming", a
            time.sleep(0.1)
        assert "VM 'A': QMP connection lost" not in d.text()
        assert d.status("B")["B"]["session"]["drops"] == 0
        assert d.alive()
    finally:
        if stopped:
            os.kill(qa.proc.pid, signal.SIGCONT)
        rc = d.close()
        guest_b.close()
        qa.close()
        qb.close()
    assert rc == 0, d.text()[-3000:]


def test_status_backends(workdir):
    qm = PausedQemu(workdir, "m", backend="memfd", ram="256M")
    qr = PausedQemu(workdir, "r", backend="ram", ram="384M")
    guest = FakeGuest(workdir / "m.vdf")
    d = Daemon(workdir, [("mem", qm.qmp, workdir / "m.vdf"),
                         ("anon", qr.qmp, workdir / "r.vdf")])
    try:
        d.wait_for(lambda: d.status()["mem"]["session"]["state"] == "ready", "session")
        st = d.status()
        m, r = st["mem"], st["anon"]
        assert m["qmp"]["connected"] and m["qmp"]["pid"] == qm.proc.pid
        assert m["backend"] == "shared" and m["ram_bytes"] == 256 * MIB
        assert m["backing_bytes"] == hostmem.backing_bytes(qm.proc.pid, 256 * MIB)
        assert m["session"]["version"] == 1 and "events" in m["session"]["features"]
        assert m["guest"] is None                  # no SCAN yet
        assert r["backend"] == "none" and r["ram_bytes"] == 384 * MIB
        assert "anonymous" in r["backend_note"] and r["backing_bytes"] is None
        assert r["session"]["state"] == "down"     # nobody serves its channel
        assert not r["reback_huge"]
        shmem = Path("/sys/kernel/mm/transparent_hugepage/shmem_enabled").read_text()
        assert f"[{m['shmem_enabled']}]" in shmem
        assert m["reback_huge"] == (m["shmem_enabled"] in ("always", "within_size",
                                                            "advise", "force"))
        # after a scan, status carries the guest's figures
        d.ctl("scan", "mem")
        g = d.status("mem")["mem"]["guest"]
        assert g["free_bytes"] == 150 * MIB and g["free_block_bytes"] == 120 * MIB
        assert g["unmovable_blocks"] == 10 and g["captured_bytes"] == 0

        human = d.ctl("status").stdout
        assert re.search(r"^anon\n(.*\n)*  backend: +none, reclaim impossible \(", human,
                         re.M)
        assert re.search(r"^mem\n(.*\n)*  backend: +shared\n  ram: +256 MiB", human, re.M)
        assert "384 MiB" in human
    finally:
        d.close()
        guest.close()
        qm.close()
        qr.close()


def test_cli_errors(workdir):
    missing = workdir / "nothing.sock"
    p = ctl("--socket", str(missing), "status", check=False)
    assert p.returncode == EXIT_NO_DAEMON
    assert "vmdefragd is not running" in one_error_line(p)

    for args in (["frobnicate"], [], ["scan"], ["scan", "a", "b"], ["status", "--bogus"],
                 ["--socket"]):
        p = ctl("--socket", str(missing), *args, check=False) if args != ["--socket"] \
            else ctl(*args, check=False)
        assert p.returncode == EXIT_USAGE, (args, p.stderr)
        one_error_line(p)

    # the daemon refuses bad input with one line naming what is wrong
    bad = [
        (["--vm", "A,qmp=/q,channel=/c,floor=3M"],
         "--vm 'A,qmp=/q,channel=/c,floor=3M': size '3M' is not a multiple of 2 MiB"),
        (["--vm", "A,qmp=/q,channel=/c,floor=12X"], "'12X' is not a size"),
        (["--vm", "A,qmp=/q"], "VM 'A': no channel=PATH given"),
        ([], "no VM given"),
        (["--log-level", "loud", "--vm", "A,qmp=/q,channel=/c"], "--log-level 'loud'"),
        (["--frobnicate"], "unknown option '--frobnicate'"),
    ]
    for args, msg in bad:
        p = subprocess.run([str(VMDEFRAGD), "--foreground", "--socket",
                            str(workdir / "x.sock"), *args], capture_output=True,
                           text=True, timeout=10)
        assert p.returncode == EXIT_USAGE, (args, p.stderr)
        line = one_error_line(p)
        assert msg in line, (msg, line)
    cfg = workdir / "bad.conf"
    cfg.write_text("[daemon]\nlog_level = info\n\n[vm A]\nqmp = /q\nfloor = 1M\n")
    p = subprocess.run([str(VMDEFRAGD), "--foreground", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == EXIT_USAGE
    assert one_error_line(p) == \
        f"vmdefragd: {cfg}:6: size '1M' is not a multiple of 2 MiB"

    # a running daemon: unknown VM, guest not ready, permission denied.  Its
    # socket and the vmdefragctl uid 65534 runs are where that user can
    # reach them, wherever the checkout is: what refuses it is the socket.
    q = PausedQemu(workdir, "q")
    try:
        with OtherUserDir() as od, \
                Daemon(od.path, [("A", q.qmp, workdir / "nobody.vdf")]) as d:
            p = d.ctl("scan", "nosuchvm", check=False)
            assert p.returncode == EXIT_UNKNOWN_VM
            assert one_error_line(p) == "vmdefragctl: no VM named 'nosuchvm'"
            p = d.ctl("status", "nosuchvm", check=False)
            assert p.returncode == EXIT_UNKNOWN_VM
            p = d.ctl("scan", "A", check=False)
            assert p.returncode == 6 and "not ready" in one_error_line(p)
            assert oct(os.stat(d.socket).st_mode & 0o777) == "0o660"
            p = run_as([od.copy(VMDEFRAGCTL), "--socket", d.socket, "status"])
            assert p.returncode == EXIT_PERMISSION
            assert "permission denied" in one_error_line(p)
            assert "refused client" not in d.text()     # the socket's mode did it
            # a second daemon on the same socket refuses to start
            p = subprocess.run([str(VMDEFRAGD), "--foreground", "--socket", str(d.socket),
                                "--vm", f"A,qmp={q.qmp},channel=/x"], capture_output=True,
                               text=True, timeout=10)
            assert p.returncode == 1 and "another vmdefragd" in p.stderr
            assert d.alive()
    finally:
        q.close()


def test_real_guest(kernel, workdir, figures):
    agent = BUILD / "agent/vmdefrag-agent"
    module = BUILD / "module" / kernel / "vmdefrag.ko"
    if not agent.exists() or not module.exists():
        pytest.skip("needs build/agent/vmdefrag-agent and the module for " + kernel)
    qmp2 = workdir / "daemon.qmp"
    with Guest(kernel, ram_mib=512,
               extra_args=["-qmp", f"unix:{qmp2},server=on,wait=off"]) as g:
        status, out = g.run("insmod /lib/modules/vmdefrag.ko")
        if status != 0:
            pytest.skip(f"vmdefrag.ko does not load in {kernel}: {out.strip()}")
        g.check("vmdefrag-agent >/tmp/agent.log 2>&1 &")
        d = Daemon(workdir, [("g", qmp2, g.vdf_socket)])
        try:
            d.wait_for(lambda: "module" in d.status()["g"]["session"]["features"],
                       "the agent's HELLO with the module", timeout=60)
            answer = json.loads(d.ctl("scan", "g", "--json").stdout)
            check_json_units(answer)
            scan = answer["scan"]
            ram = g.ram_bytes
            assert 0.8 * ram < scan["total_bytes"] <= ram, scan
            assert 0 < scan["free_bytes"] < scan["total_bytes"]
            blocks = sum(c["blocks"] for c in scan["classes"])
            assert blocks * BLOCK >= 0.8 * scan["total_bytes"]
            assert blocks * BLOCK <= ram
            figures("guest free in whole 2 MiB blocks", scan["free_block_bytes"] / MIB, "MiB")

            st = d.status("g")["g"]
            measured = g.backing_bytes()
            assert st["backend"] == "shared" and st["ram_bytes"] == ram
            assert abs(st["backing_bytes"] - measured) <= 4 * MIB, (st, measured)
            assert st["huge_mapped_bytes"] is not None
            assert st["guest"]["free_bytes"] == scan["free_bytes"]
            figures("host backing bytes (daemon / harness)",
                    f"{st['backing_bytes'] // MIB} / {measured // MIB}", "MiB")
            human = d.ctl("scan", "g").stdout
            assert "block classes:" in human and "unmovable blocks by cause:" in human
        finally:
            rc = d.close()
        assert rc == 0, d.text()[-3000:]
        assert "dropping guest session" not in d.text()
        g.check("kill $(pidof vmdefrag-agent)")


# ---------------------------------------------------------------------------
# A hostile answer to CAPTURE: the reply that decides what the host punches.

FEAT_EVENTS_MODULE = FEAT_EVENTS | FEAT_MODULE


def capture_answer(ranges, reported_bytes=None):
    body = b"".join(RANGE_FMT.pack(a, n) for a, n in ranges)
    total = sum(n for _, n in ranges) if reported_bytes is None else reported_bytes
    return RANGES_RESP_FMT.pack(0, 0, total, len(ranges), 0) + body


def capturing_guest(path, ram_bytes, on_capture):
    """A FakeGuest at path: a module guest of ram_bytes that answers HELLO,
    LIST (nothing captured), ACK and SCAN honestly and every REQ_CAPTURE
    with on_capture(payload) (the RESP_CAPTURE payload to send)."""
    def script(conn, n):
        buf = bytearray()
        for type_, id_, payload in fake.frames(conn, buf):
            if type_ == HELLO:
                conn.sendall(frame(HELLO, 0, HELLO_FMT.pack(1, 1, 0, FEAT_EVENTS_MODULE,
                                                             4096, BLOCK, ram_bytes)))
            elif type_ == REQ_LIST:
                conn.sendall(frame(RESP | REQ_LIST, id_, LIST_RESP_FMT.pack(0, 0)))
            elif type_ == REQ_ACK:
                conn.sendall(frame(RESP | REQ_ACK, id_, ACK_RESP_FMT.pack(0, 0, 0)))
            elif type_ == REQ_CAPTURE:
                conn.sendall(frame(RESP | REQ_CAPTURE, id_, on_capture(payload)))
            elif type_ == REQ_SCAN:
                conn.sendall(frame(RESP | REQ_SCAN, id_, scan_payload(ram_bytes)))
            else:
                conn.sendall(frame(RESP | type_, id_, STATUS_FMT.pack(-19, 0)))

    fake = FakeGuest(path, script)
    return fake


# (name, the guest's answer given the preferred ranges, expected drop reason)
HOSTILE_CAPTURES = [
    ("not asked for", lambda pref: capture_answer([(128 * MIB, BLOCK)]),
     "not asked for"),
    ("outside RAM", lambda pref: capture_answer([(64 << 30, BLOCK)]),
     "not guest RAM"),
    ("bytes do not add up", lambda pref: capture_answer([pref[0]], 64 * MIB),
     None),
    ("same block twice", lambda pref: capture_answer([pref[0], pref[0]]), None),
]


@pytest.mark.parametrize("case", HOSTILE_CAPTURES, ids=[c[0] for c in HOSTILE_CAPTURES])
def test_hostile_capture_answer_punches_nothing(workdir, case):
    """A guest lying in its CAPTURE answer loses its session; no byte of the
    backing is punched and the data in it is intact.  The control run (an
    honest answer) proves the same setup does punch what it is told."""
    name, answer, reason = case
    q = PausedQemu(workdir, "h")
    asked = []

    def on_capture(payload):
        nr = CAPTURE_REQ_FMT.unpack_from(payload)[4]
        pref = [RANGE_FMT.unpack_from(payload, CAPTURE_REQ_FMT.size + 16 * i)
                for i in range(nr)]
        asked.append(pref)
        # the hostile answer; in the control run an honest one: the first block
        return answer(pref) if not control else capture_answer([(pref[0][0], BLOCK)])

    guest_h = capturing_guest(workdir / "h.vdf", 256 * MIB, on_capture)
    d = Daemon(workdir, [("h", q.qmp, workdir / "h.vdf")],
               config="[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 400\n")
    try:
        d.wait_for(lambda: d.status("h")["h"]["session"]["state"] == "ready", "ready")
        d.wait_reconciled("h", timeout=60, what="reconciled")
        fd_path = hostmem.ram_backing_fds(q.proc.pid, 256 * MIB)[0][0]
        data = bytes(range(256)) * (16 * MIB // 256)
        fd = os.open(fd_path, os.O_RDWR)
        try:
            os.pwrite(fd, data, 0)                    # 16 MiB of guest data
            before = os.fstat(fd).st_blocks * 512

            control = False
            p = d.ctl("reclaim", "h", "4M", "--wait", check=False)
            assert p.returncode != 0, "a hostile answer was accepted: " + p.stdout
            # it asked only for blocks that hold data (block 0 is not wholly
            # RAM: the ROM overlay sits in its first MiB)
            assert asked and all(a + n <= len(data) for a, n in asked[0]), asked
            assert os.fstat(fd).st_blocks * 512 == before, "the backing was punched"
            assert os.pread(fd, len(data), 0) == data, "guest data changed"
            d.wait_for(lambda: "dropping guest session" in d.text(), "the drop")
            drop = [ln for ln in d.text().splitlines() if "dropping guest session" in ln]
            if reason:
                assert reason in drop[-1], drop[-1]
            assert d.alive()

            # control: the same guest, honest now, gets its block punched
            control = True
            d.wait_for(lambda: d.status("h")["h"]["session"]["state"] == "ready",
                       "ready again")
            d.wait_reconciled("h", timeout=60, what="reconciled again")
            d.ctl("reclaim", "h", "2M", "--wait")
            punched = asked[-1][0][0]
            assert os.fstat(fd).st_blocks * 512 == before - BLOCK
            assert os.pread(fd, BLOCK, punched) == bytes(BLOCK)
            rest = data[:punched] + bytes(BLOCK) + data[punched + BLOCK:]
            assert os.pread(fd, len(data), 0) == rest, "data outside the block changed"
        finally:
            os.close(fd)
    finally:
        rc = d.close()
        guest_h.close()
        q.close()
    assert rc == 0, d.text()[-3000:]


# ---- control socket access: read group, per-uid cap, idle timeout --------

ADMIN_GROUP = 65534         # socket_group (nogroup on Debian; only the number matters)
READ_GROUP = 54320          # socket_read_group
OTHER_GROUP = 54321         # neither


class CtlConn:
    """One raw control connection (what vmdefragctl does, held open)."""

    def __init__(self, path, timeout=10):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(str(path))
        self.buf = b""

    def line(self):
        """The next line as JSON; None once the daemon closed."""
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                assert not self.buf, self.buf
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def ask(self, **req):
        self.s.sendall((json.dumps(req) + "\n").encode())
        return self.line()

    def close(self):
        self.s.close()


def access_config(**keys):
    return "[daemon]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


def test_socket_read_group(workdir):
    """socket_read_group may read (status) but not act (reclaim, cancel):
    one "permission" line, exit 4; socket_group may do both; anyone else
    is refused at connect."""
    config = access_config(socket_group=ADMIN_GROUP, socket_read_group=READ_GROUP,
                           socket_mode="0666")
    vm = f"vm,qmp={workdir}/absent-qmp.sock,channel={workdir}/absent-vdf.sock"
    with OtherUserDir() as od, \
            Daemon(od.path, [], config=config, extra=["--vm", vm]) as d:
        ctl_copy = od.copy(VMDEFRAGCTL)

        def as_user(gid, *args, groups=()):
            return run_as([ctl_copy, "--socket", d.socket, *args], gid=gid,
                          groups=list(groups), timeout=20)

        for gid, groups in ((READ_GROUP, ()), (OTHER_GROUP, (READ_GROUP,))):
            p = as_user(gid, "status", groups=groups)
            assert p.returncode == 0, p.stderr
            assert "vm" in p.stdout
            for args in (("reclaim", "vm", "2M"), ("cancel", "vm")):
                p = as_user(gid, *args, groups=groups)
                assert p.returncode == EXIT_PERMISSION, (args, p.returncode, p.stderr)
                assert one_error_line(p) == (
                    "vmdefragctl: permission denied: this command needs root or "
                    "the daemon's socket group; socket_read_group may only read")
        # the admin group passes the check: what stops it is the VM
        p = as_user(ADMIN_GROUP, "reclaim", "vm", "2M")
        assert p.returncode not in (0, EXIT_PERMISSION), (p.returncode, p.stderr)
        assert "permission" not in p.stderr, p.stderr
        p = as_user(OTHER_GROUP, "status", groups=(OTHER_GROUP + 1,))
        assert p.returncode == EXIT_PERMISSION, (p.returncode, p.stderr)
        assert "permission denied" in one_error_line(p)
        assert d.alive()


def test_socket_clients_per_uid(workdir):
    """A uid at socket_clients_per_uid is refused with one "busy" line while
    another uid still gets in; a slot it frees is its again."""
    config = access_config(socket_group=ADMIN_GROUP, socket_mode="0666",
                           socket_clients_per_uid=2)
    vm = f"vm,qmp={workdir}/absent-qmp.sock,channel={workdir}/absent-vdf.sock"
    with OtherUserDir() as od, \
            Daemon(od.path, [], config=config, extra=["--vm", vm]) as d:
        held = [CtlConn(d.socket) for _ in range(2)]
        try:
            for c in held:          # answered: the daemon counts them
                assert c.ask(cmd="status")["ok"] is True
            extra = CtlConn(d.socket)
            assert extra.line() == {
                "ok": False, "error": "busy", "schema": 1,
                "message": "too many connections from uid 0 "
                           "(socket_clients_per_uid = 2)"}
            assert extra.line() is None         # and closed
            extra.close()
            p = d.ctl("status", check=False)
            assert p.returncode == 1, (p.returncode, p.stderr)
            assert one_error_line(p) == ("vmdefragctl: too many connections from "
                                         "uid 0 (socket_clients_per_uid = 2)")
            other = run_as([od.copy(VMDEFRAGCTL), "--socket", d.socket, "status"],
                           gid=ADMIN_GROUP, timeout=20)
            assert other.returncode == 0, other.stderr
            assert "refusing another (socket_clients_per_uid)" in d.text()
            held.pop().close()
            d.wait_for(lambda: d.ctl("status", check=False).returncode == 0,
                       "the freed slot")
        finally:
            for c in held:
                c.close()
        assert d.alive()


def test_socket_idle_timeout(workdir):
    """A client that sends nothing for socket_idle_timeout_ms gets one line
    and is closed, after its last answer too; one WAITING on a guest's slow
    scan answer is not idle and gets the answer."""
    idle_ms, slow_s = 1000, 2.5
    qa = PausedQemu(workdir, "a")

    def slow(conn, n):
        buf = bytearray()
        guest.handshake(conn, buf)
        for type_, id_, _ in guest.frames(conn, buf):
            if type_ == REQ_SCAN:
                time.sleep(slow_s)
                conn.sendall(frame(RESP | REQ_SCAN, id_, scan_payload()))

    guest = FakeGuest(workdir / "a.vdf", slow)
    config = access_config(socket_idle_timeout_ms=idle_ms) + \
        "[vm A]\nrequest_timeout_ms = 10000\n"
    d = Daemon(workdir, [("A", qa.qmp, workdir / "a.vdf")], config=config)
    conns = []
    try:
        d.wait_for(lambda: d.status()["A"]["session"]["state"] == "ready", "A ready")
        want = {"ok": False, "error": "busy", "schema": 1,
                "message": f"closed: idle for {idle_ms} ms (socket_idle_timeout_ms)"}
        # silent from the start
        c = CtlConn(d.socket)
        conns.append(c)
        t0 = time.monotonic()
        assert c.line() == want
        assert c.line() is None
        assert 0.9 < time.monotonic() - t0 < 6, time.monotonic() - t0
        # silent after an answer: the clock starts again at the answer
        c = CtlConn(d.socket)
        conns.append(c)
        time.sleep(0.6)
        assert c.ask(cmd="status")["ok"] is True
        t0 = time.monotonic()
        assert c.line() == want
        assert 0.9 < time.monotonic() - t0 < 6, time.monotonic() - t0
        # waiting on the guest longer than the timeout is not idle
        c = CtlConn(d.socket)
        conns.append(c)
        t0 = time.monotonic()
        r = c.ask(cmd="scan", vm="A")
        assert r["ok"] is True and r["scan"]["vm"] == "A", r
        assert time.monotonic() - t0 >= slow_s - 0.1
        assert c.line() == want
        assert d.text().count(f"idle for {idle_ms} ms") == 3, d.text()[-2000:]
        assert d.alive()
    finally:
        for c in conns:
            c.close()
        rc = d.close()
        guest.close()
        qa.close()
    assert rc == 0, d.text()[-3000:]
