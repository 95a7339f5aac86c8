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
