"""Guest RAM stays mapped with 2 MiB pages in QEMU across reclaim and return.

The shared backend's promise on the host side is "without splitting its
own huge pages": punching whole 2 MiB blocks frees whole folios, and
re-backing allocates 2 MiB folios, so QEMU's mapping of guest RAM keeps
(and regains) PMD mappings.  That is only visible with a backing QEMU 7.2
maps 2 MiB-aligned: a memory-backend-file with align=2M on a tmpfs mounted
huge=within_size (the harness's backend="tmpfs"; a memfd is mapped 4 KiB
aligned, so its 2 MiB folios are mapped with 4 KiB PTEs, which
test_reclaim shows).

The test measures, from QEMU's /proc/PID/smaps, the share of guest RAM's
resident bytes mapped by PMDs (ShmemPmdMapped): after boot, after a
reclaim and after a return that the guest then uses.  It also checks the
returned blocks are 2 MiB folios (kpageflags), that the daemon's status
and the tmpfs mount's own huge= policy agree, and that guest data is
intact.  One guest kernel is enough: the host side is what is measured.
"""
import pytest

from harness import folios
from harness.guest import Guest, BUILD, guest_kernels
from harness.vmdefragd import Daemon

from test_reclaim import BLOCK, MIB, mem, op

RAM_MIB = 768


def test_returned_ranges_mapped_huge(workdir, figures):
    kernel = guest_kernels()[0]
    if not (BUILD / "module" / kernel / "vmdefrag.ko").exists():
        pytest.skip("needs the module for " + kernel)
    qmp2 = workdir / "daemon.qmp"
    config = "[daemon]\nreconnect_min_ms = 100\nreconnect_max_ms = 500\n"
    with Guest(kernel, ram_mib=RAM_MIB, fpr=False, backend="tmpfs",
               extra_args=["-qmp", f"unix:{qmp2},server=on,wait=off"]) as g:
        g.check("insmod /lib/modules/vmdefrag.ko floor_mb=64")
        g.check("vmdefrag-agent >/tmp/agent.log 2>&1 &")
        g.populate_backing()
        pmd, rss = g.pmd_share()
        figures("guest RAM mapped by PMDs after boot", f"{pmd >> 20} / {rss >> 20}",
                "MiB")
        assert pmd >= 0.95 * rss, (pmd, rss)

        g.check("memcheck start --mib 96 --id a --seed 11", timeout=300)
        g.check("fragment --seed 3 --anon 160 --files 60", timeout=600)
        d = Daemon(workdir, [("g", qmp2, g.vdf_socket)], config=config)
        try:
            d.wait_reconciled("g")
            st = d.status("g")["g"]
            assert st["backend"] == "shared", st
            assert st["reback_huge"] is True, st
            b0 = g.backing_bytes()
            d.ctl("reclaim", "g", "192M", "--wait")
            assert b0 - g.backing_bytes() >= 192 * MIB
            pmd, rss = g.pmd_share()
            figures("guest RAM mapped by PMDs after reclaim",
                    f"{pmd >> 20} / {rss >> 20}", "MiB")
            # whole folios were freed: nothing that stayed was split
            assert pmd >= 0.95 * rss, (pmd, rss)

            before = folios.data_blocks(g.pid, g.ram_bytes)
            d.ctl("return", "g", "192M", "--wait")
            o = op(d)
            assert (o["state"], o["reback"]) == ("done", "huge"), o
            back = sorted(folios.data_blocks(g.pid, g.ram_bytes) - before)
            assert len(back) * BLOCK >= 192 * MIB, len(back)
            huge = folios.huge_blocks(g.pid, g.ram_bytes, back)
            assert all(huge.values()), [hex(k) for k, v in huge.items() if not v]

            # the guest uses the memory it got back
            g.check("memcheck start --mib 160 --id b --seed 12", timeout=300)
            pmd, rss = g.pmd_share()
            figures("guest RAM mapped by PMDs after return + reuse",
                    f"{pmd >> 20} / {rss >> 20}", "MiB")
            assert pmd >= 0.95 * rss, (pmd, rss)
            st = d.status("g")["g"]
            assert abs(st["huge_mapped_bytes"] - pmd) <= 16 * MIB, (st, pmd)
            assert mem(d)["returned_bytes"] == 192 * MIB
            g.check("memcheck verify --id a")
            g.check("memcheck verify --id b")
        finally:
            d.close()
