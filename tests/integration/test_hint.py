"""vmdefragd's hint backend: anonymous guest RAM, virtio-balloon free page
reporting, the guest module compacting 2 MiB blocks.

Every figure that says what came back is read by the test itself from
QEMU's /proc/PID/status (RssAnon), never taken from the daemon; the
daemon's figures are checked against it.

test_hint_backend_choice  paused QEMUs with anonymous RAM (no guest runs),
    one per row of BALLOONS: no balloon, a balloon with
    free-page-reporting=off (with and without an id), one with it on.
    status names the backend ("none" or "hint") and says why in words;
    reclaim on "none" and return on "hint" are refused with one line and
    exit status 1 (CTL_ERR_UNSUPPORTED), and start no operation.
test_hint_reclaim  one 768 MiB guest per kernel, free page reporting on,
    the module and agent in it, a memcheck dataset, then anonymous memory
    touched and freed at random (fragment --anon): `vmdefragctl reclaim g
    SIZE --wait` makes QEMU's RssAnon fall by at least half of SIZE, beyond
    what reporting had already done; the operation reports that measured
    drop (and what the guest compacted beside it), status counts it in
    hint_returned_bytes; return is refused; memcheck stays intact.
test_hint_hostile_guest  a paused anonymous-RAM QEMU with reporting on and
    a fake guest on its channel that answers the compact-mode CAPTURE with
    a lie: ranges outside RAM or not adding up drop its session (the
    daemon lives on, the operation fails); a well-formed claim of blocks it
    never freed is reported as what it is, a claim: the operation returns
    the measured RssAnon drop (nothing), not the guest's figure.
"""
import json
import time

import pytest

from harness import hostmem
from harness.guest import Guest, BUILD
from harness.vmdefragd import Daemon
from harness.wire import CAPTURE_REQ_FMT
from test_daemon import PausedQemu, capture_answer, capturing_guest, one_error_line

MIB = 1 << 20
BLOCK = 2 * MIB

# (id, -device argument or None, expected backend, words the note must hold)
BALLOONS = [
    ("no-balloon", None, "none", ["anonymous", "no virtio-balloon",
                                  "free-page-reporting=on"]),
    ("fpr-off", "virtio-balloon-pci,free-page-reporting=off", "none",
     ["anonymous", "free-page-reporting=off", "/machine/peripheral-anon/"]),
    ("fpr-off-id", "virtio-balloon-pci,id=bal,free-page-reporting=off", "none",
     ["free-page-reporting=off", "/machine/peripheral/bal"]),
    ("fpr-on", "virtio-balloon-pci,id=bal,free-page-reporting=on", "hint",
     ["anonymous", "free-page-reporting=on", "/machine/peripheral/bal"]),
]


@pytest.mark.parametrize("case", BALLOONS, ids=[b[0] for b in BALLOONS])
def test_hint_backend_choice(workdir, case):
    name, device, backend, words = case
    q = PausedQemu(workdir, "h", backend="anon", device=device)
    d = Daemon(workdir, [("h", q.qmp, workdir / "absent.sock")])
    try:
        d.wait_for(lambda: d.status()["h"]["qmp"]["connected"], "QMP attach")
        st = d.status()["h"]
        assert st["backend"] == backend, st
        for w in words:
            assert w in st["backend_note"], (w, st["backend_note"])
        # QEMU's own RssAnon, as the test reads it (it is paused: steady)
        assert abs(st["rss_anon_bytes"] - hostmem.rss(q.proc.pid)["RssAnon"]) < 4 * MIB
        human = d.ctl("status", "h").stdout
        if backend == "none":
            assert "backend:         none, reclaim impossible (" in human, human
            p = d.ctl("reclaim", "h", "64M", check=False)
            assert p.returncode == 1, (p.returncode, p.stderr)
            line = one_error_line(p)
            assert "no reclaim backend" in line and "nothing can hand memory back" in line
        else:
            assert "backend:         hint (" in human, human
            assert "hint returned:   0 B (" in human, human
            # the guest is not running: a reclaim waits for its session
            p = d.ctl("reclaim", "h", "64M", check=False)
            assert p.returncode == 6, (p.returncode, p.stderr)
        p = d.ctl("return", "h", "64M", check=False)
        assert p.returncode == 1, (p.returncode, p.stderr)
        line = one_error_line(p)
        if backend == "hint":
            assert "hint backend: the guest keeps every block" in line, line
            assert "nothing to return" in line, line
        else:
            assert "no reclaim backend" in line, line
        assert d.status()["h"]["operation"] is None
    finally:
        rc = d.close()
        q.close()
    assert rc == 0, d.text()


