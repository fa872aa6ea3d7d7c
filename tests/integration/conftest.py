"""Fixtures shared by the integration tests.

kernel    parametrizes a test over every installed guest kernel (ids: the
          kernel's major.minor, e.g. "6.1", "6.12")
workdir   a temporary directory for the test's sockets and logs
agent_kernel  the first guest kernel, for tests that need the module and
          the agent built (skips the test if they are not)
figures   records named measurements; they are printed together at the end
          of the run, so `make check` shows what was measured, not just
          whether it passed

Honesty rules, for every test:
  - no guest kernel installed is an error at collection, not a test
    silently left out;
  - a skip without a reason fails the test;
  - an exception raised in a helper thread (an assertion in a fake guest's
    or a sampler's thread) fails the test that runs at once, with its
    message: threading.excepthook records it and sends SIGUSR2 to the main
    thread, whose handler raises it there (a blocking sleep, wait or recv
    is interrupted).  One raised outside the test's call (setup, teardown,
    between tests) is reported when the call ends, so that no cleanup is
    cut short.
"""
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.guest import BUILD, guest_kernels  # noqa: E402

_FIGURES = []


def _kernel_id(release):
    return ".".join(release.split(".")[:2])


def pytest_generate_tests(metafunc):
    if "kernel" in metafunc.fixturenames:
        kernels = guest_kernels()
        if not kernels:
            pytest.fail("no guest kernel: build-aux/guest-kernels.sh lists none "
                        "(make deps installs them)", pytrace=False)
        metafunc.parametrize("kernel", kernels, ids=[_kernel_id(k) for k in kernels])


class HelperThreadFailed(AssertionError):
    """An exception in a helper thread, raised in the test's main thread."""


_thread_failures = []       # messages not yet raised in the main thread
_armed = False              # the main thread runs a test's call phase


def _thread_excepthook(args):
    if args.exc_type is SystemExit:
        return
    where = args.thread.name if args.thread is not None else "a thread"
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value,
                                              args.exc_traceback))
    _thread_failures.append(f"in helper thread {where}: "
                            f"{args.exc_type.__name__}: {args.exc_value}\n{text}")
    if _armed:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR2)


def _raise_thread_failure(signum, frame):
    global _armed
    if _armed and _thread_failures:
        _armed = False          # once: the test's own cleanup runs in peace
        raise HelperThreadFailed(_thread_failures.pop(0))


def pytest_configure(config):
    threading.excepthook = _thread_excepthook
    signal.signal(signal.SIGUSR2, _raise_thread_failure)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    global _armed
    _thread_failures.clear()
    _armed = True
    try:
        yield
    finally:
        _armed = False
    if _thread_failures:
        msg = _thread_failures[0]
        _thread_failures.clear()
        raise HelperThreadFailed(msg)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield
    if _thread_failures:
        msg = _thread_failures[0]
        _thread_failures.clear()
        raise HelperThreadFailed(msg)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2].strip()
        if reason.startswith("Skipped"):       # pytest.skip("") says "Skipped"
            reason = reason[len("Skipped"):].lstrip(":")
        if not reason.strip():
            report.outcome = "failed"
            report.longrepr = f"{report.longrepr[0]}:{report.longrepr[1]}: " \
                              "skipped without a reason (pytest.skip needs one)"


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="vdf-test-") as d:
        yield Path(d)


@pytest.fixture
def agent_kernel():
    kernel = guest_kernels()[0]
    if not (BUILD / "agent/vmdefrag-agent").exists() or \
            not (BUILD / "module" / kernel / "vmdefrag.ko").exists():
        pytest.skip("needs build/agent/vmdefrag-agent and the module for " + kernel)
    return kernel


@pytest.fixture
def figures(request):
    def record(name, value, unit=""):
        _FIGURES.append((request.node.nodeid.split("::")[-1], name, value, unit))
    return record


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    terminalreporter.section("measured figures")
    for test, name, value, unit in _FIGURES:
        if isinstance(value, float):
            value = f"{value:.1f}"
        terminalreporter.write_line(f"{test:48} {name:40} {value} {unit}")
