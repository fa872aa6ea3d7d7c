"""Two libvirt "hosts" on this machine, and a domain migrated between them.

    with NsLibvirtd(workdir / "a", "vdf-src") as a, NsLibvirtd(workdir / "b", "vdf-dst") as b:
        with NsDomainGuest(kernel, a, ram_mib=512) as g:     # runs on a
            libvirt_migrate(g, b, postcopy=True)              # now runs on b
            g.check("memcheck verify --id a")

libvirt refuses a migration to the host it runs on: the destination's
migration cookie carries its hostname and host UUID, and the source
compares both with its own.  NsLibvirtd therefore runs a libvirtd and its
virtlogd of their own in a private mount and UTS namespace (unshare -m -u):
a hostname of its own, a host_uuid of its own in a private copy of
/etc/libvirt, and private /run/libvirt, /var/lib/libvirt, /var/log/libvirt,
/var/cache/libvirt (bind mounts of directories under its workdir), pid
files under its workdir.  Nothing of the machine's own libvirt is touched:
the hook is installed in the private /etc/libvirt/hooks/qemu.d only.

Clients reach it from outside the namespace through the socket's real
path: qemu+unix:///system?socket=WORKDIR/root/run/libvirt/libvirt-sock.
Whatever must see its files by their usual paths (a vmdefragd --libvirt
reads /run/libvirt/qemu/NAME.pid and the channel under /var/lib/libvirt)
runs inside through ns_prefix() (nsenter -m -u).  Migration data goes over
a TCP port on 127.0.0.1 (--migrateuri).

QEMU runs as root there, with its capabilities (qemu.conf in the private
copy): Debian's libvirt 9.0 runs it as libvirt-qemu, and QEMU 7.2 cannot
open a userfaultfd without CAP_SYS_PTRACE while vm.unprivileged_userfaultfd
is 0, so the destination refuses post-copy ("Postcopy is not supported").
This avoids changing the machine's sysctl for a test.

NsDomainGuest is harness.libvirtd.DomainGuest on an NsLibvirtd, transient
(virsh create): after a migration it exists only where it runs.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from . import initramfs
from .guest import LOGS, GuestError
from .libvirtd import (HOOK_SRC, DomainGuest, LibvirtdBase, LibvirtError,
                       _DomainProc, _pdeathsig_term, stop_proc, wait_socket)

PRIVATE = ["run/libvirt", "var/lib/libvirt", "var/log/libvirt", "var/cache/libvirt",
           "etc/libvirt"]

# Runs in the new namespaces: bind mounts, hostname, virtlogd, then libvirtd
# in place of the shell (its pid is the Popen's).
NS_SCRIPT = """set -e
R=$1
for d in %s; do mount --bind "$R/$d" "/$d"; done
hostname "$2"
virtlogd -p "$R/virtlogd.pid" >>"$R/../virtlogd.log" 2>&1 &
i=0
while [ ! -S /run/libvirt/virtlogd-sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
exec libvirtd -p "$R/libvirtd.pid"
""" % " ".join(PRIVATE)


class NsLibvirtd(LibvirtdBase):
    def __init__(self, workdir, hostname, hook=True, path_prepend=()):
        self.workdir = Path(workdir)
        self.root = self.workdir / "root"
        self.hostname = hostname
        self.host_uuid = str(uuid.uuid4())
        self.hook = hook
        self.path_prepend = [str(p) for p in path_prepend]
        self.sock = self.root / "run/libvirt/libvirt-sock"
        self.uri = f"qemu+unix:///system?socket={self.sock}"
        self.proc = None
        self.prepared = False

    def _prepare(self):
        if self.prepared:
            return
        self.prepared = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        for d in PRIVATE:
            (self.root / d).mkdir(parents=True, exist_ok=True)
        etc = self.root / "etc/libvirt"
        shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True, symlinks=True)
        # nothing autostarted: no network, no domain of the machine's
        for auto in etc.glob("**/autostart/*"):
            auto.unlink()
        with open(etc / "libvirtd.conf", "a") as f:
            f.write(f'\nhost_uuid = "{self.host_uuid}"\n')
        with open(etc / "qemu.conf", "a") as f:
            f.write('\nuser = "root"\ngroup = "root"\n'
                    "clear_emulator_capabilities = 0\n")
        for d in ("var/lib/libvirt/qemu", "var/log/libvirt/qemu",
                  "var/cache/libvirt/qemu"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        if self.hook:
            hooks = etc / "hooks/qemu.d"
            hooks.mkdir(parents=True, exist_ok=True)
            shutil.copy(HOOK_SRC, hooks / "vmdefrag")
            os.chmod(hooks / "vmdefrag", 0o755)

    def add_hook(self, name, text):
        """Another qemu hook beside vmdefrag's (before start())."""
        self._prepare()
        path = self.root / "etc/libvirt/hooks/qemu.d" / name
        path.write_text(text)
        path.chmod(0o755)

    def start(self):
        self._prepare()
        env = dict(os.environ)
        env["PATH"] = ":".join(self.path_prepend + [env.get("PATH", "/usr/bin:/bin")])
        self.proc = subprocess.Popen(
            ["unshare", "-m", "-u", "--propagation", "private",
             "sh", "-c", NS_SCRIPT, "ns-libvirtd", str(self.root), self.hostname],
            stdin=subprocess.DEVNULL, env=env,
            stdout=open(self.workdir / "libvirtd.log", "ab"),
            stderr=subprocess.STDOUT, preexec_fn=_pdeathsig_term)
        wait_socket(self.sock, self.proc, f"libvirtd ({self.hostname})", self.log_text)
        self.virsh("list", "--all")     # waits for the qemu driver
        got = self.virsh("hostname").stdout.strip()
        if got != self.hostname:
            raise LibvirtError(f"libvirtd says hostname {got!r}, not {self.hostname!r}")

    def virsh(self, *args, check=True, timeout=120):
        p = subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise LibvirtError(f"virsh ({self.hostname}) {' '.join(args)} exited "
                               f"{p.returncode}: {p.stderr.strip()}")
        return p

    def ns_prefix(self):
        """A command prefix that runs a program in this libvirtd's namespaces."""
        return ["nsenter", "-t", str(self.proc.pid), "-m", "-u"]

    def domain_pid(self, name):
        try:
            return int((self.root / f"run/libvirt/qemu/{name}.pid").read_text())
        except (OSError, ValueError):
            return None

    def _kill_pidfile(self, path):
        try:
            pid = int(Path(path).read_text())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # QEMU outlives libvirtd: no domain may stay behind
            p = self.virsh("list", "--name", check=False, timeout=30)
            for name in p.stdout.split():
                self.virsh("destroy", name, check=False, timeout=60)
            stop_proc(self.proc)
        self._kill_pidfile(self.root / "virtlogd.pid")
        LOGS.mkdir(parents=True, exist_ok=True)
        for src, dst in ((self.workdir / "libvirtd.log", f"libvirtd-{self.hostname}.log"),):
            if src.exists():
                shutil.copy(src, LOGS / dst)
        for log in (self.root / "var/log/libvirt/qemu").glob("*.log"):
            shutil.copy(log, LOGS / f"{self.hostname}-{log.name}")
        self.proc = None


class NsDomainGuest(DomainGuest):
    """DomainGuest on an NsLibvirtd, transient, movable by libvirt_migrate()."""

    def __init__(self, kernel, libvirtd, **kw):
        super().__init__(kernel, libvirtd, **kw)
        self.hops = 0

    @property
    def pid(self):
        return self.libvirtd.domain_pid(self.name)

    def domain_xml(self):
        """DomainGuest's, with free page reporting as Guest(fpr=) says: the
        pages a guest has reported stay flagged as reported after a
        migration, so the holes they left on the source come back backed
        on the destination for good, whatever vmdefrag does."""
        xml = super().domain_xml()
        if not self.fpr:
            xml = xml.replace('freePageReporting="on"', 'freePageReporting="off"')
        return xml

    def start(self):
        initrd = initramfs.build(self.kernel)
        self.workdir = Path(tempfile.mkdtemp(prefix="vdf-virt-"))
        shutil.copy(f"/boot/vmlinuz-{self.kernel}", self.workdir / "vmlinuz")
        shutil.copy(initrd, self.workdir / "initrd")
        self.console_log = self.workdir / "console.log"
        self.ctl_socket = self.workdir / "ctl.sock"
        self.qemu_log = None
        (self.workdir / "domain.xml").write_text(self.domain_xml())
        self.defined = True
        self.proc = _DomainProc(self)
        self.libvirtd.virsh("create", str(self.workdir / "domain.xml"))
        self._await_ready()

    def destroy(self):
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        self.libvirtd.virsh("destroy", self.name, check=False)

    def live_xml(self):
        return self.libvirtd.virsh("dumpxml", self.name).stdout

    def stop(self):
        if not self.defined:
            return
        self.destroy()
        self.defined = False
        LOGS.mkdir(parents=True, exist_ok=True)
        for log in self.workdir.glob("console*.log"):
            shutil.copy(log, LOGS / f"{self.name}.{log.name}")
        self.console = self.console_text()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _job_data_processed(lv, name):
    p = lv.virsh("domjobinfo", name, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("Data processed:"):
            return line
    return None


def libvirt_migrate(g, dst, postcopy=False, port=49152, bandwidth_mib=None,
                    during=None, timeout=600, expect_failure=False):
    """Migrates NsDomainGuest g live from its libvirtd to `dst` (virsh
    migrate --live [--postcopy] DOMAIN DST-URI --migrateuri tcp://127.0.0.1:PORT
    --xml: the destination's control channel and console get paths of
    their own).  postcopy: `virsh migrate-postcopy` once the precopy has
    started.  during(), if given, runs once while the migration runs on the
    source.  The control channel of the destination is connected before the
    migration ends, so the guest keeps one open port across the hop.
    Returns the seconds virsh migrate took.  expect_failure: during()
    makes it fail (virsh domjobabort); returns virsh's output then, the
    guest stays where it was."""
    src = g.libvirtd
    g.hops += 1
    ctl = g.workdir / f"ctl-{g.hops}.sock"
    console = g.workdir / f"console-{g.hops}.log"
    xml = src.virsh("dumpxml", "--migratable", g.name).stdout
    xml = xml.replace(str(g.ctl_socket), str(ctl))
    xml = xml.replace(str(g.console_log), str(console))
    xml_path = g.workdir / f"migrate-{g.hops}.xml"
    xml_path.write_text(xml)
    args = ["virsh", "-c", src.uri, "migrate", "--live", g.name, dst.uri,
            "--migrateuri", f"tcp://127.0.0.1:{port}", "--xml", str(xml_path)]
    if postcopy:
        args.append("--postcopy")
    if bandwidth_mib:
        args += ["--bandwidth", str(bandwidth_mib)]
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=_pdeathsig_term)
    out = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    deadline = t0 + timeout
    new_ctl = None
    ran = during is None
    switched = not postcopy
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise GuestError(f"virsh migrate did not end in {timeout} s")
            if new_ctl is None and ctl.exists():
                new_ctl = g._connect(ctl, deadline)
            if new_ctl is not None and _job_data_processed(src, g.name):
                if not ran:
                    during()
                    ran = True
                if not switched:
                    src.virsh("migrate-postcopy", g.name)
                    switched = True
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(5)
    took = time.monotonic() - t0
    if expect_failure:
        if new_ctl is not None:
            new_ctl.close()
        if proc.returncode == 0:
            raise GuestError("the migration completed, expected it to fail")
        return "".join(out)
    if proc.returncode != 0:
        if new_ctl is not None:
            new_ctl.close()
        raise LibvirtError(f"virsh migrate exited {proc.returncode}: {''.join(out)}")
    if not ran or not switched:
        raise GuestError(f"the migration ended before during() or the switch to "
                         f"post-copy could run ({took:.1f} s)")
    if new_ctl is None:
        new_ctl = g._connect(ctl, time.monotonic() + 30)
    g._ctl.close()
    g._ctl = new_ctl
    g._ctl_buf = b""
    g.libvirtd = dst
    g.ctl_socket = ctl
    g.console_log = console
    return took


__all__ = ["NsLibvirtd", "NsDomainGuest", "libvirt_migrate"]
