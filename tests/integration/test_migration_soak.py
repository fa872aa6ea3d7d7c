"""The migration soak (tests/soak/migration_soak.py), short: three hops.

One 512 MiB guest (the first guest kernel), fragmented, 96 MiB reclaimed,
migrated A->B, B->A, A->B: both sides' daemons re-attach to a new incoming
QEMU at least once.  During each
migration a reclaim or return was started on the source just before and
the guest allocates past its free memory (pressure releases).  Every hop
must pass the soak's checks (memcheck data, captured blocks are holes on
the destination, destination backing = RAM - captured, daemon counters =
the guest's capture list, 2 MiB-mapped share after the collapse pass); see
the soak's docstring.

  stock-postcopy Debian's QEMU on both ends (or $VMDEFRAG_QEMU), three
                 post-copy hops
  stock-precopy  the same with precopy, postcopy, precopy: under TCG it is
                 skipped, with the reason: QEMU 7.2 loses guest writes in a
                 precopy under TCG whatever vmdefrag does (below)
  patched-stock  the patched build (harness.guest.patched_qemu(): what
                 `make check` builds with `make qemu-test`) on side A,
                 stock on side B, precopy, postcopy, precopy: every
                 precopy hop has the patched QEMU as its source

Why stock precopy is skipped under TCG: QEMU 7.2's dirty-bitmap sync
(cpu_physical_memory_sync_dirty_bitmap's fast path, include/exec/ram_addr.h)
clears the migration dirty bits without resetting the vCPUs' TLB entries,
so under TCG a page written once stays writable through a TLB entry that
no longer marks it dirty: later writes are never re-sent and the
destination keeps an old copy (zeroed page tables, panics).  The soak found
it (7 of 12 precopy hops with a guest allocating during the migration);
booting the guest with pti=on (a TLB flush on every kernel entry) made it
go away; KVM's dirty logging is the host kernel's and is not affected.
Upstream QEMU fixed it in 9.0 (cpu_physical_memory_dirty_bits_cleared());
the patched build carries the same fix (qemu-patches).
"""
import pytest

from harness.guest import BUILD, accelerator, default_qemu, guest_kernels, patched_qemu
from soak.migration_soak import STOCK_QEMU, Soak

MODES = {"stock-postcopy": ("postcopy", ["postcopy"] * 3),
         "stock-precopy": ("alternate", ["precopy", "postcopy", "precopy"]),
         "patched-stock": ("alternate", ["precopy", "postcopy", "precopy"])}


@pytest.mark.parametrize("pair", list(MODES))
def test_migration_soak(pair, workdir, figures):
    kernel = guest_kernels()[0]
    for p in (BUILD / "agent/vmdefrag-agent", BUILD / "module" / kernel / "vmdefrag.ko"):
        if not p.exists():
            pytest.skip(f"needs {p}")
    if pair.startswith("stock"):
        if pair == "stock-precopy" and accelerator() == "tcg":
            pytest.skip("QEMU 7.2 under TCG loses guest writes in precopy (dirty "
                        "bitmap sync leaves TLB entries unarmed; fixed upstream "
                        "in 9.0 and in qemu-patches): see this file's docstring")
        qemu_a = qemu_b = default_qemu()
    else:
        patched = patched_qemu()
        if patched is None:
            pytest.skip("no patched QEMU (make qemu-test; make check builds it)")
        qemu_a, qemu_b = patched, STOCK_QEMU
    lines = []

    def out(line):
        print(line, flush=True)
        lines.append(line)

    soak = Soak(kernel=kernel, hops=3, qemu_a=qemu_a, qemu_b=qemu_b, ram_mib=512,
                backend="tmpfs", modes=MODES[pair][0], workdir=workdir, out=out)
    ok = soak.run()
    for h in soak.results:
        figures(f"hop {h.n} {h.src}->{h.dst} {h.mode}",
                f"backing {h.before and h.before >> 20} / peak {h.peak and h.peak >> 20} / "
                f"after {h.after and h.after >> 20} MiB, 2M {h.share}, data {h.data}", "")
    assert [h.mode for h in soak.results] == MODES[pair][1], lines
    assert ok and all(h.passed for h in soak.results), "\n".join(lines)
    assert lines[-1] == "3 passed, 0 failed", lines
