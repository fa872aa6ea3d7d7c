"""The guest install story end to end: DKMS, systemd, udev, a real reclaim.

test_guest_install  on a copy of the cached Debian 12 rootfs (rootfs.py):
  install   the guest packages, built from the tree (`make deb`), are
            installed the way the README tells a user, in a chroot (bind
            /proc, /sys, /dev): `dpkg -i vmdefrag-dkms_*.deb
            vmdefrag-agent_*.deb` twice (the second must replace the first
            cleanly: one "installed" line in `dkms status`, for the
            rootfs's kernel, which the dkms package's postinst built the
            module for).  A chroot, not the booted guest: the compiler runs
            at native speed there, under TCG the build would cost minutes.
            Nothing of the host's build is copied but the packages and the
            harness's own guest programs (vdf-testd, the control channel,
            started by a test-only unit; memcheck).
  boot      the rootfs as an ext4 image (mkfs.ext4 -d) on virtio-blk, the
            rootfs's own kernel and initrd, systemd as init, memfd RAM with
            share=on, the org.vmdefrag.0 port, a QMP monitor for the daemon.
  agent     nothing in the test starts the agent: udev's rule makes systemd
            start vmdefrag-agent.service, whose ExecStartPre loads the
            DKMS-built module; the proof is the daemon's session reaching
            "ready" with the module's features, the unit active, and its
            start on the console.
  reclaim   `vmdefragctl reclaim g 128M --wait`: st_blocks of QEMU's memfd
            drop by at least 128 MiB; `return g 128M --wait` gives it back;
            memcheck's anonymous data and a tmpfs file written before are
            intact after both.
  restart   the agent killed with SIGKILL: systemd restarts it
            (Restart=on-failure, NRestarts 1) and a 32 MiB reclaim through
            the new agent frees 32 MiB of backing.
  unplug    the org.vmdefrag.0 port hot-unplugged (device_del): BindsTo
            stops the unit cleanly (inactive, not failed); plugged again
            (device_add on the same chardev): udev starts it again and a
            32 MiB reclaim works through it.
"""
import os
import re
import shutil
import subprocess
import time

import pytest

import rootfs
from chroot import Chroot
from harness.guest import BUILD, TOP, VDF_PORT, Guest
from harness.vmdefragd import Daemon

MIB = 1 << 20
PORT_ID = "vdfport"
TESTD_UNIT = """\
[Unit]
Description=vmdefrag test harness control channel (test only)
After=dev-virtio\\x2dports-org.vmdefrag.test.0.device
BindsTo=dev-virtio\\x2dports-org.vmdefrag.test.0.device

[Service]
ExecStart=/usr/local/sbin/vdf-testd

[Install]
WantedBy=multi-user.target
"""


class RootfsGuest(Guest):
    """A Guest booted from a disk image with its own kernel and systemd,
    instead of the harness's busybox initramfs."""

    def __init__(self, image, vmlinuz, initrd, **kw):
        super().__init__(os.path.basename(vmlinuz)[len("vmlinuz-"):], **kw)
        self.image, self.vmlinuz, self.initrd_path = image, vmlinuz, initrd

    def qemu_args(self, initrd):
        args = super().qemu_args(initrd)
        args[args.index("-kernel") + 1] = str(self.vmlinuz)
        # an id on the vmdefrag port, so the test can unplug it
        i = next(i for i, a in enumerate(args) if a.endswith("name=" + VDF_PORT))
        args[i] += f",id={PORT_ID}"
        return args + ["-drive", f"file={self.image},format=raw,if=virtio,cache=unsafe"]

    def initrd(self):
        return self.initrd_path


def version():
    return subprocess.run([str(TOP / "build-aux/version.sh")], capture_output=True,
                          text=True, check=True).stdout.strip()


