"""Findings and the pure judgements that produce them: facts in, verdict out, no syscalls.

The probe child gathers facts (stat results, errnos, bytes read) and these functions decide
what they mean, so every verdict can be tested without a jail.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from logging import DEBUG, ERROR, INFO, WARNING
from typing import TYPE_CHECKING, Any, NamedTuple

from jailshim.devices import ENTROPY_DEVICES, Device

if TYPE_CHECKING:
    from jailshim.logs import Logger

__all__ = [
    "DeviceFacts",
    "Finding",
    "NotifyFacts",
    "judge_device",
    "judge_getrandom",
    "judge_notify",
    "log_findings",
    "notify_refusal",
    "render_table",
]


class Finding(NamedTuple):
    """One check's verdict: what was seen and, when it failed, what to do."""

    check: str
    ok: bool
    detail: str
    remedy: str = ""
    transient: bool = False  # worth waiting for: the state may clear by itself
    warning: bool = False  # passed, but the operator should know
    # Whose fact it is (issue 23: doctor's "✓ getrandom() usable" was its own probe's, said of
    # a daemon whose filter denied it): "daemon" (read from the running daemon), "jail" (its
    # files, as its user meets them), "probe" (jailshim's own probe process), "" (neither).
    whose: str = ""

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        return cls(**data)


class DeviceFacts(NamedTuple):
    """What the probe child saw at dev/NAME, as the daemon's user."""

    lstat_errno: int = 0
    is_char: bool = False
    is_symlink: bool = False
    kind: str = ""  # "a regular file of 4096 bytes" when not a character device
    numbers: str = ""  # "1:9"
    mode: int = 0
    open_errno: int = 0
    samples: tuple[bytes, ...] = ()  # two reads of 64 bytes from an entropy device
    read_errno: int = 0
    write_result: str = ""  # "ok", "ENOSPC" ... for null/zero/full
    nodev: bool = False  # the node's filesystem is mounted nodev


_PREPARE = "run `jailshim prepare` on this jail, or ship the node in the image"


