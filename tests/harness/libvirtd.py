"""A real libvirtd for tests, and a test guest run as a libvirt domain.

    with Libvirtd(workdir, hook=True, path_prepend=[bindir]) as lv:
        with DomainGuest(kernel, lv, ram_mib=640) as g:   # defined + started
            g.check("uname -r")          # same control port as Guest
            g.pid                        # the QEMU libvirt started
            g.destroy(); g.start_domain()

Libvirtd uses a libvirtd that already runs (its socket answers) and then
leaves it alone.  Otherwise it prepares what Debian's packaging would have
(user and group libvirt-qemu via the package's own adduser logic, /run/libvirt,
/var/log/libvirt/qemu, /var/lib/libvirt/qemu, /var/cache/libvirt/qemu),
installs the vmdefrag qemu hook into /etc/libvirt/hooks/qemu.d/ *before*
the daemon starts (libvirtd only looks for hooks at startup), starts
virtlogd (domain logs go through it) and libvirtd as children of the test,
and on exit stops both by pid and removes the hook it installed.  A hook
file that was already there is never touched.

libvirtd passes its hooks only PATH, HOME and a few such variables, so a
test reaches its own vmdefragd from the hook by putting a `vmdefragctl`
wrapper first in libvirtd's PATH (path_prepend).

DomainGuest is harness.guest.Guest run by libvirt: a transient-free,
persistent domain of type 'qemu' (TCG) with the harness's kernel and
initramfs (copied where QEMU, running as libvirt-qemu, can read them), the
elements of configs/libvirt/domain-snippet.xml merged in with ElementTree,
the harness's control port org.vmdefrag.test.0 as a second unix channel and
the serial console in a file.  The channel org.vmdefrag.0 has no path in
the XML: libvirt chooses it, and vmdefragd must find it in the live XML.
"""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from . import initramfs, otheruser
from .guest import CTL_PORT, LOGS, Guest, GuestError
from .lifecycle import StartStop

TOP = initramfs.TOP
URI = "qemu:///system"
SOCK = Path("/run/libvirt/libvirt-sock")
VIRTLOGD_SOCK = Path("/run/libvirt/virtlogd-sock")
HOOK_SRC = TOP / "configs/libvirt/hooks/qemu.d/vmdefrag"
HOOK_DST = Path("/etc/libvirt/hooks/qemu.d/vmdefrag")
SNIPPET = TOP / "configs/libvirt/domain-snippet.xml"
RUN_DIRS = ["/run/libvirt", "/var/log/libvirt/qemu", "/var/lib/libvirt/qemu",
            "/var/cache/libvirt/qemu"]


class LibvirtError(Exception):
    pass


def _pdeathsig_term():
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM, 0, 0, 0)


def _accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_socket(path, proc, what, log_text, timeout=60):
    """Waits until the daemon `proc` (called `what` in errors) accepts on
    the unix socket `path`; raises LibvirtError with the tail of
    log_text() if it exits first, or if it takes over `timeout` s."""
    deadline = time.monotonic() + timeout
    while not _accepts(path):
        if proc.poll() is not None:
            raise LibvirtError(f"{what} exited {proc.returncode}:\n"
                               + log_text()[-3000:])
        if time.monotonic() > deadline:
            raise LibvirtError(f"{what} did not open {path}")
        time.sleep(0.1)


def stop_proc(proc):
    """SIGTERM to a daemon we started, SIGKILL if it takes over 20 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def virsh(*args, check=True, timeout=120):
    p = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise LibvirtError(f"virsh {' '.join(args)} exited {p.returncode}: "
                           f"{p.stderr.strip()}")
    return p


def ensure_qemu_user():
    """User and group libvirt-qemu as libvirt-daemon-system's postinst makes them."""
    if subprocess.run(["getent", "passwd", "libvirt-qemu"],
                      capture_output=True).returncode != 0:
        for grp in ("libvirt", "kvm"):
            if subprocess.run(["getent", "group", grp], capture_output=True).returncode:
                subprocess.run(["addgroup", "--quiet", "--system", grp], check=True)
        subprocess.run(["adduser", "--quiet", "--system", "--ingroup", "kvm",
                        "--disabled-login", "--disabled-password",
                        "--home", "/var/lib/libvirt", "--no-create-home",
                        "--gecos", "Libvirt Qemu", "libvirt-qemu"], check=True)
    if subprocess.run(["getent", "group", "libvirt-qemu"],
                      capture_output=True).returncode != 0:
        subprocess.run(["addgroup", "--quiet", "--system", "libvirt-qemu"], check=True)
        subprocess.run(["adduser", "--quiet", "libvirt-qemu", "libvirt-qemu"], check=True)