def rss_anon(g):
    return hostmem.rss(g.pid)["RssAnon"]


def module_work(g):
    """(pages_migrated, vacate_ns) of the guest module, from vdfnl stats."""
    st = dict(line.split("=", 1) for line in g.check("vdfnl stats").splitlines()
              if "=" in line)
    return int(st["pages_migrated"]), int(st["vacate_ns"])


def settled_rss(g, quiet=6, limit=90):
    """RssAnon once it has moved less than 2 MiB for `quiet` seconds."""
    last, since, t0 = rss_anon(g), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - t0 < limit:
        time.sleep(1)
        now = rss_anon(g)
        if abs(now - last) >= BLOCK:
            last, since = now, time.monotonic()
    return rss_anon(g)


def test_hint_reclaim(kernel, workdir, figures):
    agent = BUILD / "agent/vmdefrag-agent"
    if not agent.exists() or not (BUILD / "module" / kernel / "vmdefrag.ko").exists():
        pytest.skip("needs build/agent/vmdefrag-agent and the module for " + kernel)
    config = "[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"
    with Guest(kernel, ram_mib=768, fpr=True, backend="anon",
               daemon_monitor=True) as g:
        g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
        g.check("vmdefrag-agent -v >/tmp/agent.log 2>&1 &")
        g.check("memcheck start --mib 64 --id a --seed 5", timeout=300)
        # touch most of the RAM, then free it at random in 4 KiB pages
        g.check("fragment --seed 7 --files 0 --anon 480 --slab 0", timeout=600)
        d = Daemon(workdir, [("g", g.daemon_qmp_socket, g.vdf_socket)], config=config)
        try:
            d.wait_reconciled("g")
            st = d.status("g")["g"]
            assert st["backend"] == "hint", st
            assert "free-page-reporting=on" in st["backend_note"], st
            # what reporting alone gave back has been given back by now
            r0 = settled_rss(g)
            free = g.meminfo()["MemFree"]
            size = int(0.5 * free) // BLOCK * BLOCK
            assert size >= 64 * MIB, free

            w0 = module_work(g)
            t0 = time.monotonic()
            p = d.ctl("reclaim", "g", f"{size // MIB}M", "--wait", "--json",
                      check=False, timeout=600)
            took = time.monotonic() - t0
            r1 = rss_anon(g)
            w1 = module_work(g)
            op = json.loads(p.stdout.strip().splitlines()[-1])["operation"]
            assert op["backend"] == "hint" and op["kind"] == "reclaim", op
            assert op["state"] in ("done", "stopped"), (op, d.text()[-3000:])
            # exit 0 exactly when the whole size came back
            assert (p.returncode == 0) == (op["state"] == "done"), (p.returncode, op)
            drop = r0 - r1
            # a real part of the size came back, measured here
            assert drop >= size // 2, (drop, size, op, d.text()[-3000:])
            # the operation reports the measured drop, not the guest's claim
            assert abs(op["done_bytes"] - drop) <= 8 * MIB + drop // 20, (op, drop)
            assert op["rss_anon_before_bytes"] - op["rss_anon_after_bytes"] == op["done_bytes"], op
            assert op["compacted_bytes"] > 0, op
            # the guest's work: compaction empties partly used blocks only,
            # and the figures are the growth of the module's own counters
            assert op["pages_migrated"] > 0 and op["vacate_ns"] > 0, op
            assert op["pages_migrated"] == w1[0] - w0[0], (op, w0, w1)
            assert op["vacate_ns"] == w1[1] - w0[1], (op, w0, w1)
            st = d.status("g")["g"]
            assert st["memory"]["hint_returned_bytes"] == op["done_bytes"], st
            human = d.ctl("status", "g").stdout
            assert "backend:         hint (" in human and "hint returned:" in human, human
            # nothing is held for the host: nothing to return
            p = d.ctl("return", "g", "64M", check=False)
            assert p.returncode == 1
            assert "nothing to return" in one_error_line(p)
            g.check("memcheck verify --id a", timeout=300)
            figures("guest free before reclaim", free / MIB, "MiB")
            figures("hint reclaim asked", size / MIB, "MiB")
            figures("guest compacted (its claim)", op["compacted_bytes"] / MIB, "MiB")
            figures("QEMU RssAnon drop (measured)", drop / MIB, "MiB")
            figures("hint reclaim time", took, "s")
            figures("hint reclaim: pages migrated per GiB returned",
                    op["pages_migrated"] * (1 << 30) / max(drop, 1), "pages")
        finally:
            rc = d.close()
        assert rc == 0, d.text()


