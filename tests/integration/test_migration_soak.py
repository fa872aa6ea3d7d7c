"""The migration soak (tests/soak/migration_soak.py), short: three hops.

One 512 MiB guest (the first guest kernel), fragmented, 96 MiB reclaimed,
migrated A->B (precopy), B->A (postcopy), A->B (precopy): both sides'
daemons re-attach to a new incoming QEMU at least once.  During each
migration a reclaim or return was started on the source just before and
the guest allocates past its free memory (pressure releases).  Every hop
must pass the soak's checks (memcheck data, captured blocks are holes on
the destination, destination backing = RAM - captured, daemon counters =
the guest's capture list, 2 MiB-mapped share after the collapse pass); see
the soak's docstring.

  stock          Debian's QEMU on both ends (or $VMDEFRAG_QEMU)
  patched-stock  the patched build (build/qemu/qemu-system-x86_64, `make
                 qemu`) on side A, stock on side B: hops go patched ->
                 stock, stock -> patched; skipped when it is not built
"""
import pytest

from harness.guest import BUILD, default_qemu, guest_kernels
from soak.migration_soak import STOCK_QEMU, Soak

PATCHED = BUILD / "qemu/qemu-system-x86_64"


@pytest.mark.parametrize("pair", ["stock", "patched-stock"])
def test_migration_soak(pair, workdir, figures):
    kernel = guest_kernels()[0]
    for p in (BUILD / "agent/vmdefrag-agent", BUILD / "module" / kernel / "vmdefrag.ko"):
        if not p.exists():
            pytest.skip(f"needs {p}")
    if pair == "stock":
        qemu_a = qemu_b = default_qemu()
    else:
        if not PATCHED.exists():
            pytest.skip(f"no patched QEMU at {PATCHED} (make qemu)")
        qemu_a, qemu_b = str(PATCHED), STOCK_QEMU
    lines = []

    def out(line):
        print(line, flush=True)
        lines.append(line)

    soak = Soak(kernel=kernel, hops=3, qemu_a=qemu_a, qemu_b=qemu_b, ram_mib=512,
                backend="tmpfs", modes="alternate", workdir=workdir, out=out)
    ok = soak.run()
    for h in soak.results:
        figures(f"hop {h.n} {h.src}->{h.dst} {h.mode}",
                f"backing {h.before and h.before >> 20} / peak {h.peak and h.peak >> 20} / "
                f"after {h.after and h.after >> 20} MiB, 2M {h.share}, data {h.data}", "")
    assert [h.mode for h in soak.results] == ["precopy", "postcopy", "precopy"], lines
    assert ok and all(h.passed for h in soak.results), "\n".join(lines)
    assert lines[-1] == "3 passed, 0 failed", lines