class LibvirtdBase(StartStop):
    """What Libvirtd and libvirt_ns.NsLibvirtd share: leaving the `with`
    stops the daemon; its output goes to workdir/libvirtd.log."""

    def __exit__(self, *exc):
        self.stop()
        return False

    def log_text(self):
        try:
            return (self.workdir / "libvirtd.log").read_text(errors="replace")
        except OSError:
            return ""


class Libvirtd(LibvirtdBase):
    def __init__(self, workdir, hook=True, path_prepend=()):
        self.workdir = Path(workdir)
        self.hook = hook
        self.path_prepend = [str(p) for p in path_prepend]
        self.owned = False
        self.hook_installed = False
        self.hook_dir_made = False
        self.libvirtd = None
        self.virtlogd = None

    @property
    def hook_ready(self):
        """The hook libvirtd runs is this tree's (installed by start(), or an
        identical copy already there) and reaches the test's daemon: only a
        libvirtd started here has the test's PATH."""
        try:
            same = HOOK_DST.read_bytes() == HOOK_SRC.read_bytes()
        except OSError:
            return False
        return self.owned and same and os.access(HOOK_DST, os.X_OK)

    def start(self):
        if _accepts(SOCK):
            return          # someone else's libvirtd: use it, never stop it
        self.owned = True
        ensure_qemu_user()
        for d in RUN_DIRS:
            os.makedirs(d, exist_ok=True)
        if self.hook and not HOOK_DST.exists():
            if not HOOK_DST.parent.exists():
                HOOK_DST.parent.mkdir(parents=True)
                self.hook_dir_made = True
            shutil.copy(HOOK_SRC, HOOK_DST)
            os.chmod(HOOK_DST, 0o755)
            self.hook_installed = True
        if not _accepts(VIRTLOGD_SOCK):
            self.virtlogd = subprocess.Popen(
                ["virtlogd"], stdin=subprocess.DEVNULL,
                stdout=open(self.workdir / "virtlogd.log", "ab"),
                stderr=subprocess.STDOUT, preexec_fn=_pdeathsig_term)
            wait_socket(VIRTLOGD_SOCK, self.virtlogd, "virtlogd", self.log_text)
        self._start_libvirtd()

    def _start_libvirtd(self):
        env = dict(os.environ)
        env["PATH"] = ":".join(self.path_prepend + [env.get("PATH", "/usr/bin:/bin")])
        self.libvirtd = subprocess.Popen(
            ["libvirtd"], stdin=subprocess.DEVNULL, env=env,
            stdout=open(self.workdir / "libvirtd.log", "ab"),
            stderr=subprocess.STDOUT, preexec_fn=_pdeathsig_term)
        wait_socket(SOCK, self.libvirtd, "libvirtd", self.log_text)
        # the socket answers before the qemu driver is up; a call waits
        virsh("list", "--all")

    def stop_libvirtd(self):
        """Stops our libvirtd only (domains keep running; virtlogd stays)."""
        if not self.owned:
            raise LibvirtError("not our libvirtd: will not stop it")
        stop_proc(self.libvirtd)

    def start_libvirtd(self):
        if not self.owned:
            raise LibvirtError("not our libvirtd: will not start it")
        self._start_libvirtd()

    def restart(self):
        self.stop_libvirtd()
        self.start_libvirtd()

    def stop(self):
        if self.owned:
            stop_proc(self.libvirtd)
            stop_proc(self.virtlogd)
        if self.hook_installed:
            try:
                HOOK_DST.unlink()
            except FileNotFoundError:
                pass
            self.hook_installed = False
            if self.hook_dir_made:
                try:
                    HOOK_DST.parent.rmdir()
                except OSError:
                    pass
                self.hook_dir_made = False
        LOGS.mkdir(parents=True, exist_ok=True)
        if (self.workdir / "libvirtd.log").exists():
            shutil.copy(self.workdir / "libvirtd.log", LOGS / "libvirtd.log")


class _DomainProc:
    """What Guest's control channel asks of self.proc: is QEMU still there."""

    def __init__(self, guest):
        self.guest = guest
        self.returncode = None

    def poll(self):
        pid = self.guest.pid
        if pid and os.path.exists(f"/proc/{pid}"):
            return None
        self.returncode = -1
        return -1


def merge_snippet(domain, snippet_path=SNIPPET):
    """Merges each child of the snippet's <domain> into `domain`: into the
    element of the same tag if there is one (devices), else appended.  A
    device the snippet brings replaces none (memballoon: the domain here
    has none)."""
    snippet = ET.parse(snippet_path).getroot()
    for child in snippet:
        mine = domain.find(child.tag)
        if mine is None:
            domain.append(child)
        else:
            for sub in child:
                mine.append(sub)


