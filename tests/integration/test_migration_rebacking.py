"""After a live migration in: which QEMU path, and blocks the guest takes back.

test_release_after_stock_postcopy
    One 512 MiB guest (module, agent, memcheck data, fragmented free
    memory, 96 MiB reclaimed by the source daemon) migrated by post-copy
    between two stock QEMUs (tmpfs file RAM, align=2M).  The destination
    daemon reconciles and runs its collapse pass; status says "stock QEMU
    path" (query-version: no vmdefrag-patches mark) and that it came by
    post-copy.  A return of 16 MiB: once it ended the daemon re-collapses
    the RAM, and QEMU's mapping of the returned blocks is PMD-mapped
    (mapped with 2 MiB pages before the guest touches them; without the
    re-collapse they would be mapped through post-copy's 4 KiB page
    tables when the guest does).  Then the guest allocates past its free memory: the
    module's shrinker releases captured blocks, the daemon re-backs them,
    and (the point) re-collapses them: post-copy left QEMU's page tables
    of those ranges with 4 KiB entries, which survive the reconcile's
    punch, so without the re-collapse the guest's fresh 2 MiB folios there
    stay 4 KiB-mapped and the share of QEMU's resident guest RAM mapped
    with 2 MiB pages falls (the migration soak measured 85-98 %).
    Checked from the kernel's accounting (QEMU's smaps): the share is at
    least PMD_SHARE_MIN again after at least 56 MiB were released, the
    re-collapse counted every released block it found backed, and every
    memcheck page (old data and the pressure allocation) is intact.

test_patched_postcopy_path
    The same guest migrated by post-copy between two patched QEMUs
    (harness.guest.patched_qemu(); skipped without one): status says
    "patched QEMU path", the JSON's qemu.patched is true and its package
    carries the mark; the reconcile and the collapse pass still run and
    their findings and cost are reported (figures); every range the
    backing holds whole ends PMD-mapped (ranges left partly holes are not
    collapsed, so the share of resident RAM is below the stock case's:
    it is reported, not asserted against PMD_SHARE_MIN); the destination
    backing ends at most where the source's was (the patched destination
    leaves zero pages unplaced, so usually below), and data is intact.
"""
import time

import pytest

from harness.guest import PATCHED_MARK, Guest, patched_qemu
from harness.migration import IncomingGuest, captures, migrate, prepare_reclaimed
from harness.vmdefragd import Daemon

MIB = 1 << 20
RAM_MIB = 512
RECLAIM = 96 * MIB
CONFIG = ("[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"
          "collapse_cpu_percent = 50\n")
PMD_SHARE_MIN = 0.90
RELEASE_MIN = 56 * MIB
RETURN = 16 * MIB


def mig(d):
    return d.status("g")["g"]["migration"]


def mem(d):
    return d.status("g")["g"]["memory"]


def prepare(g, workdir, qmp):
    """Module, agent, data, fragmentation, a source daemon and a reclaim."""
    return prepare_reclaimed(g, workdir, qmp, CONFIG, RECLAIM)


def migrate_in(g, workdir, qemu=None):
    """Post-copy of g into a new QEMU with its own daemon; returns
    (source daemon, dst, destination daemon) once the destination's
    collapse pass ended; the caller closes both daemons and dst."""
    sq, dq = workdir / "src.qmp", workdir / "dst.qmp"
    d = prepare(g, workdir / "src", sq)
    # the source daemon knows its QEMU too (query-version at attach)
    assert mig(d)["qemu"]["patched"] is (qemu is not None), mig(d)
    b_src = g.backing_bytes()
    held = captures(g)
    assert held, "the guest holds nothing captured after a reclaim"
    dst = IncomingGuest(g, extra_args=["-qmp", f"unix:{dq},server=on,wait=off"],
                        qemu=qemu)
    dst.__enter__()
    (workdir / "dst").mkdir()
    dd = Daemon(workdir / "dst", [("g", dq, dst.vdf_socket)], config=CONFIG)
    dd.wait_for(lambda: mig(dd)["state"] == "incoming", "incoming state")
    # slow enough that the switch to post-copy comes before the precopy
    # could finish (a patched source skips holes and ends fast)
    info = migrate(g, dst, postcopy=True, bandwidth=128 << 20)
    assert info["status"] == "completed", info
    d.wait_for(lambda: mig(d)["state"] == "migrated-away", "migrated away")
    g.stop()
    dd.wait_for(lambda: (mig(dd).get("collapse") or {}).get("state")
                in ("done", "failed"), "the collapse pass", 300)
    m = mig(dd)
    assert m["state"] == "migrated-in" and m["reconciled"] and m["postcopy"], m
    assert m["collapse"]["state"] == "done", m["collapse"]
    b_dst = dst.backing_bytes()
    if qemu is None:
        # stock QEMU writes every page: the reconcile brings it back to
        # where the source was
        assert abs(b_dst - b_src) <= 8 * MIB + 0.02 * b_src, (b_src, b_dst, m)
    else:
        # a patched destination leaves zero pages nobody asked for
        # unplaced (patch 0004): never more than the source
        assert b_dst <= b_src + 8 * MIB + 0.02 * b_src, (b_src, b_dst, m)
    assert captures(dst) == held
    dst.check("memcheck verify --id a")
    return d, dst, dd, b_src, b_dst


