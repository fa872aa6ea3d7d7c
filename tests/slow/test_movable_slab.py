"""The movable-slab guest kernel (guest-agent/kernel-patches/, `make
guest-kernel`): its slab pages leave 2 MiB blocks without eviction.

Boots the kernel build-aux/guest-kernel.sh built (skipped, with the reason,
when it has not been built: the first build takes 10-50 minutes on 2 cores
and is not part of `make check`) under TCG with slub_debug=FZP, an ext4
disk and the slab workload of tests/integration/test_slab.py (slabtree
build, walk with negative dentries, scatter), captures with `--evict
evict-slab` while a walker re-reads the tree and a writer creates and
deletes files, and judges real effects (one boot, a module fixture):

 - test_vacate_without_eviction_of_page_cache: the module used the
   series (slab_vacate_* counters), the page cache's xarray nodes were
   moved (slab_obj_moved), slabs were emptied, not only objects freed
   (the dentry and radix_tree_node caches hold fewer slab pages after the
   capture than before it), no page cache was evicted (the module's
   evicted_pagecache_bytes stays 0; /proc/meminfo's Cached is printed),
   guest memory (memcheck), the tree (slabtree verify) and the filesystem
   (fsck.ext4 -n) are intact, and neither the console (the harness) nor
   dmesg has a BUG, WARNING or slub_debug report;
 - test_slab_pinned_blocks_vacated: the issue's goal, 90% of the blocks
   pinned by reclaimable slab back; expected to fail (xfail) while those
   blocks also hold ext4 inodes, buffer heads and extent status entries,
   which have no mobility operations.

Takes about 20 s when the machine is idle (minutes when it is loaded).
"""
import re
import time

import pytest

from harness.disk import GUEST_MNT, Ext4Disk, start_racers, stop_racers
from harness.guest import Guest
from harness.initramfs import series_kernel
from harness.vdfnl import kv, num

TREE = f"{GUEST_MNT}/t --files 8000 --dirs 100 --seed 13 --percent 70"
DISK = dict(size_mib=1024, inodes=120000)


KERNEL = series_kernel()
pytestmark = pytest.mark.skipif(
    KERNEL is None, reason="no movable-slab guest kernel: run `make guest-kernel`")



def vmstat(g):
    """The series' counters from the guest's /proc/vmstat."""
    out = g.check("grep ^slab_ /proc/vmstat")
    return {k: int(v) for k, v in re.findall(r"^(slab_\w+) (\d+)$", out, re.M)}


def cached_kib(g):
    """/proc/meminfo's Cached, in KiB."""
    return int(re.search(r"^Cached:\s+(\d+) kB", g.check("cat /proc/meminfo"),
                         re.M).group(1))


def reclaim_caches(scan):
    """Per cache, the blocks pinned by reclaimable slab that hold it."""
    return {k.split(".", 1)[1]: int(v) for k, v in scan.items()
            if k.startswith("slab_reclaim.")}


MOBILE = ("dentry", "radix_tree_node")


def slabs(g):
    """Slab pages (slabs) of the caches with mobility operations."""
    return {c: int(g.check(f"cat /sys/kernel/slab/{c}/slabs").split()[0])
            for c in MOBILE}


