"""What the jail must hold and who will use it, resolved on the host before entering the jail.

The jail has no /etc/passwd, so the daemon's user and groups are looked up here, once.
"""

from __future__ import annotations

import grp
import pwd
from typing import TYPE_CHECKING, NamedTuple

from jailshim.devices import DEFAULT_DEVICES, Device, select
from jailshim.errors import UsageError
from jailshim.plan import Strategy

if TYPE_CHECKING:
    from jailshim.verify.network import WaitTarget

__all__ = ["Identity", "Spec", "resolve_identity"]


class Identity(NamedTuple):
    """The daemon's uid, primary gid and supplementary groups."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def _lookup_group(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(
            f"Group {group!r} (from --group or the daemon's config) names no group on this "
            "host; give a group name or GID."
        ) from None


def resolve_identity(user: str | None, group: str | None) -> Identity | None:
    """Resolve ``user`` (name or UID) and ``group`` on the host; None when no user is given."""
    if user is None or user == "":
        if group:
            raise UsageError("--group needs --user as well; give the daemon's user too.")
        return None
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if not user.isdigit():
            raise UsageError(
                f"User {user!r} (from --user or the daemon's config) names no user on this "
                "host; give a user name or UID."
            ) from None
        # A bare UID with no passwd entry is a valid identity (common in containers).
        gid = _lookup_group(group) if group else int(user)
        return Identity(user, int(user), gid, (gid,))
    gid = _lookup_group(group) if group else pw.pw_gid
    groups = {gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
    return Identity(pw.pw_name, pw.pw_uid, gid, tuple(sorted(groups)))


class Spec(NamedTuple):
    """One run's settings, after flags, JAILSHIM_* variables and daemon adapters are merged."""

    chroot: str
    devices: tuple[Device, ...] = select(DEFAULT_DEVICES)
    identity: Identity | None = None
    strategy: Strategy = Strategy.AUTO
    dry_run: bool = False
    allow_writable_jail: bool = False
    repair: bool = True
    verify: bool = True
    timeout: float = 30.0
    sockets: tuple[str, ...] = ()  # host unix sockets to bind at the same path in the jail
    wait_targets: tuple[WaitTarget, ...] = ()  # addresses the daemon binds (network readiness)
    ensure_loopback: bool = False
