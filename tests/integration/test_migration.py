"""Live migration with stock QEMU keeps what vmdefrag reclaimed.

One 512 MiB guest (the first guest kernel; the host side is what is
tested), the module and the agent in it, its RAM fully backed, memcheck
data, fragmented free memory, a source vmdefragd that reclaims 96 MiB.
Then a live migration to a second QEMU on this machine (-incoming defer),
which has its own vmdefragd.  Checked, from the kernel's own accounting:

  source     during the migration `vmdefragctl reclaim` is refused with one
             line (exit 1) and status says "outgoing"; after it, status
             says migrated away and the session is closed.
  dest       the daemon waits ("incoming", no guest session) and, once the
             migration completed, reconciles: the destination's backing
             (st_blocks of QEMU's RAM file or memfd) ends within 8 MiB + 2%
             of the source's backing before the migration, i.e. the ranges
             the guest holds captured (which stock QEMU wrote there) are
             holes again; the guest's capture list is the same as before
             the hop; every memcheck page is intact.
  collapse   tmpfs file with align=2M: the share of QEMU's resident guest
             RAM mapped with 2 MiB pages after the collapse pass is at
             least PMD_SHARE_MIN (without the pass, post-copy leaves it at
             0 for minutes: every page is placed as 4 KiB).
             memfd: QEMU maps it 4 KiB-aligned, so the pass can only make
             2 MiB folios (the daemon's own aligned mapping); those are
             counted, nothing is asserted about QEMU's mapping.

test_migration_patched: both ends run the patched QEMU (qemu-patches/,
built by `make qemu-test`), and the destination has no vmdefragd while the
migration runs, so what is checked is QEMU's own doing:
  source     its backing's peak during the migration stays within 8 MiB +
             2% of its size before (stock QEMU reads every reclaimed range
             back in: +RECLAIM);
  dest       its backing after the migration is at most the source's
             before (+8 MiB + 2%): no reclaimed range was allocated; the
             capture list and every memcheck page are intact;
  post-copy  tmpfs file: at least PMD_SHARE_MIN of its resident guest RAM
             is mapped with 2 MiB pages as the migration completes (stock:
             0 until the daemon's collapse pass or khugepaged);
  memfd      precopy into a memfd mapped 2 MiB-aligned (0002): the same
             share of 2 MiB mappings (stock QEMU 7.2 maps a memfd 4 KiB-
             aligned: none);
  daemon     a vmdefragd started on the destination afterwards attaches,
             reconciles, and frees at most 8 MiB: nothing was left to punch.

test_migration_cancelled: migrate_cancel in the middle of a slow precopy
(whose scan has read reclaimed ranges back in); the source daemon punches
them again (the backing is back to its size before the migration), goes
back to normal operation (a reclaim works again) and guest data is intact.
"""
import time

import pytest

from harness.guest import Guest, patched_qemu
from harness.migration import (IncomingGuest, PeakSampler, captures, migrate,
                               prepare_reclaimed, wait_migration)
from harness.vmdefragd import Daemon

MIB = 1 << 20
RAM_MIB = 512
RECLAIM = 96 * MIB
CONFIG = ("[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"
          "collapse_cpu_percent = 50\n")
PMD_SHARE_MIN = 0.90


def within_slack(b, ref):
    """b is at most ref plus one block's worth of guest activity and 2%."""
    return b <= ref + 8 * MIB + 0.02 * ref


def mem_reclaimed(d):
    return d.status("g")["g"]["memory"]["reclaimed_bytes"]


def mig(d):
    return d.status("g")["g"]["migration"]


def prepare(g, workdir, qmp):
    """Module, agent, data, fragmentation, a source daemon and a reclaim."""
    return prepare_reclaimed(g, workdir, qmp, CONFIG, RECLAIM)


def refused(d):
    p = d.ctl("reclaim", "g", "8M", check=False)
    lines = p.stderr.strip().splitlines()
    return p.returncode == 1 and len(lines) == 1 and "live migration" in lines[0]


CASES = [
    pytest.param("precopy", "tmpfs", id="precopy-tmpfs"),
    pytest.param("postcopy", "tmpfs", id="postcopy-tmpfs"),
    pytest.param("postcopy", "memfd", id="postcopy-memfd"),
]