MODE_COMPACT = 1
HOSTILE_COMPACT = [
    # (id, answer(asked bytes) -> RESP_CAPTURE payload, reason in the drop or None)
    ("outside RAM", lambda want: capture_answer([(64 << 30, BLOCK)]), "not guest RAM"),
    ("bytes do not add up", lambda want: capture_answer([(256 * MIB, BLOCK)], 64 * MIB),
     "add up"),
    ("claims what it never freed", lambda want: capture_answer(
        [(128 * MIB + i * BLOCK, BLOCK) for i in range(want // BLOCK)]), None),
]


@pytest.mark.parametrize("case", HOSTILE_COMPACT, ids=[c[0] for c in HOSTILE_COMPACT])
def test_hint_hostile_guest(workdir, case):
    name, answer, reason = case
    q = PausedQemu(workdir, "h", backend="anon", ram="512M",
                   device="virtio-balloon-pci,id=bal,free-page-reporting=on")
    modes = []

    def on_capture(payload):
        want, mode = CAPTURE_REQ_FMT.unpack_from(payload)[:2]
        modes.append(mode)
        return answer(want)

    guest_h = capturing_guest(workdir / "h.vdf", 512 * MIB, on_capture)
    d = Daemon(workdir, [("h", q.qmp, workdir / "h.vdf")],
               config="[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 400\n")
    try:
        d.wait_for(lambda: d.status("h")["h"]["session"]["state"] == "ready", "ready")
        assert d.status("h")["h"]["backend"] == "hint"
        rss0 = hostmem.rss(q.proc.pid)["RssAnon"]
        p = d.ctl("reclaim", "h", "8M", "--wait", check=False, timeout=120)
        assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
        assert modes and all(m == MODE_COMPACT for m in modes), modes
        if reason:
            # the operation failed (read from the CLI: once the session is
            # back, a reconcile is the VM's latest operation in status)
            assert "failed" in p.stdout + p.stderr, (p.stdout, p.stderr)
            d.wait_for(lambda: "dropping guest session" in d.text(), "the drop")
            drop = [ln for ln in d.text().splitlines() if "dropping guest session" in ln]
            assert reason in drop[-1], drop[-1]
        else:
            # a well-formed lie: the session stays, the figure is measured
            o = d.status("h")["h"]["operation"]
            assert (o["kind"], o["state"]) == ("reclaim", "stopped"), o
            assert o["compacted_bytes"] >= 8 * MIB, o
            assert o["done_bytes"] < 2 * MIB, o
            assert abs(o["rss_anon_before_bytes"] - rss0) <= 8 * MIB, (o, rss0)
            assert d.status("h")["h"]["session"]["state"] == "ready"
        assert d.alive()
    finally:
        rc = d.close()
        guest_h.close()
        q.close()
    assert rc == 0, d.text()[-3000:]