@pytest.mark.parametrize("backend", ["tmpfs"])
def test_release_after_stock_postcopy(backend, agent_kernel, workdir, figures):
    sq = workdir / "src.qmp"
    d = dd = dst = None
    with Guest(agent_kernel, ram_mib=RAM_MIB, fpr=False, backend=backend,
               qemu="/usr/bin/qemu-system-x86_64",
               extra_args=["-qmp", f"unix:{sq},server=on,wait=off"]) as g:
        try:
            d, dst, dd, _, _ = migrate_in(g, workdir)
            m = mig(dd)
            assert m["path"] == "stock" and m["qemu"]["patched"] is False, m
            assert PATCHED_MARK not in (m["qemu"]["package"] or "")
            text = dd.ctl("status", "g").stdout
            assert "migrated in by post-copy (stock QEMU path)" in text, text

            pmd0, rss0 = dst.pmd_share()
            figures("stock postcopy: dest PMD-mapped after the pass",
                    f"{pmd0 // MIB} / {rss0 // MIB}", "MiB")
            assert pmd0 >= PMD_SHARE_MIN * rss0, (pmd0, rss0, m["collapse"])

            def rerun_settled(after=0):
                r = mig(dd)["collapse"]["rerun"]
                return r["passes"] > after and not r["running"]

            # ---- a return: the daemon re-backs blocks, then re-collapses
            # (the whole RAM, once the return ended); QEMU's mapping of
            # the returned blocks gets PMDs before the guest touches them
            passes = mig(dd)["collapse"]["rerun"]["passes"]
            dd.ctl("return", "g", f"{RETURN // MIB}M", "--wait")
            dd.wait_for(lambda: rerun_settled(passes), "the re-collapse after the return",
                        120)
            pmd_r, rss_r = dst.pmd_share()
            figures("stock postcopy: dest PMD-mapped after a return + re-collapse",
                    f"{pmd_r // MIB} / {rss_r // MIB}", "MiB")
            assert pmd_r >= pmd0 + RETURN - 2 * MIB, (pmd0, pmd_r, mig(dd)["collapse"])
            assert pmd_r >= PMD_SHARE_MIN * rss_r, (pmd_r, rss_r)

            # ---- guest pressure: the module releases captured blocks ----
            captured = mem(dd)["captured_bytes"]
            released0 = mem(dd)["guest_released_bytes"]
            # past free memory by what the guest holds captured, less a
            # margin (beyond that the guest runs out of memory)
            want = dst.meminfo()["MemFree"] + captured - 16 * MIB
            dst.check(f"memcheck start --mib {want // MIB} --id c --seed 8", timeout=900)
            dd.wait_for(lambda: mem(dd)["guest_released_bytes"] - released0 >= RELEASE_MIN,
                        "the daemon to see the pressure release", 60)
            released = mem(dd)["guest_released_bytes"] - released0
            assert mem(dd)["captured_bytes"] <= captured - RELEASE_MIN

            dd.wait_for(rerun_settled, "the re-collapse of released blocks", 120)
            # the guest may still be touching released blocks; a last
            # release event may queue one more pass: let it settle again
            time.sleep(1)
            dd.wait_for(rerun_settled, "the re-collapse of released blocks", 120)
            r = mig(dd)["collapse"]["rerun"]
            figures("stock postcopy: released under pressure / re-collapsed",
                    f"{released // MIB} / {r['collapsed_bytes'] // MIB} MiB in "
                    f"{r['passes']} pass(es), {r['cpu_ns'] / 1e6:.0f} ms cpu", "")
            assert r["queued_bytes"] >= RELEASE_MIN, r
            assert r["failed_bytes"] == 0, r
            assert r["collapsed_bytes"] >= r["candidate_bytes"] > 0, r

            pmd1, rss1 = dst.pmd_share()
            figures("stock postcopy: dest PMD-mapped after release + re-collapse",
                    f"{pmd1 // MIB} / {rss1 // MIB}", "MiB")
            assert rss1 >= rss0 + RELEASE_MIN // 2, (rss0, rss1)
            assert pmd1 >= PMD_SHARE_MIN * rss1, (pmd1, rss1, r)
            text = dd.ctl("status", "g").stdout
            assert "re-collapse:" in text, text

            dst.check("memcheck verify --id a")
            dst.check("memcheck verify --id c")
            dst.check("memcheck stop --id c")
        finally:
            for x in (d, dd):
                if x is not None:
                    x.close()
            if dst is not None:
                dst.stop()


