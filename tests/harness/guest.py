"""Guest: one real Debian kernel booted under QEMU for a test.

    with Guest(kernel, ram_mib=1024, fpr=True) as g:
        status, out = g.run("cat /proc/buddyinfo")
        g.check("memcheck run --mib 64")          # raises on non-zero exit
        g.backing_bytes(), g.rss(), g.huge_mapped_bytes()

The guest's RAM is a memory-backend-memfd with share=on (backend="memfd",
what vmdefrag's shared backend reclaims from), a memory-backend-file with
share=on and align=2M on a private tmpfs mounted huge=within_size
(backend="tmpfs": the shared backend with guest RAM QEMU maps with 2 MiB
PMDs, which QEMU 7.2 does not do for a memfd), or anonymous memory
(backend="anon", the hint backend).  Devices: virtio-serial with the
control port org.vmdefrag.test.0 (served by vdf-testd in the guest) and the
vmdefrag port org.vmdefrag.0 (host side: `vdf_socket`), virtio-balloon with
free page reporting switchable, QMP on `qmp_socket` (the harness's), with
daemon_monitor=True a second QMP monitor on `daemon_qmp_socket` for
vmdefragd (a QMP server takes one client at a time), serial console to
`console_log`.

QEMU binary: the `qemu` argument, else $VMDEFRAG_QEMU, else
qemu-system-x86_64 from PATH (Debian's /usr/bin one), so the whole suite
runs against a patched build with VMDEFRAG_QEMU=build/qemu/qemu-system-x86_64
and a migration can go between two different binaries.

Accelerator: TCG, unless VMDEFRAG_ACCEL=kvm is set or a probe boot under
KVM succeeds (the probe's answer is cached in build/accel).  The /dev/kvm of
the development machines cannot boot stock kernels, so TCG is the rule.

No QEMU outlives its test: each is started with PR_SET_PDEATHSIG(SIGKILL)
so it dies with the harness process (crash, kill or timeout included), is
stopped by __exit__ on every path, and any left at interpreter exit are
killed by an atexit hook.  On exit the console is searched for kernel
splats (Oops, BUG, WARNING, panic); one found fails the test.
"""
import atexit
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from . import hostmem, initramfs
from .lifecycle import StartStop
from .qmp import QMP
from .unixsock import connect_unix

TOP = initramfs.TOP
BUILD = initramfs.BUILD
LOGS = BUILD / "test-logs"
CTL_PORT = "org.vmdefrag.test.0"
VDF_PORT = "org.vmdefrag.0"
SPLAT = re.compile(r"(Oops|BUG:|WARNING:|Kernel panic|general protection fault|"
                   r"Call Trace:|UBSAN:|KASAN:)")

_live = set()
# A Debian 6.12 guest under TCG very rarely panics in an early initcall
# (int3 in sched_clock_cpu, seen twice in a day of runs), before its init and
# anything of vmdefrag runs: such a boot is retried once, and said so.
BOOT_TRIES = 2
_PR_SET_PDEATHSIG = 1


class GuestError(Exception):
    pass


class GuestCommandError(GuestError):
    def __init__(self, cmd, status, output):
        super().__init__(f"guest command {cmd!r} exited {status}:\n{output}")
        self.cmd, self.status, self.output = cmd, status, output


