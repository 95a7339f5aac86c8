"""Hostile jails: nothing is ever written outside, and each wrong entry has a documented fate."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.support import read_in_jail, run, snapshot


def _dev(jail: Path) -> Path:
    path = jail / "dev"
    path.mkdir(mode=0o755, exist_ok=True)
    return path


def test_dev_symlink_to_outside_is_refused(jail: Path, outside: Path) -> None:
    """jail/dev -> /outside: exit 78, nothing created in the outside directory."""
    (jail / "dev").symlink_to(outside)
    before = snapshot(outside)
    result = run("prepare", "--chroot", str(jail))
    assert result.code == 78
    assert "symlink" in result.error and "dev" in result.error
    assert snapshot(outside) == before


def test_jail_itself_a_symlink_is_refused(area: Path, outside: Path) -> None:
    """--chroot naming a symlink is refused: the jail must be the real directory."""
    link = area / "link"
    link.symlink_to(outside)
    before = snapshot(outside)
    result = run("prepare", "--chroot", str(link))
    assert result.code == 78
    assert "symlink" in result.error
    assert snapshot(outside) == before


def _make_wrong(dev: Path, kind: str, outside: Path) -> None:
    target = dev / "urandom"
    if kind == "symlink-outside":
        target.symlink_to(outside / "secret")
    elif kind == "zero-file":
        target.write_bytes(b"\0" * 4096)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "null-numbers":
        os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    elif kind == "empty-dir":
        target.mkdir()


WRONG = ["symlink-outside", "zero-file", "fifo", "null-numbers", "empty-dir"]


@pytest.mark.parametrize("kind", WRONG)
def test_wrong_entry_is_replaced_and_kept_aside(jail: Path, outside: Path, kind: str) -> None:
    """The wrong entry is moved aside (never deleted), a 1:9 node replaces it, warning logged."""
    _make_wrong(_dev(jail), kind, outside)
    before_outside = snapshot(outside)
    before_jail = snapshot(jail)
    result = run("prepare", "--chroot", str(jail))
    assert result.code == 0, result.stderr
    displaced = result.named("device.displaced")
    assert [e["device"] for e in displaced] == ["urandom"]
    assert displaced[0]["level"] == "warning"
    seen = read_in_jail(jail, "urandom")
    assert seen["numbers"] == "1:9" and "error" not in seen
    assert snapshot(outside) == before_outside
    # teardown restores the jail exactly, the wrong entry included
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert snapshot(jail) == before_jail


@pytest.mark.parametrize("kind", WRONG)
def test_no_repair_refuses_wrong_entries(jail: Path, outside: Path, kind: str) -> None:
    """--no-repair: the wrong entry is an error (78) naming what was found; nothing changes."""
    _make_wrong(_dev(jail), kind, outside)
    before = snapshot(jail.parent)
    result = run("prepare", "--chroot", str(jail), "--no-repair")
    assert result.code == 78
    assert "dev/urandom" in result.error
    assert snapshot(jail.parent) == before


def test_non_empty_directory_is_never_deleted(jail: Path) -> None:
    """A directory with content at a device name is data: refused (78), left as it was."""
    (_dev(jail) / "urandom").mkdir()
    (jail / "dev" / "urandom" / "keep").write_text("data")
    result = run("prepare", "--chroot", str(jail))
    assert result.code == 78
    assert "not empty" in result.error
    assert (jail / "dev" / "urandom" / "keep").read_text() == "data"


def test_jail_writable_by_others_is_refused(jail: Path) -> None:
    """A jail writable by non-root users: 78, unless --allow-writable-jail (warns)."""
    jail.chmod(0o777)
    before = snapshot(jail)
    result = run("prepare", "--chroot", str(jail))
    assert result.code == 78
    assert "writable by a non-root user" in result.error
    assert snapshot(jail) == before
    allowed = run("prepare", "--chroot", str(jail), "--allow-writable-jail")
    assert allowed.code == 0, allowed.stderr
    assert allowed.named("jail.writable")[0]["level"] == "warning"


def test_dev_writable_by_others_is_refused_even_when_allowed(jail: Path) -> None:
    """jail/dev holds the nodes and root's record: writable by others is 78 whatever the flag."""
    _dev(jail).chmod(0o777)
    before = snapshot(jail)
    for extra in ([], ["--allow-writable-jail"]):
        result = run("prepare", "--chroot", str(jail), *extra)
        assert result.code == 78
        assert "even with --allow-writable-jail" in result.error
        assert snapshot(jail) == before


def test_jail_owned_by_a_user_is_refused(jail: Path) -> None:
    """A jail owned (and so writable) by a non-root user is refused."""
    os.chown(jail, 65534, 65534)
    result = run("prepare", "--chroot", str(jail))
    assert result.code == 78
    assert "owner 65534" in result.error