def build_debs():
    """The guest packages, built from the tree: {package: .deb path}."""
    p = subprocess.run(["make", "--no-print-directory", "-C", str(TOP), "deb"],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    debs = {}
    for name in ("vmdefrag-dkms", "vmdefrag-agent"):
        found = sorted((BUILD / "deb").glob(f"{name}_*.deb"))
        assert len(found) == 1, found
        debs[name] = found[0]
    return debs


def install(root, log):
    """The README's guest install, in a chroot; returns `dkms status`."""
    names = []
    for deb in build_debs().values():
        shutil.copy2(deb, root / "tmp" / deb.name)
        names.append(f"/tmp/{deb.name}")
    with Chroot(root) as ch:
        for attempt in (1, 2):
            rc = ch.run("dpkg -i " + " ".join(names), log)
            assert rc == 0, f"dpkg -i (run {attempt}) exited {rc}:\n" \
                + log.read_text(errors="replace")[-4000:]
        status = subprocess.run(["chroot", str(root), "dkms", "status", "-m", "vmdefrag"],
                                capture_output=True, text=True, check=True).stdout
        agent = subprocess.run(["chroot", str(root), "vmdefrag-agent", "--version"],
                               capture_output=True, text=True)
    assert (agent.returncode, agent.stdout) == (0, f"vmdefrag-agent {version()}\n"), agent
    return status


def prepare_test_side(root):
    """The harness's pieces, not part of the install: vdf-testd (and a unit
    that starts it), memcheck, a hostname and an fstab."""
    sbin = root / "usr/local/sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUILD / "guest/vdf-testd", sbin / "vdf-testd")
    shutil.copy2(BUILD / "guest/memcheck", root / "usr/local/bin/memcheck")
    unit = root / "etc/systemd/system/vdf-testd.service"
    unit.write_text(TESTD_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "vdf-testd.service").symlink_to("/etc/systemd/system/vdf-testd.service")
    (root / "etc/hostname").write_text("vdfguest\n")
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")


def make_image(root, image):
    used = int(subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    size = used + 512 * MIB
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "vdfroot", "-d", str(root), str(image)],
                   check=True)


def session(d):
    return d.status("g")["g"]["session"]


def wait_session_ready(d, timeout):
    d.wait_for(lambda: session(d)["state"] == "ready"
               and "module" in session(d)["features"],
               "the agent started by systemd to say HELLO with the module", timeout)


def unit_prop(g, prop):
    return g.check(f"systemctl show -p {prop} --value vmdefrag-agent").strip()


