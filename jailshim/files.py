"""Pure: which host files a jail needs (--file, --files SET) and what to do at each one.

After chroot a daemon loses more than /dev: without etc/localtime its logs are stamped in UTC,
without etc/resolv.conf it resolves nothing. The named sets say which files a need takes;
``decide_file`` turns what survey saw (the host's file, the jail's entry) into one step that
apply.py carries out. No syscalls here.
"""

from __future__ import annotations

import errno
import os
from enum import StrEnum
from typing import NamedTuple

from jailshim.errors import ConfigError, UsageError, said
from jailshim.jail.safepath import Entry, EntryKind

__all__ = [
    "FILE_SETS",
    "OWN_PREFIX",
    "FileAction",
    "FileFacts",
    "FileMode",
    "FileStep",
    "HostFile",
    "JailFile",
    "decide_file",
    "jail_files",
    "missing_host_file",
    "readable_by_all",
    "refuse_reserved",
]


class FileMode(StrEnum):
    COPY = "copy"  # the content, at the same path: self-contained, survives restarts
    BIND = "bind"  # a read-only bind of the host's file: sees a host change at once


class JailFile(NamedTuple):
    """A host file the daemon needs at the same path inside its jail."""

    path: str  # absolute: /etc/resolv.conf
    optional: bool = False  # its absence on the host is normal (etc/gai.conf): no warning


# What each need takes. Optional files are taken when the host has them.
FILE_SETS: dict[str, tuple[JailFile, ...]] = {
    "time": (JailFile("/etc/localtime"),),
    "resolver": (
        JailFile("/etc/resolv.conf"),
        JailFile("/etc/hosts"),
        JailFile("/etc/host.conf", optional=True),
        JailFile("/etc/nsswitch.conf"),
        JailFile("/etc/gai.conf", optional=True),
    ),
    "services": (JailFile("/etc/services"), JailFile("/etc/protocols")),
}

# What the daemon does when the host lacks the file (so the jail will too).
_WITHOUT = {
    "/etc/localtime": "the daemon's clock will read UTC (glibc's default without a zone file)",
    "/etc/resolv.conf": "the daemon's resolver will ask 127.0.0.1:53 only (glibc's default)",
    "/etc/hosts": "names such as localhost will be resolved by DNS only",
    "/etc/nsswitch.conf": "glibc will use its built-in order (dns, then files)",
    "/etc/services": "port names such as smtp will not resolve to numbers",
    "/etc/protocols": "protocol names such as tcp will not resolve to numbers",
}

_MAX_PATH = 4095
# Every name jailshim gives an entry of its own in a jail starts with this (state.py: the
# temporary and aside names, the journal). A jail file or socket whose path has such a
# component was recorded under a name the journal's validation takes for a forgery, refusing
# every later prepare and teardown of the jail (78): input refuses it (refuse_reserved).
OWN_PREFIX = ".jailshim-"


def refuse_reserved(path: str, source: str, *, config: bool = False) -> None:
    """Refuse a jail path with a component jailshim keeps for itself (a name starting with
    .jailshim-): placed, it was recorded under a name that every later prepare and teardown
    of that jail refused as a forged record (78). The one check for jail files and sockets."""
    for part in path.split("/"):
        if part.startswith(OWN_PREFIX):
            error = ConfigError if config else UsageError
            raise error(
                f"{said(source, path)} has the name {part!r}, and names starting with "
                f"{OWN_PREFIX} are jailshim's own in a jail (its temporary and set-aside "
                "entries); give a path without one."
            )


def _checked_path(path: str, source: str, *, config: bool = False) -> str:
    """``path`` as placed in the jail, or one sentence: a usage error (64) for an option's
    path, the config's error (78) for one a daemon's config names (pdns_recursor's
    `hint-file=/proc/version` was blamed on a --file the operator never gave)."""
    error = ConfigError if config else UsageError
    if not path.startswith("/"):
        raise error(f"{said(source, path)} must be an absolute path, such as /etc/hosts.")
    parts = [p for p in path.split("/") if p and p != "."]
    if not parts or ".." in parts or "\0" in path or len(os.fsencode(path)) > _MAX_PATH:
        raise error(
            f"{said(source, path)} is not a file path jailshim can place in a jail; give a "
            "plain absolute path without '..', such as /etc/hosts."
        )
    if parts[0] in ("dev", "proc", "sys"):
        raise error(
            f"{said(source, path)} is under /{parts[0]}, which jailshim manages otherwise; give "
            "a file such as /etc/hosts (devices: --device, log sockets: --log-socket)."
        )
    refuse_reserved(path, source, config=config)
    return "/" + "/".join(parts)


def jail_files(
    paths: tuple[str, ...],
    sets: tuple[str, ...],
    *,
    source: str = "--file",
    config_paths: tuple[str, ...] = (),
    config_source: str = "the daemon's config",
) -> tuple[JailFile, ...]:
    """The files of ``sets`` (known names), ``paths`` (an option's) and ``config_paths`` (a
    daemon's config's), each path once (a path given by either is never optional)."""
    found: dict[str, JailFile] = {}
    for name in sets:
        for f in FILE_SETS[name]:
            found.setdefault(f.path, f)
    given = [(p, source, False) for p in paths] + [(p, config_source, True) for p in config_paths]
    for path, where, config in given:
        clean = _checked_path(path, where, config=config)
        found[clean] = JailFile(clean)
    return tuple(found.values())


