"""virsh migrate --live between two libvirtds on this machine, each with
its own vmdefragd --libvirt.

Two libvirt "hosts" (harness.libvirt_ns.NsLibvirtd): libvirtd + virtlogd in
mount and UTS namespaces of their own, with their own hostname, host UUID,
/run/libvirt, /var/lib/libvirt and /etc/libvirt, so libvirt does not refuse
a migration to the same host.  Each runs the vmdefrag qemu hook (in its
private hooks directory) and a vmdefragd --libvirt inside its namespaces;
the hook reaches that daemon through a vmdefragctl wrapper first in
libvirtd's PATH.  A second hook after vmdefrag's records each call and,
for "migrate", the XML vmdefrag's hook handed on.

One 512 MiB TCG domain (memfd RAM, free page reporting off: see
NsDomainGuest), the module and agent in it, memcheck data, fragmented free
memory, 96 MiB reclaimed by the first host's daemon.  Then two hops:

  1. precopy    a -> b   virsh migrate --live
  2. postcopy   b -> a   virsh migrate --live --postcopy, then
                          virsh migrate-postcopy (a is where the domain
                          was before: its daemon's VM was "migrated away")

Checked on each hop:
  hook     the destination's libvirtd ran the hook's migrate operation and
           vmdefrag's hook gave the XML back unchanged (the migration used
           it: the destination's control channel path is the one sent), and
           told the destination's daemon (vmdefragctl notify DOMAIN
           migrate, before libvirt's prepare hook, i.e. before the incoming
           QEMU existed), which logged it.
  source   while libvirt's migration runs the source daemon says
           "outgoing" and refuses a reclaim with one line (exit 1); after
           it, "migrated away", detached.
  abort    (a third migration, a -> b) virsh domjobabort in the middle of
           the precopy: the source daemon sees libvirt's job end with the
           domain still running, punches again the reclaimed ranges
           QEMU's scan read back in (backing back to its size before,
           8 MiB tolerance) and takes a reclaim again.
  dest     the destination daemon waits without touching QEMU's monitor
           ("incoming") until libvirt's job ended, then attaches libvirt's
           new QEMU, reconciles and runs the collapse pass: the backing
           (st_blocks of QEMU's memfd) ends within 8 MiB + 2% of the
           source's backing before the hop, the reconcile punched at least
           the reclaimed amount less 8 MiB (stock QEMU wrote those ranges),
           the guest's capture list is the same and every memcheck page is
           intact; status shows the path ("migrated in", "punched").

test_libvirt_postcopy_failure: a post-copy a -> b whose destination QEMU
is killed (SIGKILL) once post-copy runs and the source's scan has read
reclaimed ranges back in.  libvirt pauses the source domain with reason
post-copy failed (its memory is split between the two hosts; the part on
b is gone).  The source daemon leaves "outgoing" for "postcopy-failed":
status says so, a reclaim is refused with one line, and nothing is
punched (the backing does not shrink back: a precopy that fails is
re-punched, this must not be; before, the daemon took libvirt's ended job
for a cancel and re-punched).  A daemon restarted then finds the domain
in the same state.  virsh destroy then takes it back to "none",
last outcome saying what happened.  Recovery (virsh migrate
--postcopy-resume) needs the destination QEMU alive, paused by a broken
connection; that cannot be provoked here without cutting a live TCP
connection between two local QEMUs, so the resume transitions are covered
by the unit test (tests/unit/test_migration.c) only.
"""
import os
import re
import signal
import threading
import time

from harness.libvirt_ns import NsDomainGuest, NsLibvirtd, libvirt_migrate
from harness.migration import captures
from harness.vmdefragd import VMDEFRAGCTL, Daemon

MIB = 1 << 20
RAM_MIB = 512
RECLAIM = 96 * MIB
CONFIG = ("[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"
          "collapse_cpu_percent = 50\n")
# slow enough that the test sees the precopy run and can switch to post-copy
BANDWIDTH_MIB = 48


def mig(d, name):
    return d.status(name)[name]["migration"]


def refused(d, name):
    p = d.ctl("reclaim", name, "8M", check=False)
    lines = p.stderr.strip().splitlines()
    return p.returncode == 1 and len(lines) == 1 and "live migration" in lines[0]


