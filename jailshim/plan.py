"""Pure: from what the jail holds and what this process may do, decide a step per device.

No syscalls here. ``survey`` (jail/survey.py) gathers the facts; ``decide`` turns them into a
Plan that --dry-run prints and apply.py carries out. The ladder, from cheapest to most work:

    nothing      the node is there, right, and opens
    mknod        create it (needs CAP_MKNOD in the initial user namespace, a non-nodev fs)
    bind         bind the host's node onto an empty file (needs CAP_SYS_ADMIN over the mount ns)
    tmpfs+bind   the jail is read-only: a small tmpfs over jail/dev, then bind inside it
"""

from __future__ import annotations

import errno
import os
from enum import StrEnum
from typing import NamedTuple

from jailshim.devices import Device
from jailshim.errors import ConfigError
from jailshim.files import FileAction, FileFacts, FileMode, FileStep, decide_file
from jailshim.jail.powers import Powers
from jailshim.jail.safepath import Entry, EntryKind

__all__ = [
    "Action",
    "DevDir",
    "DeviceStep",
    "Plan",
    "SocketFacts",
    "SocketStep",
    "Strategy",
    "Survey",
    "decide",
    "describe_errno",
    "is_right",
    "missing_powers",
    "refusal_sentence",
]


class Strategy(StrEnum):
    AUTO = "auto"
    MKNOD = "mknod"
    BIND = "bind"
    TMPFS = "tmpfs"


class Action(StrEnum):
    NOTHING = "nothing"
    MKNOD = "mknod"
    BIND = "bind"


class DevDir(NamedTuple):
    """jail/dev as surveyed. ``exists`` False means it must be created (if the jail allows)."""

    exists: bool
    readonly: bool  # of dev's filesystem, or of the jail's when dev is absent
    nodev: bool
    ours_tmpfs: bool = False  # a tmpfs jailshim mounted earlier (writable, nodev by design)


class SocketFacts(NamedTuple):
    """A host unix socket (a daemon's log target) and what stands at its path in the jail."""

    path: str  # absolute, the same on the host and inside the jail
    host_problem: str  # "" when the host path is a socket; else what is wrong with it
    host_id: tuple[int, int]
    entry: Entry  # at the path in the jail (ABSENT when a directory is missing)
    entry_id: tuple[int, int]
    readonly: bool  # the filesystem of the deepest existing directory
    notify: bool = False  # $NOTIFY_SOCKET (the daemon's READY=1), not a log socket

    @property
    def role(self) -> str:
        """What the socket is for, as sentences and log events name it."""
        return "$NOTIFY_SOCKET" if self.notify else "log socket"

    @property
    def under_dev(self) -> bool:
        return self.path.startswith("/dev/") and self.path.count("/") == 2


class Survey(NamedTuple):
    """Everything ``decide`` needs to know, gathered by jail/survey.py."""

    jail: str
    dev: DevDir
    entries: dict[str, Entry]
    powers: Powers
    sockets: tuple[SocketFacts, ...] = ()
    files: tuple[FileFacts, ...] = ()
    # (directory, why): a directory on whose way a user other than root could move one out of
    # the jail (safepath.Jail.walk_proving); no step may act there
    unpinned: tuple[tuple[str, str], ...] = ()


class DeviceStep(NamedTuple):
    device: Device
    action: Action
    found: Entry
    reason: str

    @property
    def displaces(self) -> bool:
        """Whether a wrong entry must be moved aside first."""
        return (
            self.action is not Action.NOTHING
            and self.found.kind is not EntryKind.ABSENT
            and not self.found.placeholder  # bound in another namespace: bind over, never move
        )


class SocketStep(NamedTuple):
    facts: SocketFacts
    action: Action  # NOTHING or BIND
    reason: str


