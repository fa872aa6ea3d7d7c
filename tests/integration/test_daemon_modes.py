"""vmdefragd's process modes and who may use its control socket.

No guest is needed: the daemon is started with one --vm whose QMP socket
does not exist (it keeps retrying, which is what a daemon started before
its VMs does), and everything checked is the daemon's own behaviour:

- without --foreground it detaches (the starting process exits 0 once
  the daemon serves, the daemon lives on in its own session with stdio on
  /dev/null and its working directory at /), serves the socket, and ends
  on SIGTERM, removing the socket; a startup error of the detached daemon
  (its socket in use) is its one line on the terminal and a non-zero exit
  of the starting process;
- without --config it reads the default config file when that exists
  ($VMDEFRAGD_CONFIG names it for a test; /etc/vmdefrag/vmdefragd.conf
  otherwise), and a missing default is no error;
- SIGHUP reloads the config: the log level and the backoff change at
  once, what needs a restart is one warning each, a config with an error
  leaves the running one in place with its FILE:LINE error logged;
- with stderr on the journal's stream (JOURNAL_STREAM) every line starts
  with its syslog priority, "<N>";
- the control socket's access rules: root, or the configured socket_group
  as the client's primary or supplementary group (SO_PEERCRED plus
  /proc/PID/status), everyone else refused with the "permission" exit
  status even when the file mode would let them connect.  Clients run as
  uid 65534 (harness/otheruser.py: a copy of vmdefragctl and the socket
  in a directory that user can reach), so no user or group is added to
  the host.
"""
import os
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from harness.otheruser import NOBODY, OtherUserDir, run_as
from harness.vmdefragd import VMDEFRAGD, VMDEFRAGCTL, Daemon, _pdeathsig

SOCKET_GROUP = 65534        # nogroup on Debian; only its number matters
OTHER_GID = 54321           # a group the socket does not name
CTL_EXIT_PERMISSION = 4


def _vm_spec(tmp):
    return f"vm,qmp={tmp}/absent-qmp.sock,channel={tmp}/absent-vdf.sock"