@pytest.fixture(scope="module")
def run():
    """One boot: the workload, an evict-slab capture under racers, and the
    integrity checks; what the tests below judge."""
    r = {}
    with Ext4Disk(**DISK) as disk:
        with Guest(KERNEL, ram_mib=1024, extra_args=disk.qemu_args(),
                   cmdline="slub_debug=FZP") as g:
            assert g.check("cat /sys/kernel/slab/dentry/poison "
                           "/sys/kernel/slab/dentry/red_zone "
                           "/sys/kernel/slab/dentry/sanity_checks").split() == ["1"] * 3
            before = vmstat(g)
            assert set(before) >= {"slab_vacate_scanned", "slab_vacate_success",
                                   "slab_obj_isolated", "slab_obj_moved"}, before
            g.check("insmod /lib/modules/vmdefrag.ko && vdfnl set-floor 16M")
            Ext4Disk.mount(g, "noatime")
            g.check(f"slabtree build {TREE}", timeout=1800)
            g.check("sync; echo 3 > /proc/sys/vm/drop_caches")
            g.check(f"slabtree walk {TREE} --neg 10000", timeout=1800)
            g.check(f"slabtree scatter {TREE}", timeout=1800)
            g.check("sync")
            g.check("memcheck start --mib 64 --seed 5 --id mslab")
            scan = kv(g.check("vdfnl scan"))
            r["pinned"] = pinned = num(scan, "cause.slab_reclaim")
            assert pinned > 0, f"no block pinned only by reclaimable slab: {scan}"

            r["cached0"] = cached_kib(g)
            r["slabs0"] = slabs(g)
            start_racers(g, TREE)
            t0 = time.monotonic()
            r["out"] = kv(g.check("vdfnl capture 4G --mode compact --budget-ms "
                                  "300000 --evict evict-slab", timeout=900))
            r["took"] = time.monotonic() - t0
            # the racers' own page cache and dentries are not the capture's
            r["slabs1"] = slabs(g)
            r["race_err"] = stop_racers(g)

            g.check("sync")
            r["cached1"] = cached_kib(g)
            after = vmstat(g)
            r["delta"] = {k: after[k] - before.get(k, 0) for k in after}
            r["end"] = end = kv(g.check("vdfnl scan"))
            r["left"] = num(end, "cause.slab_reclaim")
            # what eviction kept, and why (inodes busy, dirty, with pages)
            r["kept"] = kv(g.check("mountpoint -q /sys/kernel/debug || mount -t "
                                   "debugfs none /sys/kernel/debug; "
                                   "cat /sys/kernel/debug/vmdefrag/evict"))
            print(f"movable slab on {KERNEL}: {pinned} slab-pinned blocks before "
                  f"(per cache {reclaim_caches(scan)}), {r['left']} after "
                  f"({reclaim_caches(end)}); vacated {pinned - r['left']} of "
                  f"{pinned}; slabs {r['slabs0']} -> {r['slabs1']}; "
                  f"vmstat {r['delta']}; Cached {r['cached0']} -> "
                  f"{r['cached1']} KiB; evicted "
                  f"{num(end, 'evicted_dentries')} dentries, "
                  f"{num(end, 'evicted_inodes')} inodes, "
                  f"{num(end, 'evicted_pagecache_bytes')} page cache bytes, kept "
                  f"{ {k: v for k, v in r['kept'].items() if k.startswith('inodes_')} }"
                  f" (slab pages left in the blocks evicted: "
                  f"{ {k.rsplit('.', 1)[1]: v for k, v in r['kept'].items() if '.left_pages.' in k and v != '0'} }); "
                  f"captured {r['out'].get('bytes')} bytes in {r['took']:.1f}s",
                  flush=True)
            g.check("dmesg > /run/dmesg")
            r["splat"] = g.run("grep -E 'BUG|WARNING|KASAN|Poison|Redzone|"
                               "Object padding|Freepointer|corrupt' /run/dmesg")
            g.check("memcheck verify --id mslab")
            g.check(f"slabtree verify {TREE}", timeout=1800)
            Ext4Disk.unmount(g)
        r["fsck"] = disk.fsck()
    return r


def test_vacate_without_eviction_of_page_cache(run):
    """Objects moved (xarray nodes) and let go (dentries), slabs emptied,
    no page cache lost, nothing broken."""
    delta = run["delta"]
    assert "failed" not in run["race_err"], run["race_err"]
    assert delta["slab_vacate_scanned"] > 0, delta
    assert delta["slab_obj_isolated"] > 0, delta
    # the page cache's xarray nodes moved, not freed
    assert delta["slab_obj_moved"] > 0, delta
    assert delta["slab_vacate_success"] > 0, delta
    # slabs emptied, not only objects freed: the mobile caches hold fewer
    # slab pages after the capture, racers running, than before it
    assert sum(run["slabs1"].values()) < sum(run["slabs0"].values()), \
        (run["slabs0"], run["slabs1"])
    assert num(run["out"], "bytes") > 0
    assert num(run["end"], "evicted_pagecache_bytes") == 0, \
        "evict-slab dropped page cache"
    rc, dmesg = run["splat"]
    assert rc != 0, f"guest kernel reports:\n{dmesg}"
    rc, fsck = run["fsck"]
    assert rc == 0, f"fsck.ext4 -n found problems:\n{fsck}"


@pytest.mark.xfail(reason="the blocks also hold ext4 inodes (in use or with "
                   "page cache), their buffer heads and extent status "
                   "entries, which have no mobility operations yet",
                   strict=False)
def test_slab_pinned_blocks_vacated(run):
    """The issue's goal: 90% of the blocks pinned by reclaimable slab come
    back, the xarray-node ones without page cache lost."""
    pinned, left = run["pinned"], run["left"]
    assert 10 * (pinned - left) >= 9 * pinned, \
        f"only {pinned - left} of {pinned} slab-pinned blocks vacated"