class Plan(NamedTuple):
    strategy: Strategy
    make_dev_dir: bool
    mount_tmpfs: bool
    steps: tuple[DeviceStep, ...]
    nodev: bool = False  # the nodes would land on a nodev filesystem
    sockets: tuple[SocketStep, ...] = ()
    files: tuple[FileStep, ...] = ()

    @property
    def changes_anything(self) -> bool:
        return (
            self.make_dev_dir
            or self.mount_tmpfs
            or any(s.action is not Action.NOTHING for s in self.steps)
            or any(f.action is not FileAction.NOTHING for f in self.files)
        )

    def render(self) -> str:
        """The plan as a few lines for people (--dry-run)."""
        lines = []
        if self.make_dev_dir:
            lines.append("create dev/ (mode 0755)")
        if self.mount_tmpfs:
            lines.append("mount a tmpfs over dev/ (mode 0755, nodev, nosuid, noexec)")
        for s in self.steps:
            what = f"dev/{s.device.name:<8} {s.device.numbers:<5} {s.action:<8}"
            lines.append(f"{what} found {s.found.describe()}: {s.reason}")
        for sock in self.sockets:
            lines.append(f"{sock.facts.path:<20} {sock.action:<8} {sock.reason}")
        for f in self.files:
            lines.append(f"{f.facts.file.path:<20} {f.action:<8} {f.reason}")
        return "\n".join(lines)


def is_right(device: Device, entry: Entry) -> bool:
    """The node is the allowlisted device, everyone may read and write it, and it opens."""
    return (
        entry.kind is EntryKind.CHAR
        and entry.rdev == device.rdev
        and entry.mode & 0o666 == 0o666
        and entry.open_errno not in (errno.EACCES, errno.EPERM)
    )


def _refuse_unrepairable(survey: Survey, steps: list[tuple[Device, Entry]], repair: bool) -> None:
    for device, entry in steps:
        where = f"{survey.jail}/dev/{device.name}"
        if entry.kind is EntryKind.ABSENT or entry.placeholder:
            continue
        if not repair:
            raise ConfigError(
                f"{where} is {entry.describe()}, not the {device.name} device "
                f"{device.numbers} with mode {device.mode:04o} that opens; remove it, or drop "
                "--no-repair to let jailshim replace it.",
                device=device.name,
            )
        if entry.kind is EntryKind.DIRECTORY and not entry.dir_empty:
            raise ConfigError(
                f"{where} is a directory that is not empty; jailshim will not delete data: "
                f"move it away and run again.",
                device=device.name,
            )
        if entry.mountpoint:
            raise ConfigError(
                f"{where} is a mount point of {entry.describe()} that jailshim did not make; "
                f"unmount it and run again.",
                device=device.name,
            )


def missing_powers(powers: Powers, nodev: bool) -> str:
    """Why mknod and bind cannot work here, as a clause (empty when nothing is known missing)."""
    parts = []
    if not powers.can_mknod:
        parts.append(
            f"{powers.no_mknod_because} (mknod needs CAP_MKNOD in the initial user namespace)"
        )
    elif nodev:
        parts.append("the filesystem is mounted nodev, so nodes made there do not open")
    if not powers.can_mount:
        parts.append(
            f"{powers.no_mount_because} (mounting needs CAP_SYS_ADMIN in the user namespace that "
            "owns the mount namespace)"
        )
    return "; ".join(parts)


REMEDY = (
    "run jailshim as root in the initial user namespace, or give it CAP_SYS_ADMIN over its own "
    "mount namespace (podman/docker --cap-add=SYS_ADMIN, unshare --mount), or ship the nodes "
    "in the image"
)


def refusal_sentence(where: str, tried: list[str], powers: Powers, nodev: bool) -> str:
    """The one sentence for exit 77: what was tried, what the kernel said, what is missing."""
    missing = missing_powers(powers, nodev)
    return (
        f"Cannot make {where}: the kernel refused {' and '.join(tried)}"
        + (f"; {missing}" if missing else "")
        + f"; {REMEDY}."
    )


