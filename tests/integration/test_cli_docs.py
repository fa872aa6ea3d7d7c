"""What an admin reads and types: --help, --version, man pages, completion.
No guest is booted; everything here is fast.

version   -V and --version of vmdefragd, vmdefragctl and vmdefrag-agent
          print "PROGRAM VERSION", the version of debian/changelog
          (build-aux/version.sh, its one place), exit 0, nothing on stderr.
help      -h and --help print a usage on stdout and exit 0; every option
          the usage names is in the program's man page.  vmdefragctl:
          `help CMD` and `CMD --help` print the same, for every command,
          without a daemon; `help nope` and `nope --help` are one line on
          stderr and exit 2; the usage lists every command.
man       every page of man/ renders (make man) and `man --warnings`
          says nothing about it; each says the version in its footer.
completion  the bash completion, sourced with bash-completion's own
          library, completes the commands, a command's options, notify's
          events and, from a real vmdefragd (`status --json`), its VM
          names; none when no daemon runs.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.vmdefragd import VMDEFRAGCTL, VMDEFRAGD, Daemon  # noqa: E402
from harness.initramfs import BUILD  # noqa: E402

TOP = Path(__file__).resolve().parents[2]
AGENT = BUILD / "agent/vmdefrag-agent"
PROGRAMS = {"vmdefragd": VMDEFRAGD, "vmdefragctl": VMDEFRAGCTL, "vmdefrag-agent": AGENT}
MAN_OF = {"vmdefragd": "vmdefragd.8", "vmdefragctl": "vmdefragctl.1",
          "vmdefrag-agent": "vmdefrag-agent.8"}
CTL_COMMANDS = ["status", "scan", "reclaim", "return", "cancel", "policy", "history",
                "metrics", "map", "notify", "check-domain", "help"]
COMPLETION = TOP / "configs/bash-completion/vmdefragctl"


def version():
    return subprocess.run([str(TOP / "build-aux/version.sh")], capture_output=True,
                          text=True, check=True).stdout.strip()


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, **kw)


@pytest.fixture(scope="module")
def man_pages():
    p = subprocess.run(["make", "--no-print-directory", "-C", str(TOP), "man"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    names = [src.name[:-len(".scd")] for src in (TOP / "man").glob("*.scd")]
    pages = {name: BUILD / "man" / name for name in names}
    assert set(pages) == {"vmdefragd.8", "vmdefragctl.1", "vmdefrag-agent.8",
                          "vmdefragd.conf.5"}
    return pages


def rendered(page):
    env = dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8")
    p = run("man", "-l", page, env=env)
    assert p.returncode == 0, p.stderr
    return re.sub(r".\x08", "", p.stdout)


@pytest.mark.parametrize("prog", PROGRAMS)
def test_version(prog):
    v = version()
    assert re.fullmatch(r"[0-9][0-9A-Za-z.+~-]*", v), v
    for flag in ("-V", "--version"):
        p = run(PROGRAMS[prog], flag)
        assert (p.returncode, p.stdout, p.stderr) == (0, f"{prog} {v}\n", ""), flag


@pytest.mark.parametrize("prog", PROGRAMS)
def test_help(prog, man_pages):
    outs = set()
    for flag in ("-h", "--help"):
        p = run(PROGRAMS[prog], flag)
        assert p.returncode == 0 and p.stderr == "", (flag, p.stderr)
        assert p.stdout.startswith(f"Usage: {prog} "), p.stdout
        outs.add(p.stdout)
    assert len(outs) == 1, "-h and --help differ"
    usage = outs.pop()
    page = rendered(man_pages[MAN_OF[prog]])
    for opt in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", usage))):
        assert opt in page, f"{prog} --help names {opt}, its man page does not"


def test_ctl_help_commands():
    usage = run(VMDEFRAGCTL, "--help").stdout
    assert run(VMDEFRAGCTL, "help").stdout == usage
    for cmd in CTL_COMMANDS:
        assert re.search(rf"^       vmdefragctl .*\b{cmd}\b|^Usage: vmdefragctl .*\b{cmd}\b",
                         usage, re.M), f"usage has no synopsis for {cmd}"
        assert re.search(rf"^  {re.escape(cmd)} ", usage, re.M), f"usage does not list {cmd}"
        a = run(VMDEFRAGCTL, "help", cmd)
        b = run(VMDEFRAGCTL, cmd, "--help")
        c = run(VMDEFRAGCTL, cmd, "-h")
        assert a.returncode == 0 and a.stderr == "", (cmd, a.stderr)
        assert a.stdout.startswith("Usage: vmdefragctl ") and f" {cmd}" in a.stdout.splitlines()[0]
        assert a.stdout != usage
        assert (b.returncode, b.stdout, b.stderr) == (0, a.stdout, ""), cmd
        assert (c.returncode, c.stdout, c.stderr) == (0, a.stdout, ""), cmd
    # after operands too, and no daemon is needed (none runs here)
    p = run(VMDEFRAGCTL, "--socket", "/nonexistent/sock", "reclaim", "vm1", "1G", "--help")
    assert (p.returncode, p.stderr) == (0, "") and p.stdout.startswith("Usage: vmdefragctl")


@pytest.mark.parametrize("args", [["help", "nope"], ["nope", "--help"], ["help", "status", "x"]])
def test_ctl_help_errors(args):
    p = run(VMDEFRAGCTL, *args)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("vmdefragctl: "), p.stderr


def test_man_pages_warnings(man_pages):
    v = version()
    for name, page in man_pages.items():
        p = run("man", "--warnings", "-l", page,
                env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
        assert p.returncode == 0 and p.stderr == "", f"{name}:\n{p.stderr}"
        text = rendered(page)
        title = name.rsplit(".", 1)[0]
        assert text.startswith(f"{title}({name.rsplit('.', 1)[1]})"), text[:80]
        assert f"vmdefrag {v}" in text, f"{name}: no version in the footer"
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"):
            assert re.search(rf"^{section}$", text, re.M), f"{name}: no {section}"


def test_man_ctl_commands_and_conf_keys(man_pages):
    page = rendered(man_pages["vmdefragctl.1"])
    for cmd in CTL_COMMANDS:
        assert re.search(rf"^ +{re.escape(cmd)}\b", page, re.M), f"vmdefragctl(1) lacks {cmd}"
    # every key the shipped config file mentions is described
    conf = (TOP / "configs/vmdefragd.conf").read_text()
    keys = set(re.findall(r"^#?([a-z_]+) = ", conf, re.M))
    assert {"socket", "floor", "uri"} <= keys
    page = rendered(man_pages["vmdefragd.conf.5"])
    for key in sorted(keys):
        assert re.search(rf"\b{key}\b", page), f"vmdefragd.conf(5) lacks {key}"


def complete(words, env_path=None):
    """The completions bash offers for the last of `words` (the line so far)."""
    line = " ".join(words)
    script = f"""
        [ -r /usr/share/bash-completion/bash_completion ] &&
            . /usr/share/bash-completion/bash_completion
        . {COMPLETION}
        COMP_WORDS=({" ".join(_q(w) for w in words)})
        COMP_CWORD={len(words) - 1}
        COMP_LINE={_q(line)}
        COMP_POINT={len(line)}
        _vmdefragctl vmdefragctl {_q(words[-1])} {_q(words[-2])}
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    env = dict(os.environ, PATH=f"{VMDEFRAGCTL.parent}:{os.environ['PATH']}")
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                       text=True, timeout=30, env=env)
    assert p.returncode == 0, p.stderr
    return sorted(w for w in p.stdout.splitlines() if w)


