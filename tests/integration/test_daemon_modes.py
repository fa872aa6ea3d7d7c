"""vmdefragd's process modes and who may use its control socket.

No guest is needed: the daemon is started with one --vm whose QMP socket
does not exist (it keeps retrying, which is what a daemon started before
its VMs does), and everything checked is the daemon's own behaviour:

- without --foreground it detaches (the starting process exits 0 at once,
  the daemon lives on in its own session with stdio on /dev/null and its
  working directory at /), serves the socket, and ends on SIGTERM,
  removing the socket;
- the control socket's access rules: root, or the configured socket_group
  as the client's primary or supplementary group (SO_PEERCRED plus
  /proc/PID/status), everyone else refused with the "permission" exit
  status even when the file mode would let them connect.  Clients run as
  uid 65534 (harness/otheruser.py: a copy of vmdefragctl and the socket
  in a directory that user can reach), so no user or group is added to
  the host.
"""
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from harness.otheruser import NOBODY, OtherUserDir, run_as
from harness.vmdefragd import VMDEFRAGD, VMDEFRAGCTL, Daemon

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
