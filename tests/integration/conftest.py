"""Fixtures shared by the integration tests.

kernel    parametrizes a test over every installed guest kernel (ids: the
          kernel's major.minor, e.g. "6.1", "6.12")
workdir   a temporary directory for the test's sockets and logs
agent_kernel  the first guest kernel, for tests that need the module and
          the agent built (skips the test if they are not)
figures   records named measurements; they are printed together at the end
          of the run, so `make check` shows what was measured, not just
          whether it passed

No guest kernel installed is an error at collection, not a test silently
left out.  The rules for every tier (helper-thread failures, skip reasons)
are in tests/conftest.py.
"""
import sys
import tempfile
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