@pytest.mark.parametrize("mode,backend", CASES)
def test_migration(mode, backend, agent_kernel, workdir, figures):
    kernel = agent_kernel
    sq, dq = workdir / "src.qmp", workdir / "dst.qmp"
    with Guest(kernel, ram_mib=RAM_MIB, fpr=False, backend=backend,
               extra_args=["-qmp", f"unix:{sq},server=on,wait=off"]) as g:
        d = prepare(g, workdir / "src", sq)
        dd = None
        try:
            b_src = g.backing_bytes()
            held = captures(g)
            assert held, "the guest holds nothing captured after a reclaim"
            with IncomingGuest(g, extra_args=["-qmp", f"unix:{dq},server=on,wait=off"]) as dst:
                (workdir / "dst").mkdir()
                dd = Daemon(workdir / "dst", [("g", dq, dst.vdf_socket)], config=CONFIG)
                dd.wait_for(lambda: mig(dd)["state"] == "incoming", "incoming state")
                st = dd.status("g")["g"]
                assert st["session"]["state"] == "down", st["session"]
                seen = {}

                def during():
                    seen["refused"] = refused(d)
                    seen["state"] = mig(d)["state"]

                t0 = time.monotonic()
                info = migrate(g, dst, postcopy=(mode == "postcopy"), during=during)
                took = time.monotonic() - t0
                assert info["status"] == "completed", info
                assert seen == {"refused": True, "state": "outgoing"}, seen
                d.wait_for(lambda: mig(d)["state"] == "migrated-away", "migrated away")
                b_src_after = g.backing_bytes()
                g.stop()
                assert "migrated away" in d.ctl("status", "g").stdout

                dd.wait_for(lambda: (mig(dd).get("collapse") or {}).get("state")
                            in ("done", "failed"), "the collapse pass", 300)
                m = mig(dd)
                assert m["state"] == "migrated-in" and m["reconciled"], m
                c = m["collapse"]
                assert c["state"] == "done", c
                b_dst = dst.backing_bytes()
                figures(f"{mode} {backend}: backing source before / after, dest",
                        f"{b_src // MIB} / {b_src_after // MIB}, {b_dst // MIB}", "MiB")
                assert abs(b_dst - b_src) <= 8 * MIB + 0.02 * b_src, (b_src, b_dst, m)
                assert m["reconcile_punched_bytes"] >= RECLAIM - 8 * MIB, m
                assert captures(dst) == held
                dst.check("memcheck verify --id a")
                text = dd.ctl("status", "g").stdout
                assert "migrated in" in text and "punched" in text, text
                figures(f"{mode} {backend}: collapse",
                        f"{c['collapsed_bytes'] // MIB} of {c['candidate_bytes'] // MIB} MiB, "
                        f"{c['cpu_ns'] / 1e6:.0f} ms cpu, {c['elapsed_ms']} ms", "")
                figures(f"{mode} {backend}: migration time", took, "s")
                if backend == "tmpfs":
                    pmd, rss = dst.pmd_share()
                    figures(f"{mode} {backend}: dest PMD-mapped after collapse",
                            f"{pmd // MIB} / {rss // MIB}", "MiB")
                    assert pmd >= PMD_SHARE_MIN * rss, (pmd, rss, c)
                else:
                    assert c["folio_only_bytes"] >= 0.9 * c["candidate_bytes"], c
                # the destination works as any VM: reclaim there
                dd.ctl("reclaim", "g", "16M", "--wait")
                dst.check("memcheck verify --id a")
                dd.close()
        finally:
            d.close()
            if dd is not None:
                dd.close()


PATCHED_CASES = [
    pytest.param("postcopy", "tmpfs", id="postcopy-tmpfs"),
    pytest.param("precopy", "memfd", id="precopy-memfd"),
]


