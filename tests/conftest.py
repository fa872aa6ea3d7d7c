"""Honesty rules for every pytest tier (integration, slow).

  - a skip without a reason fails the test;
  - an exception raised in a helper thread (an assertion in a fake guest's
    or a sampler's thread) fails the running test at once, with its
    message: threading.excepthook records it and sends SIGUSR2 to the main
    thread, whose handler raises it there (a blocking sleep, wait or recv
    is interrupted).  One raised outside the test's call (setup, teardown,
    between tests) is reported when the call or teardown ends, so that no
    cleanup is cut short.  pytest's own threadexception plugin, which only
    warns, is off (pytest.ini).
"""
import signal
import threading
import traceback

import pytest


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
