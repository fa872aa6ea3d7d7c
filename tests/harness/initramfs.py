"""Builds the test guest's initramfs for one Debian kernel.

The image holds busybox (static), the virtio modules the kernel does not
build in (virtio_pci, virtio_console, virtio_balloon, virtio_mem and their
dependencies; virtio_blk and ext4 are shipped too, for harness.disk, but
not loaded at boot; resolved from modules.dep and decompressed from .ko.xz where
the kernel ships them compressed), vmdefrag.ko built for that kernel, the
guest workloads, vmdefrag-agent and the test client with their shared
libraries, and /init.  /init mounts the pseudo filesystems, loads the virtio
modules (not vmdefrag.ko: tests load it), and execs vdf-testd, which serves
the harness's commands.

Images are cached under build/initramfs/<release>/ and rebuilt when any
input is newer than the image.
"""
import fcntl
import lzma
import os
import shutil
import stat
import subprocess
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("BUILD", TOP / "build"))
BUSYBOX = Path("/bin/busybox")
WANTED_MODULES = ["virtio_pci", "virtio_console", "virtio_balloon", "virtio_mem"]
# Shipped but not loaded by /init: harness.disk loads them for the tests
# that attach a disk (lib/modules/disk, in the order of /etc/disk-modules).
# ext4 asks the crypto API for crc32c at mount even without metadata_csum;
# without modprobe in the guest, the provider is shipped and loaded first
# (where the kernel has it as a module).
DISK_MODULES = ["virtio_blk", "crc32c_generic", "ext4"]
DISK_OPTIONAL = {"crc32c_generic"}

INIT = """#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=90%,mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
echo 1 > /proc/sys/kernel/panic_on_oops
while read -r m; do
	insmod "/lib/modules/virtio/$m.ko" || echo "init: insmod $m failed"
done < /etc/virtio-modules
echo "vdf-init: $(uname -r) up, starting vdf-testd"
exec /sbin/vdf-testd
"""

# (source under build/, destination in the guest)
GUEST_PROGRAMS = [
    ("guest/vdf-testd", "sbin/vdf-testd"),
    ("guest/cachewitness", "usr/bin/cachewitness"),
    ("guest/fschurn", "usr/bin/fschurn"),
    ("guest/fragment", "usr/bin/fragment"),
    ("guest/memcheck", "usr/bin/memcheck"),
    ("guest/phased", "usr/bin/phased"),
    ("guest/slabtree", "usr/bin/slabtree"),
    ("guest/vdfnl", "usr/bin/vdfnl"),
    ("agent/vmdefrag-agent", "usr/sbin/vmdefrag-agent"),
]


# A kernel `make guest-kernel` built (build-aux/guest-kernel.sh) lives in
# build/guest-kernel/<release>/: vmlinuz and lib/modules/<release>/.
GUEST_KERNELS = BUILD / "guest-kernel"


def series_kernel():
    """The release `make guest-kernel` built last (the movable-slab
    series' kernel), or None when it or its vmdefrag.ko is missing."""
    rel = GUEST_KERNELS / "release"
    if not rel.exists():
        return None
    release = rel.read_text().strip()
    if not (GUEST_KERNELS / release / "vmlinuz").exists() or \
       not (BUILD / "module" / release / "vmdefrag.ko").exists():
        return None
    return release


def module_dir(release):
    """The kernel's modules: build/guest-kernel's, else /lib/modules'."""
    own = GUEST_KERNELS / release / "lib/modules" / release
    return own if own.is_dir() else Path("/lib/modules") / release


def kernel_image(release):
    """The kernel image QEMU boots for `release`."""
    own = GUEST_KERNELS / release / "vmlinuz"
    return own if own.exists() else Path(f"/boot/vmlinuz-{release}")


def _module_index(release):
    moddir = module_dir(release)
    deps = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        deps[name] = (moddir / path, [Path(p).name.split(".ko")[0].replace("-", "_")
                                      for p in rest.split()])
    builtin = set()
    bfile = moddir / "modules.builtin"
    if bfile.exists():
        for line in bfile.read_text().splitlines():
            builtin.add(Path(line).name.split(".ko")[0].replace("-", "_"))
    return deps, builtin