def decide(
    survey: Survey,
    devices: tuple[Device, ...],
    strategy: Strategy = Strategy.AUTO,
    *,
    repair: bool = True,
    file_mode: FileMode = FileMode.COPY,
) -> Plan:
    """The plan for ``devices``; raises ConfigError when the jail itself rules every step out.

    When the powers predict that every step will be refused, the plan still says what to try:
    apply.py then reports what the kernel really answered (exit 77), having changed nothing.
    """
    plan = _decide_devices(survey, devices, strategy, repair=repair)
    files = tuple(decide_file(f, file_mode, survey.jail) for f in survey.files)
    _refuse_unpinned(survey, plan.sockets, files)
    acting = [f.facts.file.path for f in files if f.action is not FileAction.NOTHING]
    if acting and (plan.mount_tmpfs or survey.dev.ours_tmpfs):
        raise ConfigError(
            f"{survey.jail}/dev is (or gets) a tmpfs, so jailshim's record of the jail files "
            f"({', '.join(acting)}) would vanish with the mount namespace; ship them in the "
            "jail image, or let dev/ live on the jail's own filesystem (--strategy auto, "
            "a writable jail).",
        )
    return plan._replace(files=files)


def _refuse_unpinned(
    survey: Survey, sockets: tuple[SocketStep, ...], files: tuple[FileStep, ...]
) -> None:
    """A step that would bind or write in a directory a user other than root could move out
    of the jail is refused: root's mount or file would go along, out of the jail (seen: a
    read-only bind of the log socket in the user's own directory outside, prepare exiting 0)."""
    unpinned = dict(survey.unpinned)
    acting = [os.path.dirname(s.facts.path).strip("/") for s in sockets if s.action is Action.BIND]
    acting += [f.facts.where for f in files if f.action is not FileAction.NOTHING]
    for where in acting:
        if where in unpinned:
            raise ConfigError(unpinned[where])


def _decide_devices(
    survey: Survey, devices: tuple[Device, ...], strategy: Strategy, *, repair: bool
) -> Plan:
    dev = survey.dev
    sockets = _socket_steps(survey, dev_gets_tmpfs=False)
    wrong = [
        (d, survey.entries[d.name]) for d in devices if not is_right(d, survey.entries[d.name])
    ]
    dev_writes = any(s.action is Action.BIND and s.facts.under_dev for s in sockets)
    if not wrong and not (dev_writes and dev.readonly and not dev.ours_tmpfs):
        # idempotent: a right jail is left alone, whatever the strategy
        steps = tuple(
            DeviceStep(d, Action.NOTHING, survey.entries[d.name], "already right") for d in devices
        )
        return Plan(strategy, False, False, steps, sockets=sockets)

    doubt = missing_powers(survey.powers, dev.nodev)
    mount_tmpfs = strategy is Strategy.TMPFS and not dev.ours_tmpfs
    if dev.readonly and not dev.ours_tmpfs:
        if strategy in (Strategy.MKNOD, Strategy.BIND):
            raise ConfigError(
                f"{survey.jail}/dev is on a read-only filesystem, so --strategy {strategy} cannot "
                "create anything there; use --strategy tmpfs or auto.",
            )
        mount_tmpfs = True
    if mount_tmpfs:
        if not dev.exists:
            why = (
                "is read-only and has no dev/ directory to mount a tmpfs on; create the empty "
                "directory dev/ in the image."
                if dev.readonly
                else "has no dev/ directory for --strategy tmpfs to mount on; create the empty "
                "directory dev/, or use --strategy auto."
            )
            raise ConfigError(f"{survey.jail} {why}")
        # The tmpfs hides everything below it: every device is bound afresh, wrong or not.
        reason = "inside the new tmpfs (nodev)" + (
            "" if survey.powers.can_mount else f"; expected to be refused: {doubt}"
        )
        steps = tuple(
            DeviceStep(d, Action.BIND, Entry(d.name, EntryKind.ABSENT), reason) for d in devices
        )
        sockets = _socket_steps(survey, dev_gets_tmpfs=True)
        return Plan(strategy, False, True, steps, sockets=sockets)

    _refuse_unrepairable(survey, wrong, repair)
    steps = tuple(_device_step(survey, d, strategy, doubt) for d in devices)
    return Plan(strategy, not dev.exists, False, steps, nodev=dev.nodev, sockets=sockets)


