"""Gather the facts plan.decide needs: read-only syscalls on the jail, /proc, the mount table."""

from __future__ import annotations

import os

from jailshim.devices import Device
from jailshim.errors import ConfigError
from jailshim.jail.mounts import MountTable
from jailshim.jail.powers import Powers
from jailshim.jail.safepath import Entry, EntryKind, Jail, inspect_entry, writable_by_non_root
from jailshim.plan import DevDir, Survey
from jailshim.state import TMPFS_SOURCE

__all__ = ["check_ownership", "survey"]


def check_ownership(jail: Jail, dev_fd: int | None, *, allow_writable: bool) -> list[str]:
    """Refuse a jail (or jail/dev) that a non-root user can write to; warnings if allowed.

    Such a user could swap entries under us or replace a node after we checked it.
    """
    found = []
    checked = [(jail.real, jail.stat)]
    if dev_fd is not None:
        checked.append((f"{jail.real}/dev", os.fstat(dev_fd)))
    for where, st in checked:
        if writable_by_non_root(st):
            found.append(
                f"{where} (owner {st.st_uid}, group {st.st_gid}, mode {st.st_mode & 0o7777:04o})"
            )
    if found and not allow_writable:
        raise ConfigError(
            f"The jail is writable by a non-root user: {', '.join(found)}; make it owned by "
            "root and not group/other-writable, or pass --allow-writable-jail.",
            chroot=jail.path,
        )
    return [f"writable by a non-root user: {w}" for w in found]


def survey(
    jail: Jail, dev_fd: int | None, devices: tuple[Device, ...], mounts: MountTable, powers: Powers
) -> Survey:
    fs_fd = dev_fd if dev_fd is not None else jail.fd
    flags = os.fstatvfs(fs_fd).f_flag
    dev_path = f"{jail.real}/dev"
    dev_mount = mounts.at(dev_path)
    dev = DevDir(
        exists=dev_fd is not None,
        readonly=bool(flags & os.ST_RDONLY),
        nodev=bool(flags & os.ST_NODEV),
        ours_tmpfs=dev_mount is not None
        and dev_mount.fstype == "tmpfs"
        and dev_mount.source == TMPFS_SOURCE,
    )
    entries = {
        d.name: (
            inspect_entry(dev_fd, dev_path, d.name, mounts)
            if dev_fd is not None
            else Entry(d.name, EntryKind.ABSENT)
        )
        for d in devices
    }
    return Survey(jail=jail.real, dev=dev, entries=entries, powers=powers)
