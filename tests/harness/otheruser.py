"""What a test runs or hands over as another user, where that user can reach it.

The checkout may live where only root can enter: root's home is 0700 on
Debian, so is a `mktemp -d`.  Then uid 65534 cannot execute build/daemon/
vmdefragctl, and libvirt-qemu cannot read a file under build/, whatever
the file's own mode says.  So a test never hands another user a path in
the tree; it copies what that user executes or reads into a directory made
for the test, which every user can search, and removes it after:

    with OtherUserDir() as od:
        ctl = od.copy(VMDEFRAGCTL)                  # 0755, reachable
        run_as([ctl, "--socket", sock, "status"])   # uid/gid 65534, no groups

    reachable_base()      where such directories go: the first of $TMPDIR,
                          /tmp, /var/tmp whose every directory others can
                          search (a test's private directories go there too)
    searchable(path)      every directory above `path` lets others through
    become(uid, gid, groups)
                          a preexec_fn that makes the child that user:
                          setgroups, setgid, setuid, so it keeps no
                          capability (setpriv keeps root's until it execs,
                          so its exec would reach what the user cannot)
    run_as(argv, ...)     argv as another user; refuses a program that user
                          could not reach, naming the fix

Only the way in is opened (directories 0711, copies 0755 or 0644): the
modes of what a test checks (a control socket, its group) stay the test's.
"""
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

NOBODY = 65534
NOGROUP = 65534


def searchable(path):
    """Whether others may pass through every directory above `path`."""
    for d in Path(path).absolute().parents:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return False
    return True


def reachable_base():
    """A directory for OtherUserDir: one others can enter, and write in."""
    for base in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
        p = Path(base)
        if p.is_dir() and searchable(p / "x") and os.access(p, os.W_OK):
            return p
    raise RuntimeError("no temporary directory other users can enter "
                       "($TMPDIR, /tmp, /var/tmp)")


class OtherUserDir:
    """A directory (mode 0711) under reachable_base(), removed on exit."""

    def __init__(self, prefix="vdf-other-", mode=0o711):
        self.prefix, self.mode = prefix, mode
        self.path = None

    def __enter__(self):
        self.path = Path(tempfile.mkdtemp(prefix=self.prefix, dir=reachable_base()))
        os.chmod(self.path, self.mode)
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        return False

    def copy(self, src, name=None):
        """Copies `src` in: 0755 if it is executable, else 0644."""
        dst = self.path / (name or Path(src).name)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o755 if os.stat(src).st_mode & stat.S_IXUSR else 0o644)
        return dst


def become(uid=NOBODY, gid=NOGROUP, groups=()):
    """A preexec_fn: the child takes exactly these ids and groups, and with
    every uid non-zero the kernel clears its capabilities."""
    def preexec():
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)
    return preexec


def run_as(argv, uid=NOBODY, gid=NOGROUP, groups=(), timeout=30, **kw):
    """Runs argv as uid/gid with exactly `groups` (none by default); stdout
    and stderr captured as text.  The program must be one that user can
    reach (OtherUserDir.copy), or this raises ValueError."""
    prog = Path(argv[0])
    if not prog.is_absolute() or not searchable(prog) or \
            not os.stat(prog).st_mode & stat.S_IXOTH:
        raise ValueError(f"uid {uid} cannot run {prog}: copy it with "
                         "harness.otheruser.OtherUserDir.copy()")
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=become(uid, gid, groups), **kw)
