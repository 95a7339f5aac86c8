"""Mount namespaces: which one this process is in, and whether another one still exists.

A bind or tmpfs exists only in the mount namespace that made it, while the nodes and
placeholders it sits on are shared by every namespace that sees the jail (two containers on
one volume; systemd giving each Exec* command of a unit its own namespace). teardown must not
pull a placeholder out from under a namespace that still uses it: unlinking a file that is a
mount point elsewhere silently detaches that mount (Linux >= 3.18), leaving the other daemon
an empty file at dev/urandom.
"""

from __future__ import annotations

import os

__all__ = [
    "in_initial_pid_namespace",
    "mounts_vanish_on_exit",
    "namespace_alive",
    "pid_namespace",
    "processes_rooted_at",
    "root_identity",
]

# The initial PID namespace's inode number is fixed by the kernel (PROC_PID_INIT_INO).
_INITIAL_PID_NS = 0xEFFFFFFC


def pid_namespace() -> int:
    """This process's PID namespace (the inode of /proc/self/ns/pid); 0 when unreadable."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def in_initial_pid_namespace() -> bool:
    """Whether this process sees every process of the machine under its own PID."""
    return pid_namespace() == _INITIAL_PID_NS


def namespace_alive(ns: int, pidns: int = 0) -> bool:
    """Whether mount namespace ``ns``, made by a process of PID namespace ``pidns``, may still
    be in use.

    True unless proven gone. /proc shows every process of this PID namespace and of those below
    it: from the initial one that is every process; from inside a container (systemd as PID 1
    there, whose ExecStartPre/ExecStart/ExecStopPost each had a namespace of their own) it is
    every process that namespace's daemon could be. A namespace made in a PID namespace we cannot
    see (another container on the same volume) is assumed alive. One held open only by a bind of
    its nsfs file is not seen either; it holds no daemon, so counting it gone is harmless.
    """
    mine = pid_namespace()
    if not mine or mine not in (_INITIAL_PID_NS, pidns):
        return True
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(f"/proc/{entry.name}/ns/mnt").st_ino == ns:
                    return True
            except OSError:
                continue
    return False


def mounts_vanish_on_exit() -> bool | None:
    """Whether mounts made by this process vanish before the daemon starts.

    True when systemd started us (INVOCATION_ID) in a mount namespace other than PID 1's: a
    unit with BindReadOnlyPaths=, PrivateTmp=, ProtectSystem= … gives *each* Exec* command its
    own namespace, so a bind made in ExecStartPre= is gone by ExecStart= (seen: count 1 in
    ExecStartPre's mountinfo, 0 in ExecStart's). None when PID 1's namespace cannot be read.
    """
    if not os.environ.get("INVOCATION_ID"):
        return False
    try:
        return os.stat("/proc/self/ns/mnt").st_ino != os.stat("/proc/1/ns/mnt").st_ino
    except OSError:
        return None


_AT_STATX_DONT_SYNC, _STATX_INO = 0x4000, 0x100


def root_identity(pid: int | str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of /proc/PID/root from the attributes the kernel has cached (statx
    AT_STATX_DONT_SYNC: a root on a server that never answers cannot hold the caller); None
    when it cannot be read (gone, a zombie, refused)."""
    import ctypes
    import struct

    buf = ctypes.create_string_buffer(256)  # struct statx
    path = f"/proc/{pid}/root".encode()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statx(-100, path, _AT_STATX_DONT_SYNC, _STATX_INO, buf) != 0:
        return None
    (ino,) = struct.unpack_from("<Q", buf.raw, 0x20)
    major, minor = struct.unpack_from("<II", buf.raw, 0x88)
    return os.makedev(major, minor), ino


def processes_rooted_at(identity: tuple[int, int]) -> list[int]:
    """The PIDs this process can see whose root directory is the directory ``identity``
    ((st_dev, st_ino)): the daemons still chrooted in a jail, in any mount namespace. A
    process whose root reads "/" is passed over without a stat (most of them)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/root") == "/":
                continue
        except OSError:  # gone, a zombie, or refused: nothing it can be told to use
            continue
        if root_identity(name) == identity:
            found.append(int(name))
    return sorted(found)