def wait_guest(g, cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + \
            g.check("systemctl status vmdefrag-agent --no-pager; true")
        time.sleep(1)


def reclaim_works(g, d, mib):
    """A reclaim of `mib` MiB through the agent frees that much backing."""
    b0 = g.backing_bytes()
    p = d.ctl("reclaim", "g", f"{mib}M", "--wait", check=False)
    assert p.returncode == 0, (p.stdout, p.stderr, d.text()[-3000:])
    b1 = g.backing_bytes()
    assert b0 - b1 >= mib * MIB, (b0, b1, p.stdout)


@pytest.mark.timeout(1800)
def test_guest_install(workdir):
    for prog in ("guest/vdf-testd", "guest/memcheck", "daemon/vmdefragd",
                 "daemon/vmdefragctl"):
        if not (BUILD / prog).exists():
            pytest.skip(f"needs build/{prog} (make all)")
    t0 = time.monotonic()
    root = rootfs.extract(workdir / "root")
    kver = rootfs.kernel_release(root)
    log = BUILD / "test-logs/guest-install.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")

    # ---- install, as the README says -----------------------------------
    status = install(root, log)
    lines = [ln for ln in status.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(rf"vmdefrag/{re.escape(version())}, {re.escape(kver)}, "
                                         r"x86_64: installed", lines[0]), status
    ko = list((root / "lib/modules" / kver / "updates/dkms").glob("vmdefrag.ko*"))
    assert ko, "dkms install left no vmdefrag.ko in updates/dkms"
    deps = (root / "lib/modules" / kver / "modules.dep").read_text()
    assert "updates/dkms/vmdefrag.ko" in deps, "depmod did not see the module"
    unit = (root / "lib/systemd/system/vmdefrag-agent.service").read_text()
    assert "ExecStart=/usr/sbin/vmdefrag-agent" in unit, unit
    assert (root / "usr/sbin/vmdefrag-agent").exists()
    assert (root / "lib/udev/rules.d/90-vmdefrag-agent.rules").exists()
    prepare_test_side(root)

    image = workdir / "root.ext4"
    make_image(root, image)
    vmlinuz, initrd = workdir / f"vmlinuz-{kver}", workdir / f"initrd.img-{kver}"
    shutil.copy2(root / f"boot/vmlinuz-{kver}", vmlinuz)
    shutil.copy2(root / f"boot/initrd.img-{kver}", initrd)
    shutil.rmtree(root)
    t_install = time.monotonic() - t0

    # ---- boot; systemd starts the agent --------------------------------
    with RootfsGuest(image, vmlinuz, initrd, ram_mib=1024, fpr=False,
                     name="guestinstall", boot_timeout=600, daemon_monitor=True,
                     cmdline="root=/dev/vda rw net.ifnames=0 "
                             "systemd.show_status=1") as g:
        t_boot = time.monotonic() - t0 - t_install
        d = Daemon(workdir, [("g", g.daemon_qmp_socket, g.vdf_socket)])
        try:
            wait_session_ready(d, timeout=300)
            assert unit_prop(g, "ActiveState") == "active"
            assert g.check("lsmod").count("vmdefrag") >= 1
            modpath = g.check("modinfo -n vmdefrag").strip()
            assert "/updates/dkms/vmdefrag.ko" in modpath, modpath
            # systemd prints unit status on the console only until the boot
            # is finished: "Starting" is there, "Started" may come after
            assert re.search(r"Start(ing|ed) .*vmdefrag-agent\.service", g.console_text()), \
                g.console_text()[-3000:]
            assert "Started vmdefrag-agent.service" in g.check(
                "journalctl -b -u vmdefrag-agent --no-pager")

            # ---- data the guest must keep --------------------------------
            g.check("memcheck start --mib 64 --id a --seed 5", timeout=300)
            g.check("head -c 32M /dev/urandom >/dev/shm/data")
            digest = g.check("sha256sum </dev/shm/data").split()[0]
            g.populate_backing()

            # ---- reclaim and return --------------------------------------
            b0 = g.backing_bytes()
            p = d.ctl("reclaim", "g", "128M", "--wait", check=False)
            assert p.returncode == 0, (p.stdout, p.stderr, d.text()[-3000:])
            b1 = g.backing_bytes()
            assert b0 - b1 >= 128 * MIB, (b0, b1, p.stdout)
            g.check("memcheck verify --id a")
            p = d.ctl("return", "g", "128M", "--wait", check=False)
            assert p.returncode == 0, (p.stdout, p.stderr, d.text()[-3000:])
            b2 = g.backing_bytes()
            assert b2 - b1 >= 128 * MIB - 4 * MIB, (b1, b2, p.stdout)
            g.check("memcheck verify --id a")
            assert g.check("sha256sum </dev/shm/data").split()[0] == digest

            # ---- the agent dies: systemd restarts it ---------------------
            pid = unit_prop(g, "MainPID")
            g.check(f"kill -KILL {pid}")
            wait_guest(g, lambda: unit_prop(g, "NRestarts") == "1"
                       and unit_prop(g, "MainPID") not in (pid, "0"),
                       "systemd to restart the agent")
            wait_session_ready(d, timeout=120)
            assert unit_prop(g, "ActiveState") == "active"
            reclaim_works(g, d, 32)
            g.check("memcheck verify --id a")

            # ---- the port goes and comes back: udev and BindsTo ----------
            pid = unit_prop(g, "MainPID")
            g.qmp("device_del", id=PORT_ID)
            wait_guest(g, lambda: unit_prop(g, "ActiveState") == "inactive",
                       "the unit to stop with its port")
            assert unit_prop(g, "Result") == "success"
            assert g.run(f"test -e /dev/virtio-ports/{VDF_PORT}")[0] != 0
            deadline = time.monotonic() + 30
            # HMP: the port's "name" property cannot pass through
            # Guest.qmp(name, **args); an error comes back as text
            while True:
                err = g.hmp("device_add virtserialport,bus=vser0.0,chardev=vdf,"
                            f"name={VDF_PORT},id={PORT_ID}").strip()
                if not err:
                    break
                # the old port's unplug may still be finishing
                assert time.monotonic() < deadline, err
                time.sleep(0.5)
            wait_guest(g, lambda: unit_prop(g, "ActiveState") == "active"
                       and unit_prop(g, "MainPID") not in (pid, "0"),
                       "udev to start the agent on the new port")
            wait_session_ready(d, timeout=120)
            reclaim_works(g, d, 32)
            g.check("memcheck verify --id a")
            assert g.check("sha256sum </dev/shm/data").split()[0] == digest
            journal = g.check("journalctl -b -u vmdefrag-agent --no-pager; true")
        finally:
            rc = d.close()
            (BUILD / "test-logs/vmdefragd-guest-install.log").write_text(d.text())
        assert rc == 0, d.text()[-3000:]
    (BUILD / "test-logs/guest-install.journal").write_text(journal)
    print(f"install {t_install:.0f} s, boot {t_boot:.0f} s, "
          f"total {time.monotonic() - t0:.0f} s")


def test_rootfs_cache_key_follows_packages(monkeypatch):
    """A change of the package list must not reuse the cached tarball."""
    before = rootfs.tarball()
    monkeypatch.setattr(rootfs, "PACKAGES", rootfs.PACKAGES + ["hello"])
    assert rootfs.tarball() != before
    monkeypatch.setattr(rootfs, "PACKAGES", list(reversed(rootfs.PACKAGES[:-1])))
    assert rootfs.tarball() == before, "the order of the list is not a change"
