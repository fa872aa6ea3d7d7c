"""vmdefragctl's failures as a script sees them: a bounded wait, one line
on stderr, a documented exit status and, with --json, the same failure as
one JSON object on stdout.

No guest: the peers are a real vmdefragd with a VM that has no QEMU, a
socket that listens and never answers (a wedged daemon), and a small
stand-in daemon that answers every request with an operation that stays
"running" (an operation that takes longer than the caller will wait),
or one that progresses round by round (what --wait shows meanwhile).
"""
import json
import os
import pty
import select
import socket
import subprocess
import threading
import time

import pytest

from harness.vmdefragd import VMDEFRAGCTL, Daemon

EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_UNKNOWN_VM = 5
EXIT_TIMEOUT = 7
DEFAULT_TIMEOUT_S = 30


def ctl(sock, *args, timeout=120):
    t0 = time.monotonic()
    p = subprocess.run([str(VMDEFRAGCTL), "--socket", str(sock), *args],
                       capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


def one_line(p):
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and p.stderr.endswith("\n"), p.stderr
    assert lines[0].startswith("vmdefragctl: "), lines
    return lines[0]


def json_error(p):
    """The one JSON object a failing --json call prints on stdout."""
    lines = p.stdout.splitlines()
    assert len(lines) == 1, p.stdout
    o = json.loads(lines[0])
    assert o["schema"] == 1 and o["ok"] is False and o["exit_code"] == p.returncode, o
    assert "vmdefragctl: " + o["message"] == one_line(p)
    return o


@pytest.fixture
def wedged(workdir):
    """A socket that accepts connections and never answers."""
    path = workdir / "wedged.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(16)
    yield path
    srv.close()


def test_timeout_wedged_daemon(wedged):
    for args in (["--timeout", "1.5", "status"], ["status", "vm", "--timeout=1.5"],
                 ["--timeout", "1.5", "scan", "vm"]):
        p, dt = ctl(wedged, *args)
        assert p.returncode == EXIT_TIMEOUT, (args, p.returncode, p.stderr)
        assert 1.4 < dt < 4, (args, dt)
        assert one_line(p) == "vmdefragctl: vmdefragd did not answer in 1.5 s (--timeout)"
        assert p.stdout == ""
    p, _ = ctl(wedged, "--timeout", "1", "status", "--json")
    assert p.returncode == EXIT_TIMEOUT
    assert json_error(p)["error"] == "timeout"


def test_default_timeout(wedged):
    """Without --timeout a call still ends: status after the default."""
    p, dt = ctl(wedged, "status")
    assert p.returncode == EXIT_TIMEOUT, p.stderr
    assert DEFAULT_TIMEOUT_S - 1 < dt < DEFAULT_TIMEOUT_S + 10, dt
    assert one_line(p) == (f"vmdefragctl: vmdefragd did not answer in "
                           f"{DEFAULT_TIMEOUT_S} s (--timeout)")
    h = subprocess.run([str(VMDEFRAGCTL), "--help"], capture_output=True, text=True)
    assert f"Default: {DEFAULT_TIMEOUT_S} s" in h.stdout
    assert "7  the daemon did not answer within --timeout" in h.stdout


@pytest.mark.parametrize("value", ["0", "-1", "abc", "", "1e9", "nan"])
def test_bad_timeout(workdir, value):
    for args in (["--timeout", value, "status"], ["status", f"--timeout={value}"]):
        p, _ = ctl(workdir / "none.sock", *args)
        assert p.returncode == EXIT_USAGE, (args, p.stderr)
        assert one_line(p) == (f"vmdefragctl: --timeout '{value}': not a number of "
                               "seconds above 0 (e.g. 5 or 0.5)")
    p, _ = ctl(workdir / "none.sock", "status", "--timeout")
    assert p.returncode == EXIT_USAGE
    assert "needs an argument" in one_line(p)


def test_json_errors(workdir):
    # the daemon is not running
    p, _ = ctl(workdir / "none.sock", "status", "--json")
    assert p.returncode == EXIT_NO_DAEMON
    o = json_error(p)
    assert o["error"] == "no-daemon" and "is not running" in o["message"]
    # bad arguments, --json before or after them
    for args in (["--json", "--bogus", "status"], ["reclaim", "vm", "3M", "--json"]):
        p, _ = ctl(workdir / "none.sock", *args)
        assert p.returncode == EXIT_USAGE, args
        assert json_error(p)["error"] == "usage"
    # the daemon refuses: its error code is passed through
    with Daemon(workdir, [("vm", workdir / "q", workdir / "c")]) as d:
        p = d.ctl("status", "nosuchvm", "--json", check=False)
        assert p.returncode == EXIT_UNKNOWN_VM
        o = json_error(p)
        assert o == {"schema": 1, "ok": False, "error": "unknown-vm",
                     "message": "no VM named 'nosuchvm'", "exit_code": EXIT_UNKNOWN_VM}
        # without --json: stdout stays empty
        p = d.ctl("status", "nosuchvm", check=False)
        assert p.returncode == EXIT_UNKNOWN_VM and p.stdout == ""
        # and a success prints the answer alone
        p = d.ctl("status", "--json")
        assert json.loads(p.stdout)["ok"] is True and p.stderr == ""


class RunningForever:
    """A stand-in vmdefragd: every request gets one running operation."""

    def __init__(self, path):
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(16)
        self.requests = []
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with c:
                line = c.makefile().readline()
                self.requests.append(json.loads(line))
                op = {"vm": "vm", "id": 3, "kind": "reclaim", "state": "running",
                      "done_bytes": 0, "target_bytes": 2 << 20, "elapsed_ms": 5}
                c.sendall((json.dumps({"ok": True, "operation": op}) + "\n").encode())

    def close(self):
        self.srv.close()


def test_wait_timeout(workdir):
    srv = RunningForever(workdir / "running.sock")
    try:
        p, dt = ctl(workdir / "running.sock", "--timeout", "2", "reclaim", "vm", "2M",
                    "--wait")
        assert p.returncode == EXIT_TIMEOUT, p.stderr
        assert 1.9 < dt < 5, dt
        assert one_line(p) == ("vmdefragctl: reclaim #3 on vm still running after "
                               "2 s (--timeout); it goes on: vmdefragctl status vm")
        assert len(srv.requests) >= 3          # the start, then polls
        p, _ = ctl(workdir / "running.sock", "reclaim", "vm", "2M", "--wait", "--json",
                   "--timeout", "1")
        assert p.returncode == EXIT_TIMEOUT
        o = json_error(p)
        assert o["error"] == "timeout" and o["operation"]["state"] == "running"
    finally:
        srv.close()


class Progressing(RunningForever):
    """A stand-in vmdefragd whose operation moves 32 MiB a poll, one guest
    round every two polls, and is done after POLLS polls."""
    POLLS = 8

    def serve(self):
        n = 0
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with c:
                self.requests.append(json.loads(c.makefile().readline()))
                done = min(n, self.POLLS) * (32 << 20)
                op = {"vm": "vm", "id": 4, "kind": "reclaim",
                      "state": "done" if n >= self.POLLS else "running",
                      "done_bytes": done, "target_bytes": self.POLLS * (32 << 20),
                      "elapsed_ms": 250 * (n + 1), "rounds": n // 2, "error": 0}
                n += 1
                c.sendall((json.dumps({"ok": True, "operation": op}) + "\n").encode())


def test_wait_progress_lines(workdir):
    """Into a pipe: one line per round, then the end; not one per poll."""
    srv = Progressing(workdir / "p.sock")
    try:
        p, _ = ctl(workdir / "p.sock", "reclaim", "vm", "256M", "--wait")
    finally:
        srv.close()
    assert p.returncode == 0 and p.stderr == "", p.stderr
    lines = p.stdout.splitlines()
    # polls 1..8 carry rounds 0,1,1,2,2,3,3,4(done): rounds 0..3 once each
    assert len(srv.requests) == Progressing.POLLS + 1
    assert [ln.split(": ", 1)[1].split(" (")[0] for ln in lines] == [
        "32 MiB of 256 MiB", "64 MiB of 256 MiB", "128 MiB of 256 MiB",
        "192 MiB of 256 MiB", "256 MiB of 256 MiB"], lines
    assert all(ln.startswith("reclaim #4 on vm: ") for ln in lines)
    assert "(running, " in lines[0] and "(done, " in lines[-1]
    assert "\r" not in p.stdout and "left" not in p.stdout


def test_wait_progress_tty(workdir):
    """On a terminal: one line rewritten in place, with rate and time left."""
    srv = Progressing(workdir / "t.sock")
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([str(VMDEFRAGCTL), "--socket", str(workdir / "t.sock"),
                                 "reclaim", "vm", "256M", "--wait"],
                                stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=subprocess.PIPE)
        os.close(slave)
        out = b""
        while True:
            r, _, _ = select.select([master], [], [], 20)
            assert r, out
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
    finally:
        os.close(master)
        srv.close()
    text = out.decode()
    assert text.count("\r\033[K") >= Progressing.POLLS, text
    # 64 MiB after 0.75 s: 85.3 MiB/s, 192 MiB left: about 2 s
    assert "64 MiB of 256 MiB (running, 0.8 s), 85.3 MiB/s, about 2 s left" in text, text
    assert text.rstrip().endswith("256 MiB of 256 MiB (done, 2.2 s)"), text


def test_check_domain_timeout(wedged):
    """check-domain waits on libvirt, not on vmdefragd: a libvirt socket
    that never answers ends it after --timeout, with the timeout's status."""
    uri = f"qemu+unix:///system?socket={wedged}"
    for args in (["check-domain", "dom", "--connect", uri, "--timeout", "1.5"],
                 ["--timeout", "1.5", "check-domain", "dom", "--connect", uri]):
        p, dt = ctl(wedged, *args)
        assert p.returncode == EXIT_TIMEOUT, (args, p.returncode, p.stderr)
        assert 1.4 < dt < 5, dt
        assert one_line(p) == "vmdefragctl: libvirt did not answer in 1.5 s (--timeout)"
        assert p.stdout == ""
    p, _ = ctl(wedged, "check-domain", "dom", "--connect", uri, "--timeout", "1",
               "--json")
    assert p.returncode == EXIT_TIMEOUT
    assert json_error(p)["error"] == "timeout"
