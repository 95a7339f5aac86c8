"""Undo what prepare recorded, and only that, and only where it is still what prepare made."""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Any

from jailshim import state
from jailshim.errors import PrepareOSError
from jailshim.jail import mounts
from jailshim.jail.safepath import Jail
from jailshim.plan import describe_errno
from jailshim.state import Kind, Record

__all__ = ["teardown"]


def _lstat(dev_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dev_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _undo(jail: Jail, record: Record, table: mounts.MountTable) -> str:
    """Undo one record; returns what was done, or why it was left."""
    dir_fd = jail.open_dir(record.where) if record.where else os.dup(jail.fd)
    if dir_fd is None:
        return f"left: {record.where}/ is gone"
    try:
        return _undo_in(jail, dir_fd, record, table)
    finally:
        os.close(dir_fd)


def _undo_in(jail: Jail, dev_fd: int, record: Record, table: mounts.MountTable) -> str:
    name = record.name
    dev_path = f"{jail.real}/{record.where}".rstrip("/")
    if record.kind is Kind.MKNOD:
        st = _lstat(dev_fd, name)
        if (
            st is None
            or not stat.S_ISCHR(st.st_mode)
            or (st.st_ino, st.st_rdev) != (record.ino, record.rdev)
        ):
            return "left: changed since prepare"
        os.unlink(name, dir_fd=dev_fd)
        return "removed node"
    if record.kind in (Kind.BIND, Kind.SOCKET):
        if table.at(f"{dev_path}/{name}") is not None:
            mounts.unmount_at(dev_fd, name)
        st = _lstat(dev_fd, name)
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_ino != record.ino:
            return "unmounted; placeholder left: changed since prepare"
        os.unlink(name, dir_fd=dev_fd)
        return "unmounted, placeholder removed"
    if record.kind is Kind.DISPLACED:
        if _lstat(dev_fd, name) is not None:
            return f"left dev/{record.aside}: dev/{name} exists again"
        os.rename(record.aside, name, src_dir_fd=dev_fd, dst_dir_fd=dev_fd)
        return f"restored from dev/{record.aside}"
    if record.kind is Kind.TMPFS:
        entry = table.at(f"{jail.real}/dev")
        if entry is None or entry.fstype != "tmpfs" or entry.source != state.TMPFS_SOURCE:
            return "left: no jailshim tmpfs on dev/"
        mounts.unmount_at(jail.fd, "dev")
        return "unmounted tmpfs"
    # Kind.MKDIR
    try:
        os.rmdir(name, dir_fd=dev_fd)
    except OSError as exc:
        return f"left {record.where}/{name}/: {exc.strerror}".replace("//", "/")
    return f"removed {record.where}/{name}/".lstrip("/")


def teardown(jail: Jail, log: Any) -> int:
    """Undo every record, newest first. Returns how many records were undone."""
    dev_fd = jail.open_dir("dev")
    if dev_fd is None:
        log.info("teardown", outcome="nothing to undo", reason="no dev/ in the jail")
        return 0
    try:
        records = state.load(dev_fd, f"{jail.real}/dev")
        if not records:
            log.info("teardown", outcome="nothing to undo", reason=f"no {state.STATE_NAME}")
            return 0
        table = mounts.read_mount_table()
        # The record lives in dev/: drop it before dev/ itself goes (tmpfs unmount, rmdir).
        state.remove(dev_fd)
        for done, record in enumerate(reversed(records)):
            try:
                outcome = _undo(jail, record, table)
            except OSError as exc:
                remaining = records[: len(records) - done]
                with contextlib.suppress(OSError):
                    state.save(dev_fd, remaining)
                raise PrepareOSError(
                    f"Undoing {record.kind} of {jail.real}/dev/{record.name} failed: "
                    f"{describe_errno(exc.errno or 0)}; the rest is still recorded, run teardown "
                    "again once that is fixed.",
                ) from None
            log.info("teardown", kind=str(record.kind), device=record.name, outcome=outcome)
            if record.kind is Kind.TMPFS:  # what was below the tmpfs is dev/ from now on
                os.close(dev_fd)
                dev_fd = jail.open_dir("dev") or os.dup(jail.fd)
        return len(records)
    finally:
        os.close(dev_fd)
