"""What the jail must hold and who will use it, resolved on the host before entering the jail.

The jail has no /etc/passwd, so the daemon's user and groups are looked up here, once.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from jailshim.devices import DEFAULT_DEVICES, Device, select
from jailshim.errors import UsageError, said
from jailshim.files import FileMode, JailFile
from jailshim.options import DEFAULT_TIMEOUT
from jailshim.plan import Strategy

__all__ = ["MAX_ID", "Identity", "Spec", "WaitTarget", "resolve_identity"]

_Entry = TypeVar("_Entry")


class WaitTarget(NamedTuple):
    """An IP address the daemon binds, and where we learnt it."""

    ip: str
    source: str  # "--wait-addr" or "haproxy.cfg:12"
    transparent: bool = False  # the daemon binds with IP_TRANSPARENT: no need to wait

    @property
    def family(self) -> int:
        import socket

        return socket.AF_INET6 if ":" in self.ip else socket.AF_INET


class Identity(NamedTuple):
    """The daemon's uid, primary gid and supplementary groups."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


MAX_ID = 2**32 - 2  # uid_t/gid_t; 2**32 - 1 is (uid_t) -1, "no change" to the kernel


def _number(text: str, source: str, what: str) -> int:
    """``text`` (digits, after an optional +) as a UID or GID, or one usage sentence."""
    digits = text.removeprefix("+")
    if not (digits.isascii() and digits.isdigit()):
        raise UsageError(
            f"{said(source, text)} is not a {what}: after + give digits only, such as +103."
        )
    number = int(digits)
    if number > MAX_ID:
        raise UsageError(
            f"{said(source, text)} is not a valid {what} (0 to {MAX_ID}); give a {what} in "
            "that range or a name."
        )
    return number


def _by_name(lookup: Callable[[str], _Entry], name: str) -> _Entry | None:
    try:
        return lookup(name)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        return None


def _by_number(lookup: Callable[[int], _Entry], number: int) -> _Entry | None:
    try:
        return lookup(number)
    except (KeyError, OverflowError):
        return None


def _lookup_group(group: str, source: str) -> int:
    # chown's rule (POSIX; coreutils "Disambiguating names and IDs"): a name that exists wins,
    # then digits are a GID; a leading + skips the name look-up.
    if not group.startswith("+"):
        entry = _by_name(grp.getgrnam, group)
        if entry is not None:
            return entry.gr_gid
        if not (group.isascii() and group.isdigit()):
            raise UsageError(
                f"Group {said(source, group)} names no group on this host; give a group name "
                "or a GID."
            )
    return _number(group, source, "GID")


def resolve_identity(
    user: str | None,
    group: str | None,
    *,
    user_from: str = "--user",
    group_from: str = "--group",
) -> Identity | None:
    """Resolve ``user`` and ``group`` on the host as chown does; None when no user is given.

    A name that exists wins; otherwise digits are a UID/GID; ``+103`` is always the number 103
    (a user may be named "103"). ``*_from`` name the flag, variable or config they came from.
    """
    if user is None or user == "":
        if group:
            raise UsageError(f"{group_from} needs --user as well; give the daemon's user too.")
        return None
    pw: pwd.struct_passwd | None = None
    if not user.startswith("+"):
        pw = _by_name(pwd.getpwnam, user)
        if pw is None and not (user.isascii() and user.isdigit()):
            raise UsageError(
                f"User {said(user_from, user)} names no user on this host; give a user name "
                "or a UID."
            )
    if pw is None:
        uid = _number(user, user_from, "UID")
        pw = _by_number(pwd.getpwuid, uid)
        if pw is None:
            # A bare UID with no passwd entry is a valid identity (common in containers).
            gid = _lookup_group(group, group_from) if group else uid
            return Identity(str(uid), uid, gid, (gid,))
    gid = _lookup_group(group, group_from) if group else pw.pw_gid
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
    timeout: float = DEFAULT_TIMEOUT
    sockets: tuple[str, ...] = ()  # host unix sockets to bind at the same path in the jail
    wait_targets: tuple[WaitTarget, ...] = ()  # addresses the daemon binds (network readiness)
    ensure_loopback: bool = False
    files: tuple[JailFile, ...] = ()  # host files to place at the same path in the jail
    file_mode: FileMode = FileMode.COPY
    file_sets: tuple[str, ...] = ()  # named needs asked for (time, resolver, services): checked
    resolve_names: tuple[str, ...] = ()  # names getaddrinfo must resolve inside the jail
    notify_socket: str = ""  # $NOTIFY_SOCKET, for a daemon that sends READY=1 from in the jail
    crypto_libs: tuple[str, ...] = ()  # --crypto-lib: the libraries to probe, as given
    command: str = ""  # COMMAND's executable: its crypto libraries are probed