def _peer_pid(path, timeout=10):
    """The pid serving a unix socket (SO_PEERCRED), once it accepts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
                cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
                return struct.unpack("3i", cred)[0]
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_detached_daemon(workdir):
    sock = Path(workdir) / "ctl.sock"
    starter = subprocess.Popen(
        [str(VMDEFRAGD), "--socket", str(sock), "--vm", _vm_spec(workdir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    out, err = starter.communicate(timeout=10)
    assert starter.returncode == 0, err.decode()
    assert out == b"" and err == b""

    pid = _peer_pid(sock)
    try:
        assert pid != starter.pid and _alive(pid)
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
        assert os.getsid(pid) == pid, "the daemon did not start a session"

        st = subprocess.run([str(VMDEFRAGCTL), "--socket", str(sock), "status",
                             "--json"], capture_output=True, text=True,
                            timeout=10)
        assert st.returncode == 0, st.stderr
        assert '"vm"' in st.stdout
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the detached daemon ignored SIGTERM"
    assert not sock.exists(), "the socket outlived the daemon"


@pytest.fixture
def group_daemon(workdir):
    """A daemon whose socket (mode 0666, so only SO_PEERCRED decides)
    names SOCKET_GROUP, in a directory uid 65534 can reach wherever the
    checkout is, plus a vmdefragctl copy there that user can run."""
    config = ("[daemon]\n"
              f"socket_group = {SOCKET_GROUP}\n"
              "socket_mode = 0666\n")
    with OtherUserDir() as od, \
            Daemon(od.path, [], config=config, extra=["--vm", _vm_spec(workdir)]) as d:
        yield d, od.copy(VMDEFRAGCTL)


def _ctl_as(ctl, sock, gid, groups):
    return run_as([ctl, "--socket", sock, "status"], uid=NOBODY, gid=gid,
                  groups=groups, timeout=10)


@pytest.mark.parametrize("gid,groups,allowed", [
    (SOCKET_GROUP, [], True),                   # primary group
    (OTHER_GID, [SOCKET_GROUP], True),          # supplementary group
    (OTHER_GID, [], False),                     # neither
    (OTHER_GID, [OTHER_GID + 1], False),        # other groups only
], ids=["primary", "supplementary", "none", "other"])
def test_socket_group(group_daemon, gid, groups, allowed):
    d, ctl = group_daemon
    r = _ctl_as(ctl, d.socket, gid, groups)
    if allowed:
        assert r.returncode == 0, r.stderr
        assert "vm" in r.stdout
    else:
        assert r.returncode == CTL_EXIT_PERMISSION, (r.returncode, r.stderr)
        assert "permission denied" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "refused client uid 65534" in d.log_path.read_text()


def test_detached_daemon_startup_error(workdir):
    """A second daemon on a socket in use: detached or not, the starting
    process exits 1 with the one-line reason on its stderr, and the first
    daemon keeps its socket."""
    with Daemon(workdir, [("vm", workdir / "q", workdir / "c")]) as d:
        for fg in ([], ["--foreground"]):
            p = subprocess.run([str(VMDEFRAGD), *fg, "--socket", str(d.socket),
                                "--vm", _vm_spec(workdir)],
                               stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=20)
            assert p.returncode == 1, (fg, p.returncode, p.stderr)
            assert p.stdout == ""
            assert p.stderr == (f"vmdefragd: control socket {d.socket}: another "
                                "vmdefragd is listening there\n"), (fg, p.stderr)
        assert d.alive()
        assert d.ctl("status", "--json").returncode == 0


def _run_daemon(args, log, env=None):
    return subprocess.Popen([str(VMDEFRAGD), *args], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=_pdeathsig)


def _wait_socket(sock, proc, log_path, timeout=20):
    deadline = time.monotonic() + timeout
    while not sock.exists():
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


def test_default_config_file(workdir):
    """No --config: the default file is read when it exists."""
    sock = workdir / "default.sock"
    conf = workdir / "vmdefragd.conf"
    conf.write_text("[daemon]\n"
                    f"socket = {sock}\n"
                    "log_level = debug\n"
                    "[vm fromfile]\n"
                    f"qmp = {workdir}/q.sock\n"
                    f"channel = {workdir}/c.sock\n")
    env = dict(os.environ, VMDEFRAGD_CONFIG=str(conf))
    log_path = workdir / "d.log"
    with open(log_path, "wb") as log:
        proc = _run_daemon(["--foreground"], log, env)
        try:
            _wait_socket(sock, proc, log_path)
            st = subprocess.run([str(VMDEFRAGCTL), "--socket", str(sock), "status",
                                 "--json"], capture_output=True, text=True, timeout=10)
            assert st.returncode == 0, st.stderr
            assert [v["name"] for v in __import__("json").loads(st.stdout)["vms"]] == \
                ["fromfile"]
        finally:
            assert _stop(proc) == 0
    # the default file missing: no error, the defaults (and then no VM)
    env["VMDEFRAGD_CONFIG"] = str(workdir / "absent.conf")
    p = subprocess.run([str(VMDEFRAGD), "--foreground"], env=env, capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 2
    assert p.stderr == "vmdefragd: no VM given (--vm, a [vm NAME] section, or --libvirt)\n"
    # a default file with an error is an error, with its FILE:LINE
    conf.write_text("[daemon]\nlog_level = loud\n")
    env["VMDEFRAGD_CONFIG"] = str(conf)
    p = subprocess.run([str(VMDEFRAGD), "--foreground"], env=env, capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 2
    assert p.stderr == (f"vmdefragd: {conf}:2: log_level 'loud' is not one of err, "
                        "warning, notice, info, debug\n")
    # an explicit --config must exist
    p = subprocess.run([str(VMDEFRAGD), "--foreground", "--config",
                        str(workdir / "absent.conf")], env=env, capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 2
    assert "absent.conf: cannot read: No such file or directory" in p.stderr


RETRY = re.compile(r"guest channel \S+: No such file or directory; retry in (\d+) ms")


def test_sighup_reload(workdir):
    """SIGHUP: the log level and the backoff change at once; a socket mode
    and a new VM are reported as needing a restart; a broken config keeps
    the running one."""
    unit = (Path(__file__).resolve().parents[2] /
            "configs/systemd/vmdefragd.service").read_text()
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit

    sock = workdir / "hup.sock"
    conf = workdir / "hup.conf"
    vm = (f"[vm vm]\nqmp = {workdir}/q.sock\nchannel = {workdir}/c.sock\n")
    conf.write_text("[daemon]\nlog_level = info\nreconnect_min_ms = 3000\n"
                    "reconnect_max_ms = 3000\n" + vm)
    log_path = workdir / "hup.log"
    with open(log_path, "wb") as log:
        proc = _run_daemon(["--foreground", "--config", str(conf), "--socket",
                            str(sock)], log)
        try:
            _wait_socket(sock, proc, log_path)
            time.sleep(1)
            assert "debug:" not in log_path.read_text()

            conf.write_text("[daemon]\nlog_level = debug\nreconnect_min_ms = 200\n"
                            "reconnect_max_ms = 200\nsocket_mode = 0600\n" + vm +
                            f"[vm other]\nqmp = {workdir}/q2\nchannel = {workdir}/c2\n")
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 15
            while len(RETRY.findall(log_path.read_text())) < 3:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            text = log_path.read_text()
            # the new backoff: the retries after the reload are 200 ms apart
            assert set(RETRY.findall(text)) == {"200"}, text
            lines = text.splitlines()
            assert lines.count("vmdefragd: warning: socket_mode changed (0660 -> "
                               "0600): needs a restart") == 1, text
            assert lines.count("vmdefragd: warning: VM 'other' added: needs a "
                               "restart") == 1, text
            assert any(ln.startswith(f"vmdefragd: configuration reloaded from {conf}")
                       for ln in lines), text
            st = subprocess.run([str(VMDEFRAGCTL), "--socket", str(sock), "status",
                                 "--json"], capture_output=True, text=True, timeout=10)
            assert st.returncode == 0 and '"other"' not in st.stdout
            assert oct(sock.stat().st_mode & 0o777) == "0o660"

            # a config that does not parse: logged, the running one stays
            conf.write_text("[daemon]\nlog_level = info\nlog_level = err\n" + vm)
            proc.send_signal(signal.SIGHUP)
            want = (f"vmdefragd: configuration not reloaded, the previous one stays "
                    f"in use: {conf}:3: 'log_level' is set twice in [daemon] "
                    "(first on line 2)")
            deadline = time.monotonic() + 10
            while want not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            n = len(RETRY.findall(log_path.read_text()))
            time.sleep(1)
            assert len(RETRY.findall(log_path.read_text())) > n, "debug level lost"
            assert proc.poll() is None
        finally:
            assert _stop(proc) == 0
    assert not sock.exists()


def test_journal_priorities(workdir):
    """stderr on the journal's stream (JOURNAL_STREAM = its dev:ino): every
    line is "<N>message"; the same variable with stderr elsewhere (a child
    that redirected it) changes nothing."""
    sock = workdir / "j.sock"
    log_path = workdir / "j.log"
    log_path.touch()
    st = log_path.stat()
    for journal in (True, False):
        env = dict(os.environ, JOURNAL_STREAM=(f"{st.st_dev}:{st.st_ino}" if journal
                                               else f"{st.st_dev}:{st.st_ino + 1}"))
        log_path.write_text("")
        with open(log_path, "ab") as log:
            proc = _run_daemon(["--foreground", "--socket", str(sock), "--log-level",
                                "debug", "--vm", _vm_spec(workdir)], log, env)
            try:
                _wait_socket(sock, proc, log_path)
                time.sleep(1)
            finally:
                assert _stop(proc) == 0
        lines = log_path.read_text().splitlines()
        assert lines, "nothing logged"
        if journal:
            assert all(re.match(r"<[0-7]>[^<]", ln) for ln in lines), lines
            assert f"<6>listening on {sock}, 1 VM(s)" in lines
            assert any(ln.startswith("<4>VM 'vm': not attached to QEMU") for ln in lines)
            assert any(ln.startswith("<7>") for ln in lines)
        else:
            assert not any(re.match(r"<\d>", ln) for ln in lines), lines
            assert f"vmdefragd: listening on {sock}, 1 VM(s)" in lines