def guest_kernels():
    """Releases of the installed guest kernels, oldest first."""
    out = subprocess.run([str(TOP / "build-aux/guest-kernels.sh")],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def default_qemu():
    """The QEMU binary a Guest runs when none is given."""
    return os.environ.get("VMDEFRAG_QEMU") or "qemu-system-x86_64"


PATCHED_MARK = "vmdefrag-patches"


def patched_qemu():
    """The QEMU built with qemu-patches/, or None: $VMDEFRAG_PATCHED_QEMU,
    else `make qemu-test`'s build/qemu-test/ binary (what `make check`
    builds, so never older than the series), else `make qemu`'s
    build/qemu/ one.  A binary whose
    version does not carry the series' mark is refused, so a stale or
    foreign binary cannot pass for the patched one."""
    env = os.environ.get("VMDEFRAG_PATCHED_QEMU")
    candidates = [Path(env)] if env else [BUILD / "qemu-test/qemu-system-x86_64",
                                         BUILD / "qemu/qemu-system-x86_64"]
    for path in candidates:
        if not os.access(path, os.X_OK):
            continue
        version = subprocess.run([str(path), "-version"], capture_output=True,
                                 text=True, timeout=30).stdout
        if PATCHED_MARK not in version:
            raise RuntimeError(f"{path} is not a vmdefrag-patched QEMU "
                               f"(no {PATCHED_MARK!r} in its -version): "
                               f"rebuild it with make qemu-test")
        return str(path)
    return None


def _pdeathsig():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def accelerator():
    forced = os.environ.get("VMDEFRAG_ACCEL")
    if forced in ("tcg", "kvm"):
        return forced
    cache = BUILD / "accel"
    if cache.exists() and time.time() - cache.stat().st_mtime < 86400:
        return cache.read_text().strip()
    accel = "tcg"
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        try:
            with Guest(guest_kernels()[0], ram_mib=256, accel="kvm",
                       boot_timeout=15, name="kvm-probe"):
                accel = "kvm"
        except (GuestError, OSError):
            # a KVM that cannot run the guest shows as a boot timeout or as
            # QEMU dying under us (the control socket resets)
            pass
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(accel + "\n")
    return accel


class Guest(StartStop):
    def __init__(self, kernel, ram_mib=1024, fpr=True, smp=2, backend="memfd",
                 name=None, accel=None, boot_timeout=180, extra_args=(),
                 cmdline="", daemon_monitor=False, qemu=None, maxmem_mib=None):
        self.kernel = kernel
        self.qemu = qemu or default_qemu()
        self.ram_mib = ram_mib
        self.ram_bytes = ram_mib << 20
        self.fpr = fpr
        self.smp = smp
        self.backend = backend
        self.name = name or f"{kernel.split('-')[0]}-{os.getpid()}"
        self._accel = accel
        self.boot_timeout = boot_timeout
        self.extra_args = list(extra_args)
        self.cmdline = cmdline
        self.daemon_monitor = daemon_monitor
        # memory hot-plug: two DIMM slots, up to maxmem_mib of RAM in all
        self.maxmem_mib = maxmem_mib
        self.proc = None
        self.qmp_conn = None
        self._ctl = None
        self._ctl_buf = b""
        self._next_id = 0

    # ---- lifecycle -----------------------------------------------------

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        if exc_type is None:
            self.check_console()
        return False

    @property
    def accel(self):
        if self._accel is None:
            self._accel = accelerator()
        return self._accel

    @property
    def pid(self):
        return self.proc.pid

    def qemu_args(self, initrd):
        w = self.workdir
        mem = f"{self.ram_mib}M"
        if self.backend == "memfd":
            memobj = f"memory-backend-memfd,id=ram0,size={mem},share=on"
        elif self.backend == "tmpfs":
            memobj = (f"memory-backend-file,id=ram0,size={mem},share=on,"
                      f"mem-path={self.ram_mount}/ram0,align=2M")
        elif self.backend == "anon":
            memobj = f"memory-backend-ram,id=ram0,size={mem}"
        else:
            raise ValueError(f"unknown backend {self.backend!r}")
        cpu = "host" if self.accel == "kvm" else "max"
        append = ("console=ttyS0 rdinit=/init panic=-1 loglevel=4 "
                  "mitigations=off " + self.cmdline)
        return [
            self.qemu, "-name", f"vdf-{self.name}",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-machine", f"q35,accel={self.accel},memory-backend=ram0",
            "-cpu", cpu, "-smp", str(self.smp),
            "-m", mem + (f",slots=2,maxmem={self.maxmem_mib}M" if self.maxmem_mib else ""),
            "-object", memobj,
            "-kernel", str(initramfs.kernel_image(self.kernel)), "-initrd", str(initrd),
            "-append", append,
            "-serial", f"file:{w}/console.log", "-monitor", "none",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=ctl,path={w}/ctl.sock,server=on,wait=off",
            "-device", f"virtserialport,bus=vser0.0,chardev=ctl,name={CTL_PORT}",
            "-chardev", f"socket,id=vdf,path={w}/vdf.sock,server=on,wait=off",
            "-device", f"virtserialport,bus=vser0.0,chardev=vdf,name={VDF_PORT}",
            "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting="
                       + ("on" if self.fpr else "off"),
            "-qmp", f"unix:{w}/qmp.sock,server=on,wait=off",
            "-no-reboot",
        ] + (["-qmp", f"unix:{w}/daemon-qmp.sock,server=on,wait=off"]
             if self.daemon_monitor else []) + self.extra_args

    def initrd(self):
        """The initrd to boot: the harness's initramfs for this kernel."""
        return initramfs.build(self.kernel)

    def start(self):
        for attempt in range(1, BOOT_TRIES + 1):
            deadline = self.launch()
            try:
                line = self._read_line(deadline)
                break
            except GuestError:
                if attempt == BOOT_TRIES or not self._panicked_before_init():
                    raise
                self._set_aside_failed_boot(attempt)
        if not line.startswith(b"READY "):
            raise GuestError(f"unexpected greeting {line!r}")
        self.qmp_conn = QMP(self.qmp_socket)

    def _panicked_before_init(self):
        """The kernel panicked and its init (vdf-testd) had not died: a boot
        failure before anything of the test ran."""
        text = self.console_text()
        return "Kernel panic" in text and "Attempted to kill init" not in text

    def _set_aside_failed_boot(self, attempt):
        """Stops the QEMU whose guest panicked while booting, keeps its
        console as <name>.boot<attempt>.console.log and says so."""
        tail = self._tail(12)
        self.stop()
        saved = LOGS / f"{self.name}.console.log"
        if saved.exists():
            saved.rename(LOGS / f"{self.name}.boot{attempt}.console.log")
        self.console = ""
        self._ctl, self._ctl_buf, self.qmp_conn = None, b"", None
        print(f"harness: guest {self.name} ({self.kernel}) panicked while booting, "
              f"before any test step; booting it again (console kept as "
              f"{self.name}.boot{attempt}.console.log):\n{tail}", flush=True)

    def launch(self):
        """Starts QEMU and connects the control channel; the boot deadline.

        start() then waits for the guest's READY; a QEMU that receives a
        migration (harness/migration.py) has no guest of its own yet."""
        initrd = self.initrd()
        self.workdir = Path(tempfile.mkdtemp(prefix="vdf-guest-"))
        self.console_log = self.workdir / "console.log"
        self.qmp_socket = self.workdir / "qmp.sock"
        self.vdf_socket = self.workdir / "vdf.sock"
        self.ctl_socket = self.workdir / "ctl.sock"
        self.daemon_qmp_socket = self.workdir / "daemon-qmp.sock"
        if self.backend == "tmpfs":
            self._mount_ram_tmpfs()
        args = self.qemu_args(initrd)
        self.qemu_log = open(self.workdir / "qemu.log", "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=self.qemu_log, stderr=subprocess.STDOUT,
                                     preexec_fn=_pdeathsig)
        _live.add(self)
        deadline = time.monotonic() + self.boot_timeout
        self._ctl = self._connect(self.ctl_socket, deadline)
        return deadline

    def _connect(self, path, deadline):
        def qemu_alive():
            if self.proc.poll() is not None:
                raise GuestError(f"QEMU exited {self.proc.returncode} during boot:\n"
                                 + self._tail())
        try:
            return connect_unix(path, deadline - time.monotonic(), check=qemu_alive)
        except (FileNotFoundError, ConnectionRefusedError):
            raise GuestError("QEMU did not create its sockets in time") from None

    def _mount_ram_tmpfs(self):
        self.ram_mount = self.workdir / "ram-tmpfs"
        self.ram_mount.mkdir()
        size = self.ram_bytes + (64 << 20)
        subprocess.run(["mount", "-t", "tmpfs", "-o",
                        f"size={size},huge=within_size,mode=0700",
                        "vdf-guest-ram", str(self.ram_mount)], check=True)

    def _umount_ram_tmpfs(self):
        mnt = getattr(self, "ram_mount", None)
        if mnt is not None and os.path.ismount(mnt):
            subprocess.run(["umount", str(mnt)], check=False)
        self.ram_mount = None

    def stop(self):
        if self.proc is None:
            self._umount_ram_tmpfs()
            return
        if self.proc.poll() is None and self.qmp_conn is not None:
            try:
                self.qmp_conn.sock.settimeout(5)
                self.qmp_conn.command("quit")
            except Exception:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for closer in (self.qmp_conn, self._ctl):
            if closer is not None:
                try:
                    closer.close()
                except OSError:
                    pass
        self.qemu_log.close()
        _live.discard(self)
        LOGS.mkdir(parents=True, exist_ok=True)
        for log in ("console.log", "qemu.log"):
            if (self.workdir / log).exists():
                shutil.copy(self.workdir / log, LOGS / f"{self.name}.{log}")
        self.console = self.console_text()
        self._umount_ram_tmpfs()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.proc_exit = self.proc.returncode
        self.proc = None

    def console_text(self):
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return getattr(self, "console", "")

    def _tail(self, n=40):
        text = self.console_text().splitlines()[-n:]
        qlog = (self.workdir / "qemu.log").read_text(errors="replace") \
            if (self.workdir / "qemu.log").exists() else ""
        return "\n".join(text) + ("\n[qemu] " + qlog if qlog else "")

    def check_console(self):
        """Raises if the guest kernel printed an oops, BUG, WARNING or panic."""
        text = getattr(self, "console", None) or self.console_text()
        m = SPLAT.search(text)
        if m:
            start = max(0, m.start() - 200)
            raise GuestError("guest kernel splat on the console:\n"
                             + text[start:start + 3000])

    # ---- control channel -------------------------------------------------

    def _read_line(self, deadline):
        while b"\n" not in self._ctl_buf:
            self._recv(deadline)
        line, _, self._ctl_buf = self._ctl_buf.partition(b"\n")
        return line

    def _read_exact(self, n, deadline):
        while len(self._ctl_buf) < n:
            self._recv(deadline)
        data, self._ctl_buf = self._ctl_buf[:n], self._ctl_buf[n:]
        return data

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise GuestError("timed out waiting for the guest:\n" + self._tail())
        self._ctl.settimeout(min(left, 1.0))
        try:
            chunk = self._ctl.recv(65536)
        except socket.timeout:
            if self.proc.poll() is not None:
                raise GuestError(f"QEMU exited {self.proc.returncode}:\n" + self._tail())
            return
        if not chunk:
            raise GuestError("guest control channel closed:\n" + self._tail())
        self._ctl_buf += chunk

    def run(self, cmd, timeout=300):
        """Runs `cmd` with /bin/sh -c in the guest: (exit status, output)."""
        self._next_id += 1
        ident = self._next_id
        data = cmd.encode()
        self._ctl.sendall(b"RUN %d %d %d\n" % (ident, timeout, len(data)) + data)
        deadline = time.monotonic() + timeout + 30
        header = self._read_line(deadline).split()
        if len(header) != 3 or header[0] != b"OUT" or int(header[1]) != ident:
            raise GuestError(f"bad reply header {header!r}")
        output = self._read_exact(int(header[2]), deadline).decode(errors="replace")
        end = self._read_line(deadline).split()
        if len(end) != 3 or end[0] != b"END" or int(end[1]) != ident:
            raise GuestError(f"bad reply trailer {end!r}")
        return int(end[2]), output

    def check(self, cmd, timeout=300):
        status, output = self.run(cmd, timeout)
        if status != 0:
            raise GuestCommandError(cmd, status, output)
        return output

    def read(self, path):
        return self.check(f"cat {path}")

    def busy_ticks(self):
        """The guest's CPU time so far, all vCPUs, in USER_HZ ticks (10 ms):
        /proc/stat's user, nice, system, iowait, irq and softirq."""
        f = self.read("/proc/stat").splitlines()[0].split()[1:]
        return sum(int(x) for i, x in enumerate(f[:7]) if i != 3)

    # ---- QMP ----------------------------------------------------------------

    def qmp(self, name, **args):
        return self.qmp_conn.command(name, **args)

    def hmp(self, command_line):
        return self.qmp_conn.hmp(command_line)

    # ---- host-side measurements --------------------------------------------

    def backing_bytes(self):
        return hostmem.backing_bytes(self.pid, self.ram_bytes)

    def backing_data_map(self):
        return hostmem.backing_data_map(self.pid, self.ram_bytes)

    def populate_backing(self):
        """Backs every page of guest RAM, as in a guest that has run a while.

        fallocate() mode 0 on the memfd allocates only the holes and never
        changes a byte the guest wrote.  Memfd backend only.
        """
        fds = hostmem.ram_backing_fds(self.pid, self.ram_bytes)
        if not fds:
            raise GuestError("populate_backing needs a file-backed RAM backend")
        fd = os.open(fds[0][0], os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, self.ram_bytes)
        finally:
            os.close(fd)

    def rss(self):
        return hostmem.rss(self.pid)

    def huge_mapped_bytes(self):
        return hostmem.huge_mapped_bytes(self.pid, self.ram_bytes)

    def pmd_share(self):
        """(bytes mapped with 2 MiB pages, resident bytes) of QEMU's guest
        RAM mappings, from its smaps: shmem, file and anonymous THPs."""
        with open(f"/proc/{self.pid}/smaps") as f:
            maps = hostmem.guest_ram_mappings(f.read(), self.ram_bytes)
        pmd = sum(m.get("ShmemPmdMapped", 0) + m.get("FilePmdMapped", 0)
                  + m.get("AnonHugePages", 0) for _, m in maps)
        return pmd, sum(m.get("Rss", 0) for _, m in maps)

    def meminfo(self):
        """The guest's /proc/meminfo in bytes."""
        out = {}
        for line in self.read("/proc/meminfo").splitlines():
            key, _, val = line.partition(":")
            parts = val.split()
            if parts:
                out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
        return out

    def captured_ranges(self):
        """[(gpa, len)] of the ranges the guest module holds captured
        (`vdfnl list`)."""
        out = []
        for line in self.check("vdfnl list").splitlines():
            if line.startswith("range="):
                addr, length = (int(x, 16) for x in line[6:].split(":"))
                out.append((addr, length))
        return out


@atexit.register
def _kill_leftovers():
    for g in list(_live):
        if g.proc is not None and g.proc.poll() is None:
            g.proc.kill()
            g.proc.wait()
        g._umount_ram_tmpfs()