def virtio_modules(release, wanted=WANTED_MODULES, skip=()):
    """[(name, path)] to insmod in order, dependencies first; modules in
    `skip` (already loaded by then) are left out."""
    deps, builtin = _module_index(release)
    order, seen = [], set(skip)

    def visit(name):
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in deps:
            raise RuntimeError(f"kernel {release} has no module {name}")
        path, needs = deps[name]
        for dep in reversed(needs):
            visit(dep)
        order.append((name, path))

    for name in wanted:
        if name in DISK_OPTIONAL and name not in deps:
            continue
        visit(name)
    return order


def _copy_module(src, dst):
    data = src.read_bytes()
    if src.suffix == ".xz":
        data = lzma.decompress(data)
    elif src.suffix == ".zst":
        raise RuntimeError(f"{src}: zstd-compressed modules are not supported")
    dst.write_bytes(data)


def _shared_libs(binary):
    """Absolute paths of the shared objects a dynamic binary loads."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if out.returncode != 0 or "not a dynamic executable" in out.stdout + out.stderr:
        return []
    libs = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1:
            path = parts[parts.index("=>") + 1]
            if path.startswith("/"):
                libs.append(path)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def _inputs(release):
    paths = [BUSYBOX, Path(__file__), BUILD / "module" / release / "vmdefrag.ko",
             module_dir(release) / "modules.dep"]
    paths += [BUILD / src for src, _ in GUEST_PROGRAMS]
    return [p for p in paths if p.exists()]


def build(release):
    """Returns the path of the initramfs for `release`, building it if stale.

    Concurrent test runs share build/: a lock file serialises the check and
    the rebuild, so one run never boots an image another is rewriting.
    """
    outdir = BUILD / "initramfs" / release
    outdir.mkdir(parents=True, exist_ok=True)
    with open(outdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(release, outdir)


def _build_locked(release, outdir):
    image = outdir / "initrd.cpio"
    if image.exists():
        newest = max(p.stat().st_mtime for p in _inputs(release))
        if image.stat().st_mtime >= newest:
            return image

    root = outdir / "root"
    if root.exists():
        shutil.rmtree(root)
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev",
              "tmp", "run", "lib/modules/virtio", "lib64"]:
        (root / d).mkdir(parents=True, exist_ok=True)

    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True,
                             text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and not (root / "bin" / applet).exists():
            (root / "bin" / applet).symlink_to("busybox")

    names = []
    for name, path in virtio_modules(release):
        _copy_module(path, root / "lib/modules/virtio" / f"{name}.ko")
        names.append(name)
    (root / "etc/virtio-modules").write_text("".join(n + "\n" for n in names))
    (root / "lib/modules/disk").mkdir()
    disk = virtio_modules(release, DISK_MODULES, skip=names)
    for name, path in disk:
        _copy_module(path, root / "lib/modules/disk" / f"{name}.ko")
    (root / "etc/disk-modules").write_text("".join(n + "\n" for n, _ in disk))

    ko = BUILD / "module" / release / "vmdefrag.ko"
    if ko.exists():
        shutil.copy2(ko, root / "lib/modules/vmdefrag.ko")

    for src, dst in GUEST_PROGRAMS:
        src = BUILD / src
        if not src.exists():
            continue
        shutil.copy2(src, root / dst)
        for lib in _shared_libs(src):
            target = root / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), target)

    (root / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    init = root / "init"
    init.write_text(INIT)
    init.chmod(init.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    tmp = image.with_suffix(".tmp")
    files = subprocess.run(["find", ".", "-mindepth", "1"], cwd=root,
                           capture_output=True, check=True).stdout
    with open(tmp, "wb") as f:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--owner=0:0"],
                       cwd=root, input=files, stdout=f, check=True)
    tmp.replace(image)
    return image
