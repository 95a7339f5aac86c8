"""Fixtures: root-only gating (any skip fails under CI=true: tests/ci_skips.py) and jails that
always clean up; the daemons' own (tests/daemons.py) are registered here."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ci_skips import pytest_make_collect_report, pytest_runtest_makereport
from tests.support import need, unmount_below

# Hooks, registered by being names of this module: under CI=true every skip fails.
__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]
# The daemons' fixtures (own_network, haproxy_bin, unbound_bin, …): one home, every test's
pytest_plugins = ["tests.daemons"]


@pytest.fixture
def root() -> None:
    """The test needs root (mknod, mount, chroot, namespaces)."""
    need(os.geteuid() == 0, "needs root: mknod, mounts and chroot")
    need(shutil.which("unshare") is not None, "needs unshare(1) from util-linux")


@pytest.fixture
def area(tmp_path: Path, root: None) -> Iterator[Path]:
    """A root-owned 0755 scratch directory; every mount below it is removed afterwards."""
    tmp_path.chmod(0o755)
    try:
        yield tmp_path
    finally:
        unmount_below(tmp_path)


@pytest.fixture
def jail(area: Path) -> Path:
    """An empty, root-owned, 0755 jail directory."""
    path = area / "jail"
    path.mkdir(mode=0o755)
    return path


@pytest.fixture
def outside(area: Path) -> Path:
    """A directory outside the jail with a file in it: nothing may ever change here."""
    path = area / "outside"
    path.mkdir()
    (path / "secret").write_text("do not touch\n")
    return path


@pytest.fixture
def nodev_jail(area: Path) -> Path:
    """A jail on a tmpfs mounted nodev: mknod works there but the nodes do not open."""
    path = area / "nodev"
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "nodev,mode=0755", "tmpfs", str(path)], check=True
    )
    return path


@pytest.fixture
def readonly_jail(area: Path) -> Path:
    """A jail (with an empty dev/) on a read-only bind mount: creating anything gives EROFS."""
    path = area / "ro"
    (path / "dev").mkdir(parents=True)
    path.chmod(0o755)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
    return path
