"""The foundation: real guests boot, the harness measures real effects.

These tests pin down what every other test relies on: both guest kernels
boot under the harness and run commands with their exit status; memcheck
detects a changed page; `fragment` really fragments (measured from the
guest's /proc/buddyinfo, the reach of free page reporting); freeing memory
in a guest with free page reporting on returns backing to the host (and
does not with it off); and the host-side measurements see huge pages.
What a test runs as another user reaches that user wherever the checkout
lives, a directory only root can enter included (harness/otheruser.py).
"""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import hostmem
from harness.guest import Guest, GuestCommandError, guest_kernels
from harness.otheruser import NOBODY, OtherUserDir, become, run_as, searchable

MIB = 1 << 20


def wait_for(predicate, timeout, interval=1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def fill_and_wait_for_return(g, fpr, figures):
    """Fills 512 MiB of a 1 GiB guest, frees it, and returns how much of
    the memfd backing went back to the host."""
    before = g.backing_bytes()
    g.check("memcheck start --mib 512 --id fill")
    filled = g.backing_bytes()
    assert filled - before >= 448 * MIB, "filling the guest did not grow the memfd"
    g.check("memcheck verify --id fill")
    g.check("memcheck stop --id fill")

    def returned():
        back = filled - g.backing_bytes()
        return back if back >= 384 * MIB else 0

    wait_for(returned, timeout=60 if fpr else 20, interval=2)
    back = filled - g.backing_bytes()
    figures(f"backing returned, fpr={'on' if fpr else 'off'}", back / MIB,
            "MiB of 512")
    return back


def test_no_reporting_keeps_backing(figures):
    """The control: without free page reporting the freed memory stays
    backed (one guest kernel is enough for a control)."""
    with Guest(guest_kernels()[0], ram_mib=1024, fpr=False) as g:
        back = fill_and_wait_for_return(g, False, figures)
    assert back < 64 * MIB, "backing fell without free page reporting"


def test_huge_pages_are_measured(kernel, figures):
    """Anonymous guest RAM under host THP shows up as huge-page-mapped."""
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        if "[never]" in f.read():
            pytest.skip("host THP is disabled: nothing huge to measure")
    with Guest(kernel, ram_mib=512, backend="anon", fpr=False) as g:
        assert g.backing_bytes() is None
        g.check("memcheck start --mib 256 --id h")
        huge = g.huge_mapped_bytes()
        rss = g.rss()
        figures("anon guest RAM mapped huge", huge / MIB, "MiB")
        assert rss["RssAnon"] >= 256 * MIB
        assert huge >= 128 * MIB, f"only {huge >> 20} MiB of guest RAM mapped huge"
        g.check("memcheck verify --id h")


def test_other_user_runs_copies_from_a_private_tree():
    """A program in a tree under a 0700 directory (a checkout in root's
    home, a `mktemp -d`) is out of uid 65534's reach, its mode
    notwithstanding; run_as refuses it, and the copy OtherUserDir makes runs
    as that user with exactly the groups asked for, and is gone after."""
    private = Path(tempfile.mkdtemp(prefix="vdf-private-"))
    try:
        assert os.stat(private).st_mode & 0o777 == 0o700
        prog = private / "tree/build/id"
        prog.parent.mkdir(parents=True)
        shutil.copy("/usr/bin/id", prog)
        os.chmod(prog, 0o755)
        assert not searchable(prog)
        with pytest.raises(ValueError, match="OtherUserDir"):
            run_as([prog, "-u"])
        # what the harness guards against: the kernel refuses it too
        with pytest.raises(PermissionError):
            subprocess.run([str(prog), "-u"], preexec_fn=become(), timeout=30)
        with OtherUserDir() as od:
            copy = od.copy(prog)
            assert searchable(copy) and os.stat(od.path).st_mode & 0o777 == 0o711
            p = run_as([copy, "-u"])
            assert (p.returncode, p.stdout) == (0, f"{NOBODY}\n"), p
            p = run_as([copy, "-G"])
            assert p.stdout.split() == [str(NOBODY)], p
            p = run_as([copy, "-G"], gid=54321, groups=[NOBODY])
            assert sorted(p.stdout.split()) == sorted(["54321", str(NOBODY)]), p
            data = od.copy(Path(__file__))
            assert os.stat(data).st_mode & 0o777 == 0o644
        assert not od.path.exists()
    finally:
        shutil.rmtree(private)


@pytest.fixture(scope="module", params=guest_kernels(),
                ids=lambda k: ".".join(k.split(".")[:2]))
def guest1g(request):
    """One 1 GiB guest with free page reporting per kernel, for the tests
    below in file order: the reporting test first (it fills and frees 512
    MiB of a guest that has not used them yet), then the command and
    memcheck tests, then fragment, which measures only before and after
    itself.  (One fixture for all: a second module-scoped guest would
    stay up, idle, until the module ends.)"""
    with Guest(request.param, ram_mib=1024) as g:
        yield g


def test_free_page_reporting_returns_backing(guest1g, figures):
    back = fill_and_wait_for_return(guest1g, True, figures)
    assert back >= 384 * MIB, f"free page reporting returned only {back >> 20} MiB"


def test_guest_runs_commands(guest1g):
    g = guest1g
    assert g.check("uname -r").strip() == g.kernel
    assert g.run("echo out; echo err >&2; exit 7") == (7, "out\nerr\n")
    big = g.check("head -c 3000000 /dev/zero | tr '\\0' x")
    assert len(big) == 3000000 and set(big) == {"x"}
    status, _ = g.run("sleep 30", timeout=2)
    assert status == 124
    names = g.check("cat /sys/class/virtio-ports/*/name").split()
    assert sorted(names) == ["org.vmdefrag.0", "org.vmdefrag.test.0"]
    assert "virtio_balloon" in g.check("lsmod") or \
        g.run("test -d /sys/bus/virtio/drivers/virtio_balloon")[0] == 0


def test_memcheck_detects_a_changed_page(guest1g):
    g = guest1g
    g.check("memcheck start --mib 64 --seed 7 --id t")
    assert "bad_pages=0 intact" in g.check("memcheck verify --id t")
    g.check("memcheck corrupt --id t --page 1234")
    with pytest.raises(GuestCommandError) as err:
        g.check("memcheck verify --id t")
    assert err.value.status == 1
    assert "bad page 1234 " in err.value.output
    assert "bad_pages=1 CORRUPT" in err.value.output
    g.check("memcheck stop --id t")
    g.check("memcheck run --mib 16 --file --seed 3")


def test_fragment_scatters_free_memory(guest1g, figures):
    g = guest1g
    base = hostmem.buddyinfo_free_bytes(g.read("/proc/buddyinfo"))
    base_2m = hostmem.buddyinfo_free_bytes(g.read("/proc/buddyinfo"), min_order=9)
    out = g.check("fragment --seed 42", timeout=600)
    assert "files_kept=" in out
    info = g.read("/proc/buddyinfo")
    free = hostmem.buddyinfo_free_bytes(info)
    free_2m = hostmem.buddyinfo_free_bytes(info, min_order=9)
    figures("free before fragment", base / MIB, "MiB")
    figures("free in whole 2 MiB blocks before", base_2m / MIB, "MiB")
    figures("free after fragment", free / MIB, "MiB")
    figures("free in whole 2 MiB blocks after", free_2m / MIB, "MiB")
    figures("FPR reach after fragment", 100.0 * free_2m / free, "% of free")
    # Survivors are held, yet most memory is free again...
    assert free > 0.5 * base
    # ...but a good part of it no longer lies in whole 2 MiB blocks,
    # which is all free page reporting can return.
    assert free_2m < 0.8 * free, "fragment left the free memory in 2 MiB blocks"
    slab = g.meminfo()["Slab"]
    assert slab > 8 * MIB
    # The survivors really are held, and released on request.
    g.check("test -s /run/fragment.pid && kill -0 $(cat /run/fragment.pid)")
    g.check("fragment --release")
    free_released = hostmem.buddyinfo_free_bytes(g.read("/proc/buddyinfo"))
    assert free_released > free
