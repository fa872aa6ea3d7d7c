"""The guest kernel series' alloc_contig_range_noinit() (0005,
guest-agent/kernel-patches/): the module's captures skip init_on_alloc's
clearing of the pages they take, and nothing the guest owns is hurt.

Boots the kernel `make guest-kernel` built (skipped when it has not been
built) with its default init_on_alloc (CONFIG_INIT_ON_ALLOC_DEFAULT_ON=y,
as Debian's; the test checks the boot log says "heap alloc:on"), 512 MiB,
no free page reporting (it would discard freed pages under the test), and
judges real effects (one boot, a module fixture):

 - test_captured_pages_not_cleared: memory filled with a pattern and
   freed is then captured; the captured pages, read from the host
   (QEMU's xp, guest-physical), still hold pattern words: the kernel did
   not clear them (a stock alloc_contig_range() under init_on_alloc=1
   leaves every captured page zero);
 - test_data_intact_over_cycles: three capture/release cycles while a
   memcheck holder keeps 64 MiB of pattern in the guest, then a fresh
   holder over the released memory: both verify, and neither the console
   (the harness) nor dmesg reports a BUG or WARNING.

Takes about a minute when the machine is idle.
"""
import re

import pytest

from harness.guest import Guest
from harness.initramfs import series_kernel

MIB = 1 << 20
CYCLES = 3
CAPTURE = 128 * MIB
SAMPLE_QWORDS = 16      # read per sampled page
SAMPLE_PAGES = 8        # sampled pages per captured range


KERNEL = series_kernel()
pytestmark = pytest.mark.skipif(
    KERNEL is None, reason="no vmdefrag guest kernel: run `make guest-kernel`")


def ranges(out):
    """[(addr, len)] from vdfnl capture's range= lines."""
    return [(int(a, 16), int(n, 16))
            for a, n in re.findall(r"^range=0x([0-9a-f]+):0x([0-9a-f]+)$", out, re.M)]


def nonzero_words(g, rngs):
    """Of the sampled words of the captured pages, (nonzero, read)."""
    nz = total = 0
    for addr, length in rngs:
        pages = length // 4096
        for k in range(SAMPLE_PAGES):
            pa = addr + (k * pages // SAMPLE_PAGES) * 4096
            text = g.hmp(f"xp /{SAMPLE_QWORDS}xg {pa:#x}")
            words = re.findall(r"0x([0-9a-f]{16})", text)
            assert len(words) == SAMPLE_QWORDS, text
            total += len(words)
            nz += sum(1 for w in words if int(w, 16))
    return nz, total


@pytest.fixture(scope="module")
def run():
    r = {}
    with Guest(KERNEL, ram_mib=512, fpr=False) as g:
        r["cmdline"] = g.read("/proc/cmdline")
        r["autoinit"] = g.run("dmesg | grep 'mem auto-init'")[1]
        g.check("insmod /lib/modules/vmdefrag.ko && vdfnl set-floor 16M")
        g.check("memcheck start --mib 64 --seed 11 --id keep", timeout=300)
        # pattern into free memory: the pages the first capture takes
        g.check("memcheck start --mib 256 --seed 12 --id fill", timeout=300)
        g.check("memcheck stop --id fill")
        r["verify"] = []
        for i in range(CYCLES):
            out = g.check(f"vdfnl capture {CAPTURE} --budget-ms 300000", timeout=900)
            rngs = ranges(out)
            r.setdefault("captured", []).append(sum(n for _, n in rngs))
            if i == 0:
                r["words"] = nonzero_words(g, rngs)
            g.check(f"vdfnl release {CAPTURE}", timeout=300)
            r["verify"].append(g.run("memcheck verify --id keep", timeout=600))
        # the released pages in use again, by a new holder
        g.check("memcheck start --mib 200 --seed 13 --id again", timeout=300)
        r["again"] = g.run("memcheck verify --id again", timeout=600)
        r["stats"] = g.check("vdfnl stats")
        r["splat"] = g.run("dmesg | grep -E 'BUG|WARNING|corrupt'")
        print(f"contig noinit on {KERNEL}: captured {r['captured']} bytes per "
              f"cycle; sampled words of the first capture non-zero "
              f"{r['words'][0]}/{r['words'][1]}; {r['autoinit'].strip()}",
              flush=True)
    return r


def test_captured_pages_not_cleared(run):
    assert "init_on_alloc" not in run["cmdline"], run["cmdline"]
    assert "heap alloc:on" in run["autoinit"], \
        f"init_on_alloc is not on in this guest: {run['autoinit']!r}"
    assert run["captured"][0] > 0, run["captured"]
    nz, total = run["words"]
    # memory was 256 MiB of pattern of 512: of the pages captured, some
    # held it; a cleared capture reads back all zero
    assert nz > 0, f"all {total} sampled words of captured pages are zero"


def test_data_intact_over_cycles(run):
    assert all(n > 0 for n in run["captured"]), run["captured"]
    for i, (rc, out) in enumerate(run["verify"]):
        assert rc == 0, f"cycle {i}: memcheck verify: {out}"
    rc, out = run["again"]
    assert rc == 0, f"memcheck over the released memory: {out}"
    rc, splat = run["splat"]
    assert rc != 0, f"guest kernel reports:\n{splat}"
