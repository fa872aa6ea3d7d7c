"""Fixtures for the slow tier (tests/slow, run by `make check-slow`).

workdir   a temporary directory under build/ for the test's sockets, images,
          logs and its copy of the cached rootfs.  It is removed afterwards
          only when nothing is mounted below it: a chroot's bind mount of
          /dev or /sys left behind must never be walked by rmtree.
"""
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.guest import BUILD  # noqa: E402
from chroot import mounts_below  # noqa: E402


@pytest.fixture
def workdir():
    BUILD.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="vdf-slow-", dir=BUILD))
    yield d
    left = mounts_below(d)
    if left:
        raise RuntimeError(f"still mounted, {d} kept: {left}")
    shutil.rmtree(d)