def _q(s):
    return "'" + s.replace("'", "'\\''") + "'"


def test_completion_words():
    if not shutil.which("bash"):
        pytest.skip("no bash")
    assert complete(["vmdefragctl", ""]) == sorted(CTL_COMMANDS)
    assert complete(["vmdefragctl", "re"]) == ["reclaim", "return"]
    assert complete(["vmdefragctl", "m"]) == ["map", "metrics"]
    assert complete(["vmdefragctl", "map", "--"]) == ["--help", "--json", "--png", "--svg",
                                                     "--timeout"]
    assert complete(["vmdefragctl", "--"]) == ["--help", "--json", "--socket", "--timeout",
                                              "--version"]
    assert complete(["vmdefragctl", "reclaim", "--"]) == [
        "--evict=evict", "--evict=evict-slab", "--evict=movable", "--help", "--json",
        "--timeout", "--wait"]
    assert complete(["vmdefragctl", "check-domain", "--"]) == \
        ["--connect", "--help", "--json", "--timeout", "--xml"]
    assert complete(["vmdefragctl", "--timeout", "5", "can"]) == ["cancel"]
    assert complete(["vmdefragctl", "help", "ch"]) == ["check-domain"]
    assert complete(["vmdefragctl", "notify", "vm1", "st"]) == ["started", "stopped"]
    assert complete(["vmdefragctl", "policy", "vm1", ""]) == ["auto", "manual"]
    # no daemon on this socket: no VM names, and no error either
    assert complete(["vmdefragctl", "--socket", "/nonexistent/s", "status", ""]) == []


def test_completion_vm_names_from_daemon(workdir):
    vms = [("web1", workdir / "web1.qmp", workdir / "web1.vdf"),
           ("db-2.x", workdir / "db.qmp", workdir / "db.vdf")]
    with Daemon(workdir, vms) as d:
        sock = str(d.socket)
        assert complete(["vmdefragctl", "--socket", sock, "status", ""]) == ["db-2.x", "web1"]
        assert complete(["vmdefragctl", "--socket", sock, "reclaim", "w"]) == ["web1"]
        assert complete(["vmdefragctl", "--socket", sock, "notify", "d"]) == ["db-2.x"]
        # the SIZE after the VM is not a VM
        assert complete(["vmdefragctl", "--socket", sock, "reclaim", "web1", ""]) == []