class Host:
    """An NsLibvirtd with the vmdefrag hook, a tracing hook and a vmdefragd."""

    def __init__(self, workdir, hostname):
        self.dir = workdir / hostname
        self.dir.mkdir()
        self.trace = self.dir / "hook-trace"
        bindir = self.dir / "bin"
        bindir.mkdir()
        sock = self.dir / "vmdefragd.sock"
        wrapper = bindir / "vmdefragctl"
        wrapper.write_text(f"#!/bin/sh\necho \"ctl $*\" >>{self.trace}\n"
                           f"exec {VMDEFRAGCTL} --socket {sock} \"$@\"\n")
        wrapper.chmod(0o755)
        self.lv = NsLibvirtd(self.dir, hostname, path_prepend=[bindir])
        self.lv_started = False
        self.d = None

    def __enter__(self):
        # runs after vmdefrag's hook ("zz" sorts last): for migrate its
        # stdin is what vmdefrag's hook gave back
        self.lv.add_hook("zz-trace", f"""#!/bin/sh
echo "hook $1 $2 $3" >>{self.trace}
case $2 in
migrate | restore) tee {self.dir}/hook-$1-$2.xml ;;
*) cat >/dev/null ;;
esac
exit 0
""")
        self.lv.start()
        self.lv_started = True
        self.d = Daemon(self.dir, [], config=CONFIG, extra=["--libvirt", self.lv.uri],
                        wrap=self.lv.ns_prefix())
        return self

    def __exit__(self, *exc):
        if self.d:
            self.d.close()
        self.lv.stop()
        return False

    def trace_text(self):
        try:
            return self.trace.read_text()
        except FileNotFoundError:
            return ""


def wait_attached(d, name, pid, timeout=120):
    d.wait_for(lambda: name in d.status() and d.status(name)[name]["qmp"]["connected"]
               and d.status(name)[name]["qmp"]["pid"] == pid,
               f"{name} attached to QEMU pid {pid}", timeout=timeout)


def hop(g, src, dst, postcopy, port, figures, label):
    name = g.name
    b_src = g.backing_bytes()
    held = captures(g)
    assert held, "the guest holds nothing captured"
    seen = {}

    def during():
        src.d.wait_for(lambda: mig(src.d, name)["state"] == "outgoing",
                       "the source daemon to see libvirt's migration", 30)
        seen["refused"] = refused(src.d, name)
        dst.d.wait_for(lambda: name in dst.d.status() and
                       mig(dst.d, name)["state"] == "incoming",
                       "the destination daemon to see the incoming domain", 30)
        st = dst.d.status(name)[name]
        seen["dst"] = (st["qmp"]["connected"], st["session"]["state"])

    took = libvirt_migrate(g, dst.lv, postcopy=postcopy, port=port,
                           bandwidth_mib=BANDWIDTH_MIB, during=during)
    assert seen == {"refused": True, "dst": (False, "down")}, seen

    # ---- the hook's migrate operation on the destination ----------------
    tr = dst.trace_text()
    assert f"hook {name} migrate begin" in tr, tr
    # vmdefrag's hook told the daemon, before libvirt prepared the QEMU
    notified = tr.rfind(f"ctl notify {name} migrate")
    assert notified >= 0, tr
    assert tr.find(f"hook {name} prepare begin", notified) > notified, tr
    assert re.search(rf'libvirt hook: domain "?{re.escape(name)}"? migrate\b',
                     dst.d.text()), dst.d.text()[-3000:]
    sent = (dst.dir / f"hook-{name}-migrate.xml").read_text()
    assert f"<name>{name}</name>" in sent and str(g.ctl_socket) in sent, sent[:2000]

    # ---- source ---------------------------------------------------------
    src.d.wait_for(lambda: mig(src.d, name)["state"] == "migrated-away", "migrated away")
    st = src.d.status(name)[name]
    assert not st["qmp"]["connected"], st["qmp"]
    assert "migrated away" in src.d.ctl("status", name).stdout

    # ---- destination ----------------------------------------------------
    dst.d.wait_for(lambda: (mig(dst.d, name).get("collapse") or {}).get("state")
                   in ("done", "failed"), "the collapse pass", 300)
    m = mig(dst.d, name)
    assert m["state"] == "migrated-in" and m["reconciled"], m
    assert m["collapse"]["state"] == "done", m["collapse"]
    # query-version through libvirt's monitor: Debian's QEMU, stock path
    assert m["qemu"] and m["qemu"]["patched"] is False and m["path"] == "stock", m
    assert m["postcopy"] is postcopy, m
    st = dst.d.status(name)[name]
    assert st["qmp"]["connected"] and st["qmp"]["pid"] == g.pid, st["qmp"]
    b_dst = g.backing_bytes()
    figures(f"{label}: backing source before, dest after", f"{b_src // MIB}, "
            f"{b_dst // MIB}", "MiB")
    figures(f"{label}: migration time", took, "s")
    c = m["collapse"]
    figures(f"{label}: collapse", f"{c['collapsed_bytes'] // MIB} of "
            f"{c['candidate_bytes'] // MIB} MiB, {c['cpu_ns'] / 1e6:.0f} ms cpu", "")
    assert abs(b_dst - b_src) <= 8 * MIB + 0.02 * b_src, (b_src, b_dst, m)
    assert m["reconcile_punched_bytes"] >= RECLAIM - 8 * MIB, m
    assert captures(g) == held
    g.check("memcheck verify --id a")
    text = dst.d.ctl("status", name).stdout
    assert "migrated in" in text and "punched" in text, text
    assert "(stock QEMU path)" in text, text
    return m


