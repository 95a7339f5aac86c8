"""What this process may do: create device nodes, mount.

Read from /proc and one ioctl, never by trying, so the plan can be printed with --dry-run and a
jail is never touched by a step that was bound to fail. apply.py still handles a refusal the
prediction missed (an LSM, a seccomp filter) by falling down the ladder.
"""

from __future__ import annotations

import fcntl
import os
from typing import NamedTuple

__all__ = ["Powers", "decide_powers", "parse_effective_caps", "survey_powers"]

CAP_MKNOD = 27
CAP_SYS_ADMIN = 21
NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1), linux/nsfs.h
_FULL_UID_MAP = ("0", "0", "4294967295")


class Powers(NamedTuple):
    """Whether mknod and mount are expected to work, and if not, why (a phrase)."""

    can_mknod: bool
    can_mount: bool
    no_mknod_because: str = ""
    no_mount_because: str = ""


def parse_effective_caps(status_text: str) -> int:
    """The CapEff bit mask from /proc/PID/status text (0 when absent)."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _in_initial_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            lines = f.read().split("\n")
    except OSError:
        return True  # no user namespaces in this kernel
    return tuple(lines[0].split()) == _FULL_UID_MAP


def _mount_ns_owned_by_own_user_ns() -> bool | None:
    """True when our user namespace owns our mount namespace (None: kernel cannot say)."""
    try:
        mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            owner = fcntl.ioctl(mnt, NS_GET_USERNS)
        except PermissionError:
            # The kernel hides an owner outside our own user namespace: a parent owns it.
            return False
        finally:
            os.close(mnt)
        try:
            return os.fstat(owner).st_ino == os.stat("/proc/self/ns/user").st_ino
        finally:
            os.close(owner)
    except OSError:
        return None


def decide_powers(caps: int, initial_userns: bool, owns_mount_ns: bool | None) -> Powers:
    """Pure: the powers implied by effective capabilities and namespace facts."""
    can_mknod, no_mknod = True, ""
    if not caps & (1 << CAP_MKNOD):
        can_mknod, no_mknod = False, "CAP_MKNOD is not in the effective capability set"
    elif not initial_userns:
        # The kernel only honours CAP_MKNOD in the initial user namespace (vfs_mknod).
        can_mknod, no_mknod = False, "device nodes cannot be created inside a user namespace"
    can_mount, no_mount = True, ""
    if not caps & (1 << CAP_SYS_ADMIN):
        can_mount, no_mount = False, "CAP_SYS_ADMIN is not in the effective capability set"
    elif not initial_userns and owns_mount_ns is False:
        can_mount, no_mount = (
            False,
            "the mount namespace belongs to a parent user namespace, where this process has no "
            "CAP_SYS_ADMIN",
        )
    return Powers(can_mknod, can_mount, no_mknod, no_mount)


def survey_powers() -> Powers:
    with open("/proc/self/status", encoding="ascii") as f:
        caps = parse_effective_caps(f.read())
    initial = _in_initial_user_namespace()
    return decide_powers(caps, initial, None if initial else _mount_ns_owned_by_own_user_ns())