def _err(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def judge_device(device: Device, facts: DeviceFacts, uid: int) -> Finding:
    """The verdict on one device node as the daemon's user would meet it. Whether a missing
    entropy node matters to the daemon is not said here: its library, getrandom() and the
    kernel decide that (jailshim/verify/entropy.py, from verdict.decide)."""
    return _judge_device(device, facts, uid)._replace(whose="jail")


def _judge_device(device: Device, facts: DeviceFacts, uid: int) -> Finding:
    check = f"dev/{device.name}"
    refused = _unreachable(check, device, facts, uid)
    if refused is None:
        refused = _wrong_node(check, device, facts)
    if refused is not None:
        return refused
    if facts.open_errno:
        why = (
            "the filesystem is mounted nodev"
            if facts.nodev
            else f"mode {facts.mode:04o} does not let uid {uid} open it"
        )
        return Finding(
            check,
            False,
            f"dev/{device.name} cannot be opened as uid {uid} ({_err(facts.open_errno)}: {why}).",
            f"{_PREPARE}; prepare binds the host's node on a nodev filesystem and replaces a "
            "node of the wrong mode",
        )
    if device.name in ENTROPY_DEVICES:
        return _judge_entropy(check, device, facts)
    return _judge_plain(check, device, facts)


def _unreachable(check: str, device: Device, facts: DeviceFacts, uid: int) -> Finding | None:
    """The node is missing, or its path cannot be walked as the daemon's user."""
    if facts.lstat_errno == errno.ENOENT:
        # Not transient (issue 26): only `jailshim prepare` or the image makes a node, and
        # both are done before check runs; waiting for one made an empty jail's check wait
        # out --timeout (30 s, 15 warnings) before saying "run prepare".
        return Finding(check, False, f"dev/{device.name} does not exist.", _PREPARE)
    if facts.lstat_errno:
        return Finding(
            check,
            False,
            f"dev/{device.name} cannot be reached as uid {uid} ({_err(facts.lstat_errno)}).",
            "make the jail and its dev/ searchable by the daemon's user (mode 0755)",
        )
    return None


def _wrong_node(check: str, device: Device, facts: DeviceFacts) -> Finding | None:
    """What is there is not the device: another kind of entry, or other numbers."""
    if not facts.is_char:
        return Finding(
            check,
            False,
            f"dev/{device.name} is {facts.kind}, not the character device {device.numbers}.",
            _PREPARE + "; it replaces the wrong entry",
        )
    if facts.numbers != device.numbers:
        return Finding(
            check,
            False,
            f"dev/{device.name} is the character device {facts.numbers}, not {device.numbers}.",
            _PREPARE + "; it replaces the wrong node",
        )
    return None


def _judge_entropy(check: str, device: Device, facts: DeviceFacts) -> Finding:
    if facts.read_errno == errno.EAGAIN:
        return Finding(
            check,
            False,
            f"dev/{device.name} has no entropy yet (EAGAIN): the kernel RNG is not initialised.",
            "wait for the kernel RNG (rng-tools/haveged, or virtio-rng for VMs)",
            transient=True,
        )
    if facts.read_errno or len(facts.samples) != 2 or any(len(s) != 64 for s in facts.samples):
        return Finding(
            check,
            False,
            f"dev/{device.name} opened but did not give 2 x 64 bytes ({_err(facts.read_errno)}).",
            _PREPARE,
        )
    first, second = facts.samples
    if first == second or len(set(first)) <= 1:
        return Finding(
            check,
            False,
            f"dev/{device.name} gives constant or repeated bytes: not a random source.",
            _PREPARE,
        )
    return Finding(check, True, f"character device {facts.numbers}, read 2 x 64 distinct bytes")


def _judge_plain(check: str, device: Device, facts: DeviceFacts) -> Finding:
    expected = {"null": "ok", "zero": "ok", "full": "ENOSPC", "tty": ""}[device.name]
    if facts.write_result != expected:
        return Finding(
            check,
            False,
            f"dev/{device.name} does not behave as {device.name}: "
            f"a write gave {facts.write_result or 'nothing'}, expected {expected}.",
            _PREPARE,
        )
    return Finding(check, True, f"character device {facts.numbers}, behaves as {device.name}")


def judge_getrandom(err: int) -> tuple[Finding, Finding, bool]:
    """Verdicts on the kernel RNG and on getrandom() from one getrandom(GRND_NONBLOCK) errno,
    in jailshim's probe. What a denial means for a library (OpenSSL >= 1.1.1d on a kernel
    >= 4.8 without the shm marker cannot seed at all; others turn to dev/urandom) is the
    entropy verdict's to say (verdict.decide), not this row's.

    Returns (rng finding, getrandom finding, getrandom usable).
    """
    if err in (errno.ENOSYS, errno.EPERM):
        return (
            Finding(
                "kernel RNG",
                True,
                "readiness unknown: getrandom() is denied, so only the devices can tell",
                warning=True,
                whose="probe",
            ),
            Finding(
                "getrandom()",
                True,
                f"denied ({_err(err)}: a seccomp filter, or a kernel older than 3.17); what "
                "that means for the daemon's library is in its entropy row",
                warning=True,
                whose="probe",
            ),
            False,
        )
    getrandom_ok = Finding("getrandom()", True, "usable", whose="probe")
    if err == errno.EAGAIN:
        return (
            Finding(
                "kernel RNG",
                False,
                "not initialised yet: getrandom(GRND_NONBLOCK) answered EAGAIN",
                "wait for the kernel RNG (rng-tools/haveged, or virtio-rng for VMs)",
                transient=True,
                whose="probe",
            ),
            getrandom_ok,
            True,
        )
    if err:
        return (
            Finding(
                "kernel RNG",
                False,
                f"getrandom() failed with {_err(err)}",
                "check the kernel",
                whose="probe",
            ),
            getrandom_ok,
            True,
        )
    return Finding("kernel RNG", True, "initialised", whose="probe"), getrandom_ok, True


class NotifyFacts(NamedTuple):
    """What the probe child saw at $NOTIFY_SOCKET's path in the jail, as the daemon's user."""

    connect_errno: int = 0  # connect() of a datagram socket to it (nothing is sent)
    lstat_errno: int = 0  # looked at only when connect failed, to say why
    kind: str = ""  # "a socket", "a regular file of 0 bytes"...
    mode: int = 0
    owner: str = ""  # "uid:gid"


_NOTIFY_LOST = (
    "so the daemon's READY=1 from inside the jail is lost (systemd times out its start; "
    "unbound exits with 'sd_notify failed')"
)


def judge_notify(path: str, facts: NotifyFacts, uid: int) -> Finding:
    """The verdict on $NOTIFY_SOCKET as the daemon's user meets it in the jail: connect()
    on a unix datagram socket checks exactly what sendmsg() will (the path is searchable, the
    socket writable, something bound to it, a datagram socket), and sends nothing."""
    check = "notify socket"
    if not facts.connect_errno:
        return Finding(check, True, f"{path} accepts a datagram connection as uid {uid}")
    refused = _notify_path_refused(check, path, facts, uid)
    if refused is not None:
        return refused
    return _notify_connect_refused(check, path, facts, uid)


def _notify_path_refused(check: str, path: str, facts: NotifyFacts, uid: int) -> Finding | None:
    """The socket is missing in the jail, out of reach, or not a socket."""
    err = facts.connect_errno
    if facts.lstat_errno == errno.ENOENT or (not facts.lstat_errno and err == errno.ENOENT):
        return Finding(
            check,
            False,
            f"$NOTIFY_SOCKET {path} does not exist in the jail, {_NOTIFY_LOST}.",
            "start it where $NOTIFY_SOCKET names a live socket on the host (jailshim run binds "
            "it into the jail), or unset NOTIFY_SOCKET outside a Type=notify unit",
        )
    if facts.lstat_errno:
        return Finding(
            check,
            False,
            f"$NOTIFY_SOCKET {path} cannot be reached as uid {uid} "
            f"({_err(facts.lstat_errno)}: a directory on its path in the jail is not "
            f"searchable), {_NOTIFY_LOST}.",
            "make the directories above it in the jail searchable by the daemon's user (0755)",
        )
    if facts.kind != "a socket":
        return Finding(
            check,
            False,
            f"$NOTIFY_SOCKET {path} is {facts.kind} in the jail, not a socket, {_NOTIFY_LOST}.",
            "remove it from the jail and let `jailshim run` bind the host's socket there",
        )
    return None


def _notify_connect_refused(check: str, path: str, facts: NotifyFacts, uid: int) -> Finding:
    """A socket is there, and connect() said no: why, by its errno."""
    err = facts.connect_errno
    if err in (errno.EACCES, errno.EPERM):
        return Finding(
            check,
            False,
            f"$NOTIFY_SOCKET {path} (mode {facts.mode:04o}, owner {facts.owner}) refuses uid "
            f"{uid} ({_err(err)}: sending to a unix socket needs write permission on it), "
            f"{_NOTIFY_LOST}.",
            "let the daemon's user write to the socket (systemd makes its own 0777), or run "
            "the daemon without Type=notify",
        )
    if err == errno.ECONNREFUSED:
        return Finding(
            check,
            False,
            f"$NOTIFY_SOCKET {path} is a socket nothing listens on (ECONNREFUSED: the process "
            f"that made it is gone), {_NOTIFY_LOST}.",
            "point NOTIFY_SOCKET at the service manager's live socket",
        )
    if err == errno.EPROTOTYPE:
        return Finding(
            check,
            False,
            f"$NOTIFY_SOCKET {path} is a stream socket (EPROTOTYPE); the notify protocol sends "
            f"datagrams, {_NOTIFY_LOST}.",
            "point NOTIFY_SOCKET at the service manager's datagram socket",
        )
    return Finding(
        check,
        False,
        f"$NOTIFY_SOCKET {path} cannot be connected to as uid {uid} ({_err(err)}), {_NOTIFY_LOST}.",
        "check the socket and the service manager that made it",
    )


# sun_path holds 108 bytes; libsystemd's sd_notify() wants a NUL after the path, so 107
# (sockaddr_un_set_path: longer is ENAMETOOLONG, and the daemon's READY=1 is never sent).
NOTIFY_PATH_MAX = 107

_HOST_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def notify_refusal(path: str, host_mode: int | None) -> str:
    """Why $NOTIFY_SOCKET ``path`` can never take the daemon's READY=1, as one sentence, or ""
    when it may. ``host_mode`` is st_mode of what the host has at the path, symlinks followed
    (None: nothing yet; the check in the jail says so, and it may still appear). Said before
    anything is prepared: it read "cannot be connected to (EIO)" for a long path, and "does
    not exist in the jail" for a directory, after a warning that logs would be lost."""
    size = len(os.fsencode(path))
    if size > NOTIFY_PATH_MAX:
        return (
            f"$NOTIFY_SOCKET {path} is {size} bytes long; a unix socket address holds at most "
            f"{NOTIFY_PATH_MAX} (sun_path with its NUL), so the daemon's sd_notify() cannot "
            "send READY=1 to it. Give the service manager's socket a shorter path (systemd's "
            "is /run/systemd/notify), or unset NOTIFY_SOCKET."
        )
    if host_mode is None or stat.S_ISSOCK(host_mode):
        return ""
    kind = next((name for test, name in _HOST_KINDS if test(host_mode)), "not a socket")
    return (
        f"$NOTIFY_SOCKET {path} is {kind} on the host, not the service manager's socket, so "
        "the daemon's READY=1 would be lost. Point NOTIFY_SOCKET at the socket the service "
        "manager listens on (systemd sets it for a Type=notify unit), or unset it."
    )


def render_table(findings: list[Finding]) -> str:
    """A table for people: ✓/✗, the check, whose fact it is, the finding, the remedy."""
    width = max((len(f.check) for f in findings), default=5)
    owners = max((len(f.whose) for f in findings), default=0)
    lines = []
    for f in findings:
        mark = "✓" if f.ok and not f.warning else ("!" if f.ok else "✗")
        whose = f"{f.whose:<{owners}}  " if owners else ""
        lines.append(f"{mark} {f.check:<{width}}  {whose}{f.detail}")
        if f.remedy and not f.ok:
            lines.append(f"  {'':<{width}}  {'':<{len(whose)}}→ {f.remedy}")
    return "\n".join(lines)


def log_findings(findings: Iterable[Finding], log: Logger, *, table: bool, **facts: Any) -> None:
    """One `check` event per finding, as check, run and doctor all say them: info for a pass,
    warning for a pass with a warning, error for a failure (with its remedy); all at debug
    when ``table`` (the table on screen already says each finding once to a person; machines,
    with no TTY, get every finding as a JSON event). ``facts`` (doctor: the PID) ride on each."""
    for f in findings:
        level = DEBUG if table else INFO if f.ok and not f.warning else WARNING if f.ok else ERROR
        remedy = {"remedy": f.remedy} if f.remedy and not f.ok else {}
        log.log(
            level,
            "check",
            check=f.check,
            ok=f.ok,
            whose=f.whose,
            detail=f.detail,
            **facts,
            **remedy,
        )
