"""The Debian packages: built from the tree, checked, installed for real.

build     `make deb` (dpkg-buildpackage -b on a copy of the tree) makes
          vmdefrag, vmdefrag-dkms and vmdefrag-agent, each at the version
          of debian/changelog (build-aux/version.sh).
lintian   no error on the .changes (the warnings and infos are printed).
contents  each package holds exactly the files it should, with their
          modes; the config and the hook are conffiles; vmdefrag-agent
          depends on vmdefrag-dkms of the same version; the DKMS tree's
          dkms.conf carries the version and dh_dkms's scripts use it.
chroot    vmdefrag installed with `dpkg -i` into a Debian 12 minbase root
          (rootfs.py HOST_PACKAGES, cached; built once with debootstrap),
          under a chroot with /proc, /sys and /dev: vmdefragd --version
          prints the version; `systemd-analyze verify` accepts the
          installed unit (which also finds its Documentation= pages with
          the chroot's man); the unit is enabled; man finds every page; a
          changed config survives a reinstall; purge removes every file,
          the config, and the enablement.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slow"))

from harness.initramfs import BUILD  # noqa: E402

TOP = Path(__file__).resolve().parents[2]
DEB = BUILD / "deb"

# package -> {path: mode} of its regular files, /usr/share/doc aside
FILES = {
    "vmdefrag": {
        "etc/libvirt/hooks/qemu.d/vmdefrag": 0o755,
        "etc/vmdefrag/vmdefragd.conf": 0o644,
        "lib/systemd/system/vmdefragd.service": 0o644,
        "usr/bin/vmdefragctl": 0o755,
        "usr/sbin/vmdefragd": 0o755,
        "usr/share/bash-completion/completions/vmdefragctl": 0o644,
        "usr/share/man/man1/vmdefragctl.1.gz": 0o644,
        "usr/share/man/man5/vmdefragd.conf.5.gz": 0o644,
        "usr/share/man/man8/vmdefragd.8.gz": 0o644,
        "usr/share/vmdefrag/domain-snippet.xml": 0o644,
    },
    "vmdefrag-agent": {
        "lib/systemd/system/vmdefrag-agent.service": 0o644,
        "lib/udev/rules.d/90-vmdefrag-agent.rules": 0o644,
        "usr/sbin/vmdefrag-agent": 0o755,
        "usr/share/man/man8/vmdefrag-agent.8.gz": 0o644,
        "usr/share/lintian/overrides/vmdefrag-agent": 0o644,
    },
}
CONFFILES = {"/etc/libvirt/hooks/qemu.d/vmdefrag", "/etc/vmdefrag/vmdefragd.conf"}


def version():
    return subprocess.run([str(TOP / "build-aux/version.sh")], capture_output=True,
                          text=True, check=True).stdout.strip()


def deb_field(deb, field):
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True,
                          text=True, check=True).stdout.strip()


def deb_files(deb):
    """{path: mode} of the regular files in a .deb."""
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                         check=True).stdout
    files = {}
    for line in out.splitlines():
        perms, path = line.split()[0], line.split()[5]
        if perms.startswith("-"):
            mode = 0
            for i, ch in enumerate(perms[1:10]):
                mode |= (ch != "-") << (8 - i)
            files[path[2:]] = mode
    return files


def deb_control(deb, name):
    return subprocess.run(f"dpkg-deb --ctrl-tarfile {deb} | tar -xO ./{name}", shell=True,
                          capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def debs():
    if not shutil.which("dpkg-buildpackage") or not shutil.which("dh_dkms"):
        pytest.skip("dpkg-dev, debhelper and dh-dkms are needed (make deps)")
    p = subprocess.run(["make", "--no-print-directory", "-C", str(TOP), "deb"],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    found = {deb_field(d, "Package"): d for d in DEB.glob("*.deb")
             if not d.name.split("_")[0].endswith("-dbgsym")}
    assert set(found) == {"vmdefrag", "vmdefrag-dkms", "vmdefrag-agent"}
    return found


def test_versions(debs):
    v = version()
    for name, deb in debs.items():
        assert deb_field(deb, "Version") == v, name
    assert deb_field(debs["vmdefrag-dkms"], "Architecture") == "all"


def test_lintian_no_errors(debs):
    if not shutil.which("lintian"):
        pytest.skip("lintian is not installed (make deps)")
    changes = list(DEB.glob("*.changes"))
    assert len(changes) == 1
    p = subprocess.run(["lintian", "--pedantic", "--fail-on", "error", str(changes[0])],
                       capture_output=True, text=True, timeout=900)
    tags = [line for line in p.stdout.splitlines() if re.match(r"^[EWIPXO]: ", line)]
    print("lintian:", *tags, sep="\n  ")
    assert not [t for t in tags if t.startswith("E: ")], "\n".join(tags)
    assert p.returncode == 0, p.stdout + p.stderr


def test_contents(debs):
    for name, files in FILES.items():
        got = {p: m for p, m in deb_files(debs[name]).items()
               if not p.startswith(f"usr/share/doc/{name}/")}
        assert got == files, name
    assert set(deb_control(debs["vmdefrag"], "conffiles").split()) == CONFFILES
    assert f"vmdefrag-dkms (= {version()})" in deb_field(debs["vmdefrag-agent"], "Depends")
    # the host daemon is what the host package starts; the agent's unit is
    # left to udev
    assert "vmdefragd.service" in deb_control(debs["vmdefrag"], "postinst")
    assert "reload" in deb_control(debs["vmdefrag"], "postinst")
    assert "enable" not in deb_control(debs["vmdefrag-agent"], "postinst")


def test_dkms_package(debs, tmp_path):
    v = version()
    deb = debs["vmdefrag-dkms"]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    tree = tmp_path / f"usr/src/vmdefrag-{v}"
    conf = (tree / "dkms.conf").read_text()
    assert f'PACKAGE_VERSION="{v}"' in conf and "#MODULE_VERSION#" not in conf
    want = subprocess.run(["make", "-s", "-C", str(TOP / "guest-agent/module"), "sources"],
                          capture_output=True, text=True, check=True).stdout.split()
    for src in want + ["Kbuild", "Makefile", "include/uapi/vmdefrag_genl.h"]:
        assert (tree / src).is_file(), src
    assert "dkms (>=" in deb_field(deb, "Depends")
    for script in ("postinst", "prerm"):
        text = deb_control(deb, script)
        assert "vmdefrag" in text and v in text, script


def chroot_out(root, *cmd):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
           "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True,
                          timeout=300, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture
def chroot_dir():
    """A directory under build/ for the root; removed only when nothing is
    mounted below it (rmtree must never walk a bind mount of /dev)."""
    from chroot import mounts_below

    BUILD.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="vdf-pkg-", dir=BUILD))
    yield d
    left = mounts_below(d)
    if left:
        raise RuntimeError(f"still mounted, {d} kept: {left}")
    shutil.rmtree(d)


def test_host_package_in_chroot(debs, chroot_dir):
    import rootfs
    from chroot import Chroot

    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        pytest.skip("needs root and debootstrap")
    try:
        root = rootfs.extract(chroot_dir / "root", rootfs.HOST_PACKAGES)
    except rootfs.RootfsError as e:
        pytest.fail(f"no Debian 12 rootfs: {e}")
    v = version()
    shutil.copy(debs["vmdefrag"], root / "tmp/vmdefrag.deb")
    conf = root / "etc/vmdefrag/vmdefragd.conf"
    wants = root / "etc/systemd/system/multi-user.target.wants/vmdefragd.service"
    with Chroot(root):
        p = chroot_out(root, "dpkg", "-i", "/tmp/vmdefrag.deb")
        assert p.returncode == 0, p.stdout + p.stderr
        assert chroot_out(root, "dpkg-query", "-W", "-f", "${Status} ${Version}",
                          "vmdefrag").stdout == f"install ok installed {v}"
        for prog in ("vmdefragd", "vmdefragctl"):
            p = chroot_out(root, prog, "--version")
            assert (p.returncode, p.stdout, p.stderr) == (0, f"{prog} {v}\n", ""), prog
        p = chroot_out(root, "systemd-analyze", "verify",
                       "/lib/systemd/system/vmdefragd.service")
        assert p.returncode == 0 and p.stdout + p.stderr == "", p.stdout + p.stderr
        assert wants.is_symlink() and \
            os.readlink(wants) == "/lib/systemd/system/vmdefragd.service"
        for page in ("vmdefragd", "vmdefragctl", "vmdefragd.conf"):
            p = chroot_out(root, "man", "-w", page)
            assert p.returncode == 0 and p.stdout.startswith("/usr/share/man/"), page
        # a changed conffile survives a reinstall
        conf.write_text(conf.read_text() + "\n# local change\n")
        mine = conf.read_bytes()
        p = chroot_out(root, "dpkg", "-i", "--force-confold", "/tmp/vmdefrag.deb")
        assert p.returncode == 0, p.stdout + p.stderr
        assert conf.read_bytes() == mine
        p = chroot_out(root, "dpkg", "--purge", "vmdefrag")
        assert p.returncode == 0, p.stdout + p.stderr
    for path in list(FILES["vmdefrag"]) + ["etc/vmdefrag"]:
        assert not (root / path).exists(), f"{path} left after purge"
    assert not wants.is_symlink(), "still enabled after purge"