class DomainGuest(Guest):
    """The harness guest as a libvirt domain.  anonymous_ram=True leaves out
    the snippet's <memoryBacking>: libvirt's default private anonymous RAM,
    what most existing domains have (vmdefrag's hint backend)."""

    def __init__(self, kernel, libvirtd, ram_mib=640, name=None,
                 anonymous_ram=False, **kw):
        super().__init__(kernel, ram_mib=ram_mib, **kw)
        self.anonymous_ram = anonymous_ram
        self.libvirtd = libvirtd
        self.name = name or f"vdf-virt-{os.getpid()}"
        self.defined = False

    @property
    def pid(self):
        try:
            return int(Path(f"/run/libvirt/qemu/{self.name}.pid").read_text())
        except (OSError, ValueError):
            return None

    def domain_xml(self):
        w = self.workdir
        d = ET.Element("domain", type="qemu")
        ET.SubElement(d, "name").text = self.name
        ET.SubElement(d, "memory", unit="MiB").text = str(self.ram_mib)
        ET.SubElement(d, "vcpu").text = str(self.smp)
        os_ = ET.SubElement(d, "os")
        ET.SubElement(os_, "type", arch="x86_64", machine="q35").text = "hvm"
        ET.SubElement(os_, "kernel").text = str(w / "vmlinuz")
        ET.SubElement(os_, "initrd").text = str(w / "initrd")
        ET.SubElement(os_, "cmdline").text = (
            "console=ttyS0 rdinit=/init panic=-1 loglevel=4 mitigations=off "
            + self.cmdline)
        for ev in ("on_poweroff", "on_reboot", "on_crash"):
            ET.SubElement(d, ev).text = "destroy"
        dev = ET.SubElement(d, "devices")
        ET.SubElement(dev, "emulator").text = "/usr/bin/qemu-system-x86_64"
        ser = ET.SubElement(dev, "serial", type="file")
        ET.SubElement(ser, "source", path=str(w / "console.log"))
        ET.SubElement(ser, "target", port="0")
        ch = ET.SubElement(dev, "channel", type="unix")
        ET.SubElement(ch, "source", mode="bind", path=str(w / "ctl.sock"))
        ET.SubElement(ch, "target", type="virtio", name=CTL_PORT)
        merge_snippet(d)
        if self.anonymous_ram:
            d.remove(d.find("memoryBacking"))
        return ET.tostring(d, encoding="unicode")

    def start(self):
        initrd = initramfs.build(self.kernel)
        # QEMU runs as libvirt-qemu: it reads the copies of the kernel and
        # the initramfs and binds ctl.sock here, wherever the checkout is
        self.workdir = Path(tempfile.mkdtemp(prefix="vdf-virt-",
                                             dir=otheruser.reachable_base()))
        os.chmod(self.workdir, 0o777)
        shutil.copy(f"/boot/vmlinuz-{self.kernel}", self.workdir / "vmlinuz")
        shutil.copy(initrd, self.workdir / "initrd")
        for f in ("vmlinuz", "initrd"):
            os.chmod(self.workdir / f, 0o644)
        self.console_log = self.workdir / "console.log"
        self.ctl_socket = self.workdir / "ctl.sock"
        self.qemu_log = None
        (self.workdir / "domain.xml").write_text(self.domain_xml())
        virsh("define", str(self.workdir / "domain.xml"))
        self.defined = True
        self.proc = _DomainProc(self)
        self.start_domain()

    def start_domain(self):
        """virsh start, then the harness's control port as Guest.start has it."""
        virsh("start", self.name)
        self._await_ready()

    def _await_ready(self):
        """Connects the harness's control port of the domain just started
        and waits for the guest's READY greeting."""
        self._ctl_buf = b""
        deadline = time.monotonic() + self.boot_timeout
        self._ctl = self._connect(self.ctl_socket, deadline)
        line = self._read_line(deadline)
        if not line.startswith(b"READY "):
            raise GuestError(f"unexpected greeting {line!r}")

    def destroy(self):
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        virsh("destroy", self.name, check=False)

    def live_xml(self):
        return virsh("dumpxml", self.name).stdout

    def stop(self):
        if not self.defined:
            return
        self.destroy()
        virsh("undefine", self.name, check=False)
        self.defined = False
        LOGS.mkdir(parents=True, exist_ok=True)
        if self.console_log.exists():
            shutil.copy(self.console_log, LOGS / f"{self.name}.console.log")
        qlog = Path(f"/var/log/libvirt/qemu/{self.name}.log")
        if qlog.exists():
            shutil.copy(qlog, LOGS / f"{self.name}.qemu.log")
        self.console = self.console_text()
        shutil.rmtree(self.workdir, ignore_errors=True)