def test_patched_postcopy_path(agent_kernel, workdir, figures):
    qemu = patched_qemu()
    if qemu is None:
        pytest.skip("no vmdefrag-patched QEMU (make qemu-test, or "
                    "VMDEFRAG_PATCHED_QEMU)")
    sq = workdir / "src.qmp"
    d = dd = dst = None
    with Guest(agent_kernel, ram_mib=RAM_MIB, fpr=False, backend="tmpfs", qemu=qemu,
               extra_args=["-qmp", f"unix:{sq},server=on,wait=off"]) as g:
        try:
            d, dst, dd, b_src, b_dst = migrate_in(g, workdir, qemu=qemu)
            m = mig(dd)
            assert m["path"] == "patched" and m["qemu"]["patched"] is True, m
            assert PATCHED_MARK in m["qemu"]["package"], m["qemu"]
            text = dd.ctl("status", "g").stdout
            assert "migrated in by post-copy (patched QEMU path)" in text, text
            assert "reconciled" in text and "punched" in text, text
            assert "vmdefrag's patches" in text, text
            c = m["collapse"]
            figures("patched postcopy: backing source before, dest after",
                    f"{b_src // MIB}, {b_dst // MIB}", "MiB")
            figures("patched postcopy: reconcile listed / punched",
                    f"{m['reconcile_listed_bytes'] // MIB} / "
                    f"{m['reconcile_punched_bytes'] // MIB}", "MiB")
            figures("patched postcopy: collapse pass",
                    f"{c['collapsed_bytes'] // MIB} of {c['candidate_bytes'] // MIB} MiB "
                    f"(of {c['ram_bytes'] // MIB}), {c['hole_bytes'] // MIB} MiB holes, "
                    f"{c['cpu_ns'] / 1e6:.0f} ms cpu", "")
            assert m["reconcile_listed_bytes"] >= RECLAIM - 8 * MIB, m
            assert c["failed_bytes"] == 0, c
            pmd, rss = dst.pmd_share()
            figures("patched postcopy: dest PMD-mapped after the pass",
                    f"{pmd // MIB} / {rss // MIB}", "MiB")
            # every range the backing holds whole is mapped with a PMD; the
            # ranges post-copy left partly holes (zero pages patch 0004 did
            # not place, next to data) are not collapsed: that would
            # allocate their holes (measured: 150 of 214 MiB resident
            # PMD-mapped, every whole range; 148-150 of 152-154 MiB of
            # whole ranges without the pass)
            assert c["candidate_bytes"] > 0 and \
                c["collapsed_bytes"] == c["candidate_bytes"], c
            assert pmd >= c["candidate_bytes"] - 4 * MIB, (pmd, rss, c)
            dst.check("memcheck verify --id a")
        finally:
            for x in (d, dd):
                if x is not None:
                    x.close()
            if dst is not None:
                dst.stop()