def test_libvirt_migration(agent_kernel, workdir, figures):
    kernel = agent_kernel
    with Host(workdir, "vdf-host-a") as a, Host(workdir, "vdf-host-b") as b:
        with NsDomainGuest(kernel, a.lv, ram_mib=RAM_MIB, fpr=False) as g:
            name = g.name
            wait_attached(a.d, name, g.pid)
            assert a.d.status(name)[name]["backend"] == "shared"
            g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
            g.check("vmdefrag-agent >/tmp/agent.log 2>&1 &")
            a.d.wait_ready(name)
            g.populate_backing()
            g.check("memcheck start --mib 64 --id a --seed 21", timeout=300)
            g.check("fragment --seed 5 --anon 80 --files 40", timeout=600)
            a.d.wait_reconciled(name)
            a.d.ctl("reclaim", name, f"{RECLAIM // MIB}M", "--wait")

            hop(g, a, b, postcopy=False, port=49152 + (time.time_ns() // 1000) % 5000,
                figures=figures, label="precopy a->b")
            hop(g, b, a, postcopy=True, port=54152 + (time.time_ns() // 1000) % 5000,
                figures=figures, label="postcopy b->a")
            # a's VM went migrated-away -> incoming -> migrated-in: it works
            # there again
            p = a.d.ctl("reclaim", name, "16M", "--wait", check=False)
            assert p.returncode == 0, (p.stdout, p.stderr, a.d.text()[-3000:])
            g.check("memcheck verify --id a")
            aborted(g, a, b, port=59152 + (time.time_ns() // 1000) % 5000)


def aborted(g, src, dst, port):
    """virsh domjobabort in the middle of a precopy (the guest keeps
    running, so libvirt sends no lifecycle event): the source daemon sees
    the job end, punches again what QEMU's scan read back in, and is back
    to normal; the destination's daemon does not stay 'incoming'."""
    name = g.name
    b0 = g.backing_bytes()
    held = captures(g)
    seen = {}

    def during():
        src.d.wait_for(lambda: mig(src.d, name)["state"] == "outgoing",
                       "the source daemon to see libvirt's migration", 30)
        # let QEMU's scan read reclaimed ranges back in first
        src.d.wait_for(lambda: g.backing_bytes() >= b0 + 32 * MIB,
                       "the source's scan to back reclaimed ranges", 120)
        seen["grown"] = g.backing_bytes() - b0
        src.lv.virsh("domjobabort", name)

    out = libvirt_migrate(g, dst.lv, port=port, bandwidth_mib=16, during=during,
                          expect_failure=True)
    assert "cancel" in out.lower() or "abort" in out.lower(), out
    src.d.wait_for(lambda: mig(src.d, name)["state"] == "none",
                   "the source daemon back to normal after the abort", 30)
    m = mig(src.d, name)
    assert "cancelled" in m["last_outcome"], m
    b1 = g.backing_bytes()
    figures_note = (seen, b0 // MIB, b1 // MIB)
    assert b1 <= b0 + 8 * MIB, figures_note
    assert captures(g) == held
    p = src.d.ctl("reclaim", name, "8M", "--wait", check=False)
    assert p.returncode == 0, (p.stdout, p.stderr)
    g.check("memcheck verify --id a")
    dst.d.wait_for(lambda: name not in dst.d.status() or
                   mig(dst.d, name)["state"] != "incoming",
                   "the destination daemon to drop the failed incoming domain", 30)


def test_libvirt_postcopy_failure(agent_kernel, workdir, figures):
    kernel = agent_kernel
    with Host(workdir, "vdf-host-a") as a, Host(workdir, "vdf-host-b") as b:
        with NsDomainGuest(kernel, a.lv, ram_mib=RAM_MIB, fpr=False) as g:
            name = g.name
            wait_attached(a.d, name, g.pid)
            g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
            g.check("vmdefrag-agent >/tmp/agent.log 2>&1 &")
            a.d.wait_ready(name)
            g.populate_backing()
            g.check("memcheck start --mib 64 --id a --seed 21", timeout=300)
            a.d.wait_reconciled(name)
            a.d.ctl("reclaim", name, f"{RECLAIM // MIB}M", "--wait")
            b0 = g.backing_bytes()
            seen = {}

            def kill_destination():
                # once post-copy runs and the scan read reclaimed ranges back
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    st = a.lv.virsh("domstate", "--reason", name, check=False).stdout
                    if "post-copy" in st and g.backing_bytes() >= b0 + 16 * MIB:
                        break
                    time.sleep(0.1)
                seen["grown"] = g.backing_bytes() - b0
                pid = b.lv.domain_pid(name)
                seen["killed"] = pid
                if pid:
                    os.kill(pid, signal.SIGKILL)

            def during():
                a.d.wait_for(lambda: mig(a.d, name)["state"] == "outgoing",
                             "the source daemon to see libvirt's migration", 30)
                threading.Thread(target=kill_destination, daemon=True).start()

            out = libvirt_migrate(g, b.lv, postcopy=True, bandwidth_mib=16,
                                  port=49152 + (time.time_ns() // 1000) % 5000,
                                  during=during, expect_failure=True)
            assert seen.get("killed"), (seen, out)
            assert seen["grown"] >= 16 * MIB, seen
            state = a.lv.virsh("domstate", "--reason", name).stdout
            assert "paused" in state and "post-copy failed" in state, state

            a.d.wait_for(lambda: mig(a.d, name)["state"] == "postcopy-failed",
                         "the source daemon to see the failed post-copy", 30)
            b_fail = g.backing_bytes()
            p = a.d.ctl("reclaim", name, "8M", check=False)
            lines = p.stderr.strip().splitlines()
            assert p.returncode == 1 and len(lines) == 1, (p.returncode, p.stderr)
            assert "post-copy" in lines[0] and "split" in lines[0], lines
            text = a.d.ctl("status", name).stdout
            assert "post-copy failed" in text and "nothing is punched" in text, text
            # the outgoing watch runs every second: give it a few looks
            time.sleep(4)
            assert mig(a.d, name)["state"] == "postcopy-failed"
            b_later = g.backing_bytes()
            figures("post-copy failure: source backing before / at failure / later",
                    f"{b0 // MIB} / {b_fail // MIB} / {b_later // MIB}", "MiB")
            assert b_later >= b_fail - 2 * MIB, (b0, b_fail, b_later)
            assert "punched again" not in a.d.text()
            # a daemon restarted meanwhile finds the domain split too
            a.d.close()
            a.d = Daemon(a.dir, [], config=CONFIG, extra=["--libvirt", a.lv.uri],
                         wrap=a.lv.ns_prefix())
            a.d.wait_for(lambda: name in a.d.status() and
                         mig(a.d, name)["state"] == "postcopy-failed",
                         "the restarted daemon to see the failed post-copy", 60)
            assert a.d.ctl("reclaim", name, "8M", check=False).returncode == 1
            time.sleep(2)
            assert g.backing_bytes() >= b_fail - 2 * MIB
            # the destination's daemon does not stay "incoming" for a
            # domain that is gone
            b.d.wait_for(lambda: name not in b.d.status() or
                         mig(b.d, name)["state"] != "incoming",
                         "the destination daemon to drop the dead incoming domain", 60)

            a.lv.virsh("destroy", name)
            a.d.wait_for(lambda: mig(a.d, name)["state"] == "none",
                         "the source daemon back to none after destroy", 30)
            m = mig(a.d, name)
            assert "post-copy failed" in m["last_outcome"], m
