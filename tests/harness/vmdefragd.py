"""Runs the real vmdefragd and vmdefragctl for tests and the demo.

    with Guest(kernel, daemon_monitor=True) as g:
        start_agent(g)                       # insmod vmdefrag.ko + agent
        with Daemon(workdir, [("vm", g.daemon_qmp_socket, g.vdf_socket)]) as d:
            d.wait_ready("vm")
            d.ctl("reclaim", "vm", "512M", "--wait")
            d.status("vm")["reclaimed_bytes"]

wrap is a command prefix that execs the daemon (nsenter ... for a
libvirtd in namespaces of its own: harness.libvirt_ns).

The daemon runs in the foreground with PR_SET_PDEATHSIG, logging to
workdir/vmdefragd.log; close() (or leaving the with block) stops it with
SIGTERM and returns its exit status, SIGKILL after 10 s.
"""
import ctypes
import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from .initramfs import BUILD, TOP

VMDEFRAGD = BUILD / "daemon/vmdefragd"
VMDEFRAGCTL = BUILD / "daemon/vmdefragctl"



UNIT_SUFFIXES = ("_bytes", "_ms", "_ns", "_percent", "_bytes_per_second")
_counts = None


def json_counts():
    """The integer keys without a unit that vmdefragctl(1)'s JSON OUTPUT
    section lists as counts or codes."""
    global _counts
    if _counts is None:
        text = (TOP / "man/vmdefragctl.1.scd").read_text()
        section = text.split("# JSON OUTPUT", 1)[1].split("\n# ", 1)[0]
        listed = section.split("These are all of them:", 1)[1]
        _counts = set(re.findall(r"\*([a-z_]+)\*", listed))
    return _counts


def check_json_units(obj, where="answer"):
    """Every integer in a daemon answer has its unit in its key, or is a
    count the man page lists; the answer carries schema 1."""
    if where == "answer":
        assert obj.get("schema") == 1, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, int) and not isinstance(v, bool):
                assert k.endswith(UNIT_SUFFIXES) or k in json_counts(), \
                    f"{where}.{k} = {v}: an integer key with no unit that " \
                    f"vmdefragctl(1) does not list as a count"
            check_json_units(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_json_units(v, f"{where}[{i}]")

class DaemonError(Exception):
    pass


def _pdeathsig():
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL, 0, 0, 0)


def start_agent(g, floor_mb=None):
    """Loads vmdefrag.ko in guest `g` (with its default floor, or
    `floor_mb`) and starts vmdefrag-agent there."""
    g.check("insmod /lib/modules/vmdefrag.ko" +
            (f" floor_mb={floor_mb}" if floor_mb is not None else ""))
    g.check("vmdefrag-agent >/tmp/agent.log 2>&1 &")


class Daemon:
    def __init__(self, workdir, vms, config=None, extra=(), log_level="debug",
                 wrap=()):
        self.workdir = Path(workdir)
        self.socket = self.workdir / "vmdefragd.sock"
        self.log_path = self.workdir / "vmdefragd.log"
        # state that outlives the daemon (policy modes, counters, history)
        # stays in the workdir unless the test names another: a restart in
        # the same workdir finds it, the host's /var/lib/vmdefrag is never
        # touched
        self.state_dir = self.workdir / "state"
        args = [str(VMDEFRAGD), "--foreground", "--socket", str(self.socket),
                "--log-level", log_level]
        if config is not None:
            cfg = self.workdir / "vmdefragd.conf"
            cfg.write_text(config)
            args += ["--config", str(cfg)]
        if "--state-dir" not in extra and "state_dir" not in (config or ""):
            args += ["--state-dir", str(self.state_dir)]
        for name, qmp, channel in vms:
            args += ["--vm", f"{name},qmp={qmp},channel={channel}"]
        args += list(extra)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(list(wrap) + args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=_pdeathsig)
        # Wait until the socket accepts: after a crash the old socket file
        # is still there before the new daemon has bound it again.
        deadline = time.monotonic() + 20
        while not self._accepts():
            if self.proc.poll() is not None:
                raise DaemonError("vmdefragd exited:\n" + self.text())
            if time.monotonic() > deadline:
                raise DaemonError("no control socket:\n" + self.text())
            time.sleep(0.05)

    def _accepts(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(self.socket))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def text(self):
        return self.log_path.read_text(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        """SIGKILL, as a crash would: no cleanup in the daemon."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def ctl(self, *args, check=True, timeout=900, **kw):
        p = subprocess.run([str(VMDEFRAGCTL), "--socket", str(self.socket), *args],
                           capture_output=True, text=True, timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise DaemonError(f"vmdefragctl {' '.join(args)} exited {p.returncode}: "
                              f"{p.stderr.strip()}")
        return p

    def status(self, vm=None):
        out = self.ctl("status", *([vm] if vm else []), "--json").stdout
        answer = json.loads(out)
        check_json_units(answer)
        return {v["name"]: v for v in answer["vms"]}

    def wait_for(self, cond, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if not self.alive():
                raise DaemonError("vmdefragd died:\n" + self.text()[-4000:])
            time.sleep(0.2)
        raise DaemonError(f"timed out waiting for {what}:\n" + self.text()[-4000:])

    def wait_ready(self, vm, timeout=60):
        """Waits until `vm`'s agent said HELLO with the module reachable."""
        self.wait_for(lambda: "module" in self.status(vm)[vm]["session"]["features"],
                      f"{vm}'s agent with the module", timeout)

    def wait_reconciled(self, vm, timeout=120, what="the daemon to reconcile with the guest"):
        """Waits until the daemon knows what `vm`'s guest holds captured."""
        self.wait_for(lambda: (self.status(vm)[vm].get("memory") or {}).get("reconciled"),
                      what, timeout)
