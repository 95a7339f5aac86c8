"""The record of what prepare made, kept in the jail at dev/.jailshim-state.json.

teardown undoes exactly what is recorded here and nothing else, and only when the thing at the
name is still the very inode prepare made (same inode and device numbers). Keeping the record in
jail/dev (root-owned, refused when writable by others) makes it travel with the jail, so an
ExecStopPost= in another process, or a later container, can undo an earlier prepare.
"""

from __future__ import annotations

import contextlib
import json
import os
from enum import StrEnum
from typing import NamedTuple

from jailshim.errors import ConfigError

__all__ = ["STATE_NAME", "TMPFS_SOURCE", "Kind", "Record", "load", "remove", "save"]

STATE_NAME = ".jailshim-state.json"
# The source name of the tmpfs jailshim mounts over jail/dev; mountinfo shows it, which is how
# a later run knows the tmpfs is its own.
TMPFS_SOURCE = "jailshim"
_VERSION = 1


class Kind(StrEnum):
    MKDIR = "mkdir"  # created the directory `name` in `where`
    TMPFS = "tmpfs"  # mounted a tmpfs over jail/dev
    DISPLACED = "displaced"  # moved a wrong entry aside to `aside`
    MKNOD = "mknod"  # created a node
    BIND = "bind"  # created a placeholder (inode `ino`) and bound the host's node onto it
    SOCKET = "socket"  # the same, for a host log socket (`where` is its directory)


class Record(NamedTuple):
    kind: Kind
    name: str
    ino: int = 0
    rdev: int = 0
    aside: str = ""
    where: str = "dev"  # the directory holding `name`, relative to the jail ("" is the jail)


def _read_text(dev_fd: int) -> str | None:
    try:
        fd = os.open(STATE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, encoding="utf-8") as f:
        return f.read(1 << 20)


def load(dev_fd: int | None, where: str) -> list[Record]:
    """The records in jail/dev, oldest first; [] when there is no record."""
    if dev_fd is None:
        return []
    try:
        text = _read_text(dev_fd)
        if text is None:
            return []
        data = json.loads(text)
        return [
            Record(
                Kind(r["kind"]),
                str(r["name"]),
                int(r["ino"]),
                int(r["rdev"]),
                str(r["aside"]),
                str(r.get("where", "dev")),
            )
            for r in data["records"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{where}/{STATE_NAME} cannot be read ({exc}); it records what jailshim made. "
            "Check the jail by hand, then delete that file.",
        ) from None


def save(dev_fd: int, records: list[Record]) -> None:
    """Write the record atomically (a temporary name, then rename over the old one)."""
    tmp = f"{STATE_NAME}.{os.getpid()}"
    body = json.dumps({"version": _VERSION, "records": [r._asdict() for r in records]}, indent=1)
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o644,
        dir_fd=dev_fd,
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body + "\n")
        os.rename(tmp, STATE_NAME, src_dir_fd=dev_fd, dst_dir_fd=dev_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dev_fd)
        raise


def remove(dev_fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(STATE_NAME, dir_fd=dev_fd)