@pytest.mark.parametrize("mode,backend", PATCHED_CASES)
def test_migration_patched(mode, backend, agent_kernel, workdir, figures):
    qemu = patched_qemu()
    if qemu is None:
        pytest.skip("no patched QEMU: make qemu-test (make check builds it)")
    sq, dq = workdir / "src.qmp", workdir / "dst.qmp"
    with Guest(agent_kernel, ram_mib=RAM_MIB, fpr=False, backend=backend, qemu=qemu,
               extra_args=["-qmp", f"unix:{sq},server=on,wait=off"]) as g:
        d = prepare(g, workdir / "src", sq)
        dd = None
        try:
            b_src = g.backing_bytes()
            held = captures(g)
            assert held, "the guest holds nothing captured after a reclaim"
            with IncomingGuest(g, extra_args=["-qmp", f"unix:{dq},server=on,wait=off"]) as dst:
                with PeakSampler(g, interval=0.02) as peak:
                    info = migrate(g, dst, postcopy=(mode == "postcopy"))
                assert info["status"] == "completed", info
                pmd, rss = dst.pmd_share()
                b_dst = dst.backing_bytes()
                figures(f"patched {mode} {backend}: source before / peak, dest after",
                        f"{b_src // MIB} / {peak.peak[g] // MIB}, {b_dst // MIB}", "MiB")
                figures(f"patched {mode} {backend}: dest PMD-mapped at completion",
                        f"{pmd // MIB} / {rss // MIB}", "MiB")
                assert within_slack(peak.peak[g], b_src), (b_src, peak.peak[g])
                assert within_slack(b_dst, b_src), (b_src, b_dst)
                assert pmd >= PMD_SHARE_MIN * rss, (pmd, rss)
                d.wait_for(lambda: mig(d)["state"] == "migrated-away", "migrated away")
                g.stop()
                assert captures(dst) == held
                dst.check("memcheck verify --id a")
                # a daemon attached now finds the captured ranges unbacked
                b_before = dst.backing_bytes()
                (workdir / "dst").mkdir()
                dd = Daemon(workdir / "dst", [("g", dq, dst.vdf_socket)], config=CONFIG)
                dd.wait_reconciled("g")
                punched = b_before - dst.backing_bytes()
                figures(f"patched {mode} {backend}: punched by a later reconcile",
                        punched // MIB, "MiB")
                assert punched <= 8 * MIB, (b_before, punched)
                dst.check("memcheck verify --id a")
        finally:
            d.close()
            if dd is not None:
                dd.close()


def test_migration_cancelled(agent_kernel, workdir, figures):
    kernel = agent_kernel
    sq = workdir / "src.qmp"
    with Guest(kernel, ram_mib=RAM_MIB, fpr=False, backend="memfd",
               extra_args=["-qmp", f"unix:{sq},server=on,wait=off"]) as g:
        d = prepare(g, workdir / "src", sq)
        try:
            b0 = g.backing_bytes()
            with IncomingGuest(g) as dst:
                uri = f"unix:{dst.workdir}/migrate.sock"
                dst.qmp("migrate-incoming", uri=uri)
                # slow: 16 MiB/s, so it is still running when cancelled
                g.qmp("migrate-set-parameters", **{"max-bandwidth": 16 << 20})
                g.qmp("migrate", uri=uri)
                wait_migration(g, ("active",))
                d.wait_for(lambda: mig(d)["state"] == "outgoing", "outgoing state")
                assert refused(d)
                g.qmp("migrate_cancel")
                wait_migration(g, ("cancelled",))
            d.wait_for(lambda: mig(d)["state"] == "none", "back to normal")
            assert mig(d)["last_outcome"] == "outgoing migration cancelled"
            assert g.qmp("query-status")["status"] == "running"
            # the migration's scan read reclaimed ranges back in; the daemon
            # punched them again when it was cancelled
            b1 = g.backing_bytes()
            figures("cancelled: source backing before / after", f"{b0 // MIB} / "
                    f"{b1 // MIB}", "MiB")
            assert b1 <= b0 + 8 * MIB, (b0, b1)
            assert mem_reclaimed(d) >= RECLAIM - 8 * MIB
            d.ctl("reclaim", "g", "16M", "--wait")
            assert b1 - g.backing_bytes() >= 14 * MIB
            g.check("memcheck verify --id a")
        finally:
            d.close()