def _device_step(survey: Survey, d: Device, strategy: Strategy, doubt: str) -> DeviceStep:
    """What to do about one device in a dev/ that stays (no tmpfs): nothing when it is right,
    else mknod or bind as the strategy and this process's powers say (``doubt``: why an
    action may be refused)."""
    entry = survey.entries[d.name]
    if is_right(d, entry):
        return DeviceStep(d, Action.NOTHING, entry, "already right")
    if entry.placeholder:
        reason = "bind the host's node over jailshim's placeholder (bound in another mount"
        reason += " namespace)" + (
            "" if survey.powers.can_mount else f"; expected to be refused: {doubt}"
        )
        return DeviceStep(d, Action.BIND, entry, reason)
    mknod_works = survey.powers.can_mknod and not survey.dev.nodev
    if strategy is Strategy.MKNOD or (strategy is Strategy.AUTO and mknod_works):
        action, reason = Action.MKNOD, "mknod, mode 0666, owner root"
        if not mknod_works:
            reason += f"; expected to be refused: {doubt}"
    elif strategy is Strategy.BIND or survey.powers.can_mount:
        why = "asked for" if strategy is Strategy.BIND else doubt
        action, reason = Action.BIND, f"bind the host's {d.host_path} ({why})"
        if not survey.powers.can_mount:
            reason += f"; expected to be refused: {doubt}"
    else:
        action, reason = Action.MKNOD, f"mknod, then bind; expected to be refused: {doubt}"
    if entry.kind is not EntryKind.ABSENT:
        reason += f"; replacing {entry.describe()}"
    return DeviceStep(d, action, entry, reason)


def _socket_steps(survey: Survey, *, dev_gets_tmpfs: bool) -> tuple[SocketStep, ...]:
    """Bind each host socket (log, notify) at the same path in the jail, unless it already is
    there."""
    steps = []
    for facts in survey.sockets:
        hidden = dev_gets_tmpfs and facts.under_dev  # the new tmpfs hides what was there
        if facts.host_problem:
            steps.append(SocketStep(facts, Action.NOTHING, f"skipped: {facts.host_problem}"))
        elif not hidden and facts.entry_id == facts.host_id:
            steps.append(SocketStep(facts, Action.NOTHING, "already bound"))
        else:
            if facts.readonly and not facts.under_dev:
                raise ConfigError(
                    f"{survey.jail}{facts.path} is on a read-only filesystem, so the "
                    f"{facts.role} cannot be bound there; ship an empty file at {facts.path} in "
                    "the jail image" + (", or log to /dev/log." if not facts.notify else "."),
                )
            if not hidden and facts.entry.kind is EntryKind.DIRECTORY:
                raise ConfigError(
                    f"{survey.jail}{facts.path} is a directory, not a place for the "
                    f"{facts.role}; remove it.",
                )
            reason = f"bind the host's socket {facts.path}"
            if not hidden and facts.entry.placeholder:
                reason += " over jailshim's placeholder (bound in another mount namespace)"
            elif not hidden and facts.entry.kind is not EntryKind.ABSENT:
                reason += f"; replacing {facts.entry.describe()}"
            steps.append(SocketStep(facts, Action.BIND, reason))
    return tuple(steps)


def describe_errno(err: int) -> str:
    """ "EPERM: Operation not permitted", for log sentences."""
    return f"{errno.errorcode.get(err, str(err))}: {os.strerror(err)}"
