"""The movable-slab guest kernel (guest-agent/kernel-patches/, `make
guest-kernel`): its slab pages leave 2 MiB blocks without eviction.

Boots the kernel build-aux/guest-kernel.sh built (skipped, with the reason,
when it has not been built: the first build takes about 25 minutes on 2
cores and is not part of `make check`) under TCG with slub_debug=FZP, an
ext4 disk and the slab workload of tests/integration/test_slab.py (slabtree
build, walk with negative dentries, scatter), and checks real effects:

 - the kernel really has the series (the slab_vacate_* counters in
   /proc/vmstat) and the module uses it: an evict-slab capture first asks
   the kernel to vacate the slab of the blocks reclaimable slab pins, and
   the counters show slabs vacated and objects let go;
 - slabs are emptied (not only objects let go): the page cache's xarray
   nodes are moved (slab_obj_moved), slabs are freed (slab_vacate_success)
   and blocks the census counted as pinned by reclaimable slab come back
   (at least half of them; the figure is printed);
 - no page cache is evicted (the module's evicted_pagecache_bytes stays
   0; /proc/meminfo's Cached is printed before and after), guest memory
   (memcheck), the tree's contents (slabtree verify) and the filesystem
   (fsck.ext4 -n) are intact, and dmesg has no BUG, WARNING or slub_debug
   report;
 - all of it while a walker re-reads the tree and a writer creates and
   deletes files, with SLUB's poisoning, red zones and checks on: the
   harness fails the test on any Oops, BUG or WARNING on the console.

Takes about 10 minutes under TCG on a loaded 2-core machine.
"""
import re
import time

import pytest

from harness.disk import GUEST_MNT, Ext4Disk, start_racers, stop_racers
from harness.guest import BUILD, Guest
from harness.vdfnl import kv, num

TREE = f"{GUEST_MNT}/t --files 8000 --dirs 100 --seed 13 --percent 70"
DISK = dict(size_mib=1024, inodes=120000)


def built_kernel():
    """The release `make guest-kernel` built last, or None."""
    rel = BUILD / "guest-kernel" / "release"
    if not rel.exists():
        return None
    release = rel.read_text().strip()
    if not (BUILD / "guest-kernel" / release / "vmlinuz").exists() or \
       not (BUILD / "module" / release / "vmdefrag.ko").exists():
        return None
    return release


KERNEL = built_kernel()
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


def test_vacate_without_eviction_of_page_cache():
    with Ext4Disk(**DISK) as disk:
        with Guest(KERNEL, ram_mib=1024, extra_args=disk.qemu_args(),
                   cmdline="slub_debug=FZP") as g:
            assert g.check("cat /sys/kernel/slab/dentry/poison "
                           "/sys/kernel/slab/dentry/red_zone "
                           "/sys/kernel/slab/dentry/sanity_checks").split() == ["1"] * 3
            before = vmstat(g)
            assert set(before) >= {"slab_vacate_scanned", "slab_vacate_success",
                                   "slab_obj_isolated"}, before
            g.check("insmod /lib/modules/vmdefrag.ko && vdfnl set-floor 16M")
            Ext4Disk.mount(g, "noatime")
            g.check(f"slabtree build {TREE}", timeout=1800)
            g.check("sync; echo 3 > /proc/sys/vm/drop_caches")
            g.check(f"slabtree walk {TREE} --neg 10000", timeout=1800)
            g.check(f"slabtree scatter {TREE}", timeout=1800)
            g.check("sync")
            g.check("memcheck start --mib 64 --seed 5 --id mslab")
            scan = kv(g.check("vdfnl scan"))
            pinned = num(scan, "cause.slab_reclaim")
            assert pinned > 0, f"no block pinned only by reclaimable slab: {scan}"

            cached0 = cached_kib(g)
            start_racers(g, TREE)
            t0 = time.monotonic()
            out = kv(g.check("vdfnl capture 4G --mode compact --budget-ms 300000 "
                             "--evict evict-slab", timeout=900))
            took = time.monotonic() - t0
            err = stop_racers(g)
            assert "failed" not in err, err

            g.check("sync")
            cached1 = cached_kib(g)
            after = vmstat(g)
            delta = {k: after[k] - before.get(k, 0) for k in after}
            end = kv(g.check("vdfnl scan"))
            left = num(end, "cause.slab_reclaim")
            print(f"movable slab on {KERNEL}: {pinned} slab-pinned blocks before "
                  f"(per cache {reclaim_caches(scan)}), {left} after "
                  f"({reclaim_caches(end)}); vacated {pinned - left} of {pinned} "
                  f"({100 * (pinned - left) // pinned}%); vmstat {delta}; "
                  f"Cached {cached0} -> {cached1} KiB; evicted "
                  f"{num(end, 'evicted_dentries')} dentries, "
                  f"{num(end, 'evicted_inodes')} inodes, "
                  f"{num(end, 'evicted_pagecache_bytes')} page cache bytes; "
                  f"captured {out.get('bytes')} bytes in {took:.1f}s")
            assert delta["slab_vacate_scanned"] > 0, delta
            assert delta["slab_obj_isolated"] > 0, delta
            # xarray nodes moved, not freed, and slabs really emptied
            assert delta["slab_obj_moved"] > 0, delta
            assert delta["slab_vacate_success"] > 0, delta
            assert 2 * left <= pinned, \
                f"only {pinned - left} of {pinned} slab-pinned blocks vacated"
            assert num(out, "bytes") > 0
            assert num(end, "evicted_pagecache_bytes") == 0, \
                "evict-slab dropped page cache"
            g.check("dmesg > /run/dmesg")
            rc, dmesg = g.run("grep -E 'BUG|WARNING|KASAN|Poison|Redzone|"
                              "Object padding|Freepointer|corrupt' /run/dmesg")
            assert rc != 0, f"guest kernel reports:\n{dmesg}"

            g.check("memcheck verify --id mslab")
            g.check(f"slabtree verify {TREE}", timeout=1800)
            Ext4Disk.unmount(g)
        rc, fsck = disk.fsck()
        assert rc == 0, f"fsck.ext4 -n found problems:\n{fsck}"
