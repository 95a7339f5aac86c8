"""The mount table and the two mount syscalls jailshim uses.

mount(2) and umount2(2) take paths, and paths follow symlinks. Every call here therefore takes a
file descriptor opened with O_PATH|O_NOFOLLOW (checked by the caller) and names it as
/proc/self/fd/N: the kernel resolves that magic link to the very inode the fd holds, so a
symlink swapped into the jail between the check and the mount cannot redirect it outside
(the technique runc uses for the same reason).
"""

from __future__ import annotations

import os
import re
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import ctypes

__all__ = [
    "MNT_DETACH",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "MountEntry",
    "MountTable",
    "bind",
    "fd_path",
    "flags_of_mount",
    "mount_tmpfs",
    "parse_mountinfo",
    "read_mount_table",
    "remount_bind",
    "unmount",
    "unmount_at",
]

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_RELATIME = 1 << 21
MNT_DETACH = 2

# statvfs f_flag bits and the mount flag each stands for. A bind remount must repeat the flags
# a user namespace has locked (nodev, nosuid, atime) or the kernel answers EPERM.
_ST_TO_MS = {
    os.ST_RDONLY: MS_RDONLY,
    os.ST_NOSUID: MS_NOSUID,
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: MS_NOATIME,
    os.ST_NODIRATIME: MS_NODIRATIME,
    os.ST_RELATIME: MS_RELATIME,
}


_OCTAL = re.compile(r"\\([0-7]{3})")


class MountEntry(NamedTuple):
    """One line of /proc/self/mountinfo."""

    mount_id: int
    parent_id: int
    mount_point: str
    fstype: str
    source: str
    options: str
    dev: int = 0  # the mounted filesystem's device (major:minor), as st_dev numbers it


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \ooo octal.
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse mountinfo text (proc(5)); lines that do not fit the format are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            major, minor = fields[2].split(":")
            entries.append(
                MountEntry(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    mount_point=_unescape(fields[4]),
                    options=fields[5],
                    fstype=fields[sep + 1],
                    source=_unescape(fields[sep + 2]),
                    dev=os.makedev(int(major), int(minor)),
                )
            )
        except (ValueError, IndexError):
            continue
    return entries


class MountTable:
    """The mount table as read once; questions about mount points are answered from it."""

    def __init__(self, entries: list[MountEntry]) -> None:
        self.entries = entries
        self._by_point: dict[str, MountEntry] = {}
        for entry in entries:  # the last mount on a point is the visible one
            self._by_point[entry.mount_point] = entry

    def __len__(self) -> int:
        return len(self.entries)

    def at(self, path: str) -> MountEntry | None:
        """The visible mount whose mount point is exactly ``path``, if any."""
        return self._by_point.get(path)


def read_mount_table() -> MountTable:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return MountTable(parse_mountinfo(f.read()))


def fd_path(fd: int) -> str:
    """The /proc magic link that names exactly the object ``fd`` holds."""
    return f"/proc/self/fd/{fd}"


@cache
def _libc() -> ctypes.CDLL:
    # The C library is already loaded in this process: no ctypes.util.find_library, which
    # runs `ldconfig -p` in a subprocess (milliseconds on every start). ctypes itself only
    # here: a warm jail mounts nothing, and its import cost ~1.2 ms of every run (issue 28).
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    import ctypes

    libc = _libc()
    result = libc.mount(
        None if source is None else os.fsencode(source),
        os.fsencode(target),
        None if fstype is None else fstype.encode(),
        ctypes.c_ulong(flags),
        None if data is None else data.encode(),
    )
    _check(result, f"mount {source} on {target}")


def bind(source_fd: int, target_fd: int) -> None:
    """Bind-mount what ``source_fd`` holds onto what ``target_fd`` holds (both O_PATH fds)."""
    _mount(fd_path(source_fd), fd_path(target_fd), None, MS_BIND, None)


def flags_of_mount(fd: int) -> int:
    """The MS_* flags of the mount that ``fd`` lives on, as a remount must repeat them."""
    st_flags = os.fstatvfs(fd).f_flag
    return sum(ms for st, ms in _ST_TO_MS.items() if st_flags & st)


def remount_bind(fd: int, add_flags: int) -> None:
    """Remount the bind mount whose root ``fd`` holds with ``add_flags`` added to its own."""
    flags = MS_REMOUNT | MS_BIND | flags_of_mount(fd) | add_flags
    _mount(None, fd_path(fd), None, flags, None)


def mount_tmpfs(target_fd: int, source: str, flags: int, data: str) -> None:
    """Mount a tmpfs named ``source`` over the directory ``target_fd`` holds."""
    _mount(source, fd_path(target_fd), "tmpfs", flags, data)


def unmount_at(dir_fd: int, name: str) -> None:
    """Detach the mount on ``name`` in ``dir_fd`` (looked up without following a symlink)."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        unmount(fd)
    finally:
        os.close(fd)


def unmount(fd: int) -> None:
    """Detach the mount whose root ``fd`` holds, with everything mounted below it.

    Lazy (MNT_DETACH) because ``fd`` itself pins the mount: a plain umount would answer EBUSY.
    The mount leaves the namespace at once and is freed when the fd closes.
    """
    result = _libc().umount2(os.fsencode(fd_path(fd)), MNT_DETACH)
    _check(result, "umount")