def readable_by_all(path: str) -> bool:
    """Every user may read the host's ``path`` by its mode bits: the file others may read, and
    each directory above it others may search. What a file a daemon's config names must be
    before jailshim copies it into the jail (the copy is root's with the file's mode): a file
    some cannot read became readable there (a 0644 file in a 0700 directory: a root-only
    copy), or unreadable by the daemon (0640 root:pdns). Symlinks followed, as the copy does."""
    import stat

    try:
        if not os.stat(path).st_mode & stat.S_IROTH:
            return False
        parent = os.path.dirname(os.path.realpath(path))
        while True:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            if parent == "/":
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def missing_host_file(path: str, why: str) -> str:
    """The warning for a file the host lacks: what the daemon will then do."""
    then = _WITHOUT.get(path, "the daemon will find no such file in its jail")
    return f"the host has no {path} ({why}): nothing is placed in the jail, and {then}"


class HostFile(NamedTuple):
    """The host's file, its symlinks followed (the jail gets the content, not the link)."""

    path: str
    real: str = ""  # where the symlinks led ("" when missing)
    problem: str = ""  # "" or why it cannot be used (missing, not a regular file)
    content: bytes = b""
    mode: int = 0o644
    dev_ino: tuple[int, int] = (0, 0)


class FileFacts(NamedTuple):
    """One jail file: the host's side and what stands at the same path in the jail."""

    file: JailFile
    host: HostFile
    missing_dirs: tuple[str, ...]  # directories to create on the way, shallowest first
    entry: Entry  # at the path in the jail (ABSENT when a directory is missing)
    entry_dev_ino: tuple[int, int] = (0, 0)
    content: bytes | None = None  # of a regular file there (None: not read)
    ours: bool = False  # a copy jailshim made (its record names this inode)
    readonly: bool = False  # the filesystem of the deepest existing directory
    root_kept: bool = False  # the entry is root's and no other user can write it

    @property
    def where(self) -> str:
        return os.path.dirname(self.file.path).strip("/")

    @property
    def name(self) -> str:
        return os.path.basename(self.file.path)


class FileAction(StrEnum):
    NOTHING = "nothing"
    COPY = "copy"  # write the host's content at a temporary name, rename into place
    REFRESH = "refresh"  # jailshim's own copy is stale: a new copy replaces it atomically
    BIND = "bind"  # bind the host's file read-only onto a placeholder


class FileStep(NamedTuple):
    facts: FileFacts
    action: FileAction
    reason: str
    displaces: bool = False  # a wrong entry (not jailshim's) is moved aside first


def decide_file(facts: FileFacts, mode: FileMode, jail: str) -> FileStep:
    """The step for one file; raises ConfigError for an entry jailshim will not touch."""
    entry, host, path = facts.entry, facts.host, facts.file.path
    if host.problem:
        return FileStep(facts, FileAction.NOTHING, f"skipped: {host.problem}")
    where = f"{jail}{path}"
    if entry.kind in (EntryKind.DIRECTORY, EntryKind.FIFO, EntryKind.SOCKET) or entry.kind in (
        EntryKind.CHAR,
        EntryKind.BLOCK,
    ):
        raise ConfigError(
            f"{where} is {entry.describe()}, not a file jailshim may replace; jailshim never "
            "writes through it nor moves it: remove it, then run again.",
        )
    bound_here = entry.mountpoint and facts.entry_dev_ino == host.dev_ino
    if mode is FileMode.BIND:
        if bound_here:
            return FileStep(facts, FileAction.NOTHING, "already bound")
        if facts.ours:
            raise ConfigError(
                f"{where} is jailshim's copy from an earlier --file-mode copy; run "
                "`jailshim teardown` before switching to --file-mode bind.",
            )
        if entry.mountpoint and not entry.placeholder:
            raise ConfigError(
                f"{where} is a mount point jailshim did not make; unmount it and run again."
            )
        if facts.readonly and entry.kind is EntryKind.ABSENT:
            raise ConfigError(
                f"{where} is on a read-only filesystem; ship an empty file there in the jail "
                "image, or make the jail writable.",
            )
        displaces = entry.kind is not EntryKind.ABSENT and not entry.placeholder
        reason = f"bind the host's {host.real} read-only" + (
            f"; replacing {entry.describe()}" if displaces else ""
        )
        return FileStep(facts, FileAction.BIND, reason, displaces)
    if entry.mountpoint:
        raise ConfigError(
            f"{where} is a mount point (an earlier --file-mode bind, or another's); run "
            "`jailshim teardown` or unmount it before copying the file there.",
        )
    # Equal content is "already right" only in a file root keeps: another user's file was
    # left when it equalled the host's root-only secret and moved aside when not, answering
    # one guess a start (review1, R1b). Any other entry is moved aside and copied (or, on a
    # read-only filesystem a user may write by another path, refused) whatever it holds.
    if entry.kind is EntryKind.REGULAR and facts.root_kept and facts.content == host.content:
        return FileStep(facts, FileAction.NOTHING, "already the host's content")
    if facts.readonly:
        raise ConfigError(
            f"{where} is on a read-only filesystem and is not a root-owned copy of the host's "
            f"{path} that only root can write; ship that file in the jail image, or make the "
            "jail writable.",
        )
    if facts.ours:
        return FileStep(facts, FileAction.REFRESH, f"refresh jailshim's copy of {host.real}")
    displaces = entry.kind is not EntryKind.ABSENT
    reason = f"copy the host's {host.real}" + (
        f"; replacing {entry.describe()}" if displaces else ""
    )
    return FileStep(facts, FileAction.COPY, reason, displaces)


def host_problem(path: str, err: int) -> str:
    """Why a host file cannot be used, from an errno."""
    return missing_host_file(path, errno.errorcode.get(err, str(err)))
