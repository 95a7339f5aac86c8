"""The write-ahead record of what jailshim made in a jail, kept at dev/.jailshim-state.json.

Every change is recorded *before* the syscall that makes it (``Journal.intend``), completed
after it (``Journal.update``), and dropped only once undone, so a process killed at any point
leaves a record that covers whatever it left (a temporary node, a placeholder, an unhardened
bind). The next prepare or teardown, holding the jail's lock, reconciles it; see
docs/ARCHITECTURE.md ("Crash safety") for the protocol and why every kill point converges.

The file is trusted only when root wrote it where only root can: a regular file owned by root
and not writable by group or others, in a root-owned dev/ no one else can write. Each record
is then validated before anything acts on it: names are single path components, temporary and
aside names are the ones jailshim derives, and directories are walked from the jail with
O_NOFOLLOW by the caller. A forged or damaged record is a configuration error (78) that acts on
nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from enum import StrEnum
from typing import Any, NamedTuple

from jailshim.errors import ConfigError, SystemRefused
from jailshim.files import OWN_PREFIX
from jailshim.jail.safepath import writable_by_non_root

__all__ = [
    "NEW_DEV",
    "STATE_NAME",
    "TMPFS_SOURCE",
    "Journal",
    "JournalUnwritable",
    "Kind",
    "Record",
    "aside_name",
    "disk_full",
    "load_records",
    "mount_namespace",
    "temp_name",
]

STATE_NAME = ".jailshim-state.json"
_STATE_TMP = STATE_NAME + ".new"
# The source name of the tmpfs jailshim mounts over jail/dev; mountinfo shows it, which is how
# a later run knows the tmpfs is its own (the mount itself is the record of that one step).
TMPFS_SOURCE = "jailshim"
# dev/ is made at this name, given its record, then renamed into place (and renamed back to it
# by teardown before it goes): an empty dev/ is never left that no record covers.
NEW_DEV = ".jailshim-new-dev"
_VERSION = 2
_MAX_BYTES = 256 * 1024
_PREFIXES = (f"{OWN_PREFIX}new-", f"{OWN_PREFIX}displaced-")


class Kind(StrEnum):
    MKDIR = "mkdir"  # created the directory `name` in `where` (dev/ itself: tmp NEW_DEV)
    TMPFS = "tmpfs"  # mounted a tmpfs over jail/dev in mount namespace `ns`
    DISPLACED = "displaced"  # moved the wrong entry `ino` from `name` to `aside`
    MKNOD = "mknod"  # made the node `ino` at `tmp`, renamed to `name`
    PLACEHOLDER = "placeholder"  # made the empty file `ino` at `tmp`, renamed to `name`
    BIND = "bind"  # bound a host node or socket onto placeholder `ino`, in mount namespace `ns`
    HOLDER = "holder"  # mount namespace `ns` uses this jail (what teardown must not pull away)
    # wrote the host file's content as the regular file `ino` at `tmp`, renamed to `name`;
    # with `replaces`, exchanged with jailshim's own older copy (that inode) instead
    COPY = "copy"


_MOUNTS = frozenset({Kind.TMPFS, Kind.BIND, Kind.HOLDER})


class Record(NamedTuple):
    kind: Kind
    name: str
    where: str = "dev"  # the directory holding `name`, relative to the jail ("" is the jail)
    ino: int = 0  # the inode jailshim made (or moved aside); 0 until known
    rdev: int = 0
    tmp: str = ""
    aside: str = ""
    ns: int = 0  # the mount namespace of the run that made it (where a mount lives)
    pidns: int = 0  # that run's PID namespace (whether ``ns`` can be seen to be gone)
    done: bool = False  # False: intent recorded, the syscall may or may not have happened
    replaces: int = 0  # COPY: the inode of jailshim's stale copy this one replaces

    @property
    def path(self) -> str:
        return f"{self.where}/{self.name}".lstrip("/")

    @property
    def is_mount(self) -> bool:
        """Lives in one mount namespace only (undone there, or gone with it)."""
        return self.kind in _MOUNTS


def temp_name(name: str) -> str:
    """Where a node, placeholder or dev/ is made before it is renamed into place. Not the PID:
    as PID 1 in a container it would always be 1, and a leftover would block every start."""
    return f".jailshim-new-{name}"


def aside_name(name: str, n: int) -> str:
    return f".jailshim-displaced-{name}" + (f".{n}" if n else "")


def mount_namespace() -> int:
    """This process's mount namespace (the inode of /proc/self/ns/mnt)."""
    return os.stat("/proc/self/ns/mnt").st_ino


# -- validation: nothing read from the file is acted on before it passes these ------------------

_COMPONENT_BAD = re.compile(r"[/\x00]")


def _component(value: str, what: str) -> None:
    if not value or value in (".", "..") or _COMPONENT_BAD.search(value) or len(value) > 255:
        raise ValueError(f"{what} {value!r} is not a single file name")


def _validate(record: Record) -> None:
    _component(record.name, "name")
    for part in record.where.split("/") if record.where else ():
        _component(part, "directory")
    if record.kind is Kind.TMPFS and (record.where, record.name) != ("", "dev"):
        raise ValueError("a tmpfs record must name dev/")
    if record.kind is Kind.HOLDER and (record.where, record.name) != ("", "dev"):
        raise ValueError("a holder record must name dev/")
    if record.kind in (Kind.MKNOD, Kind.PLACEHOLDER, Kind.COPY) and record.tmp != temp_name(
        record.name
    ):
        raise ValueError(f"temporary name {record.tmp!r} is not jailshim's")
    if record.kind is Kind.MKDIR and record.tmp not in ("", temp_name(record.name)):
        raise ValueError(f"temporary name {record.tmp!r} is not jailshim's")
    if record.kind is Kind.DISPLACED and not re.fullmatch(
        re.escape(aside_name(record.name, 0)) + r"(\.[1-9][0-9]{0,3})?", record.aside
    ):
        raise ValueError(f"aside name {record.aside!r} is not jailshim's")
    if record.kind is not Kind.DISPLACED and record.name.startswith(_PREFIXES):
        raise ValueError(f"name {record.name!r} is one of jailshim's own")
    if record.replaces and record.kind is not Kind.COPY:
        raise ValueError("only a copy replaces another")
    if record.is_mount and record.ns <= 0:
        raise ValueError("a mount record needs its mount namespace")


def _record(raw: Any) -> Record:
    if not isinstance(raw, dict):
        raise TypeError("a record is not an object")
    fields: dict[str, Any] = {"kind": Kind(raw["kind"])}
    for key in Record._fields[1:]:
        if key in raw:
            fields[key] = raw[key]
            # Exact types: a bool is not an inode number, a list is not a name.
            if type(raw[key]) is not type(Record._field_defaults.get(key, "")):
                raise TypeError(f"{key} has the wrong type")
    record = Record(**fields)
    _validate(record)
    return record


def _from_version_1(raw: list[Any], ns: int) -> list[Record]:
    """Records of jailshim 0.1 (written only when prepare finished: every step done)."""
    records: list[Record] = []
    for r in raw:
        kind, name, where = r["kind"], r["name"], r.get("where", "dev")
        if kind in ("bind", "socket"):
            records.append(Record(Kind.PLACEHOLDER, name, where, r["ino"], tmp=temp_name(name)))
            records.append(Record(Kind.BIND, name, where, r["ino"], r["rdev"], ns=ns))
        elif kind in ("mknod", "mkdir"):
            tmp = temp_name(name) if kind == "mknod" else ""
            records.append(Record(Kind(kind), name, where, r["ino"], r["rdev"], tmp=tmp))
        elif kind == "displaced":
            records.append(Record(Kind.DISPLACED, name, where, aside=r["aside"]))
        else:
            records.append(Record(Kind.TMPFS, "dev", "", ns=ns))
    done = [r._replace(done=True) for r in records]
    for record in done:
        _validate(record)
    return done


def _owned_by_root_only(st: os.stat_result) -> bool:
    """The same rule prepare applies to dev/ (a root group may write)."""
    return st.st_uid == 0 and not writable_by_non_root(st)


def load_records(dir_fd: int, where: str) -> list[Record]:
    """The validated records in ``dir_fd`` (oldest first); [] when there is no record.

    Opens only a regular file, non-blocking (a FIFO planted at the name cannot hang us), and
    reads a bounded amount. Raises ConfigError when the file or dir_fd could have been written
    by someone other than root, or when any record does not validate: then nothing is acted on.
    """
    path = f"{where}/{STATE_NAME}"
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(STATE_NAME, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(
            f"{path} cannot be opened ({exc.strerror}); it should be jailshim's record of what it "
            "made. Check the jail by hand, then remove that entry.",
        ) from None
    try:
        st, dir_st = os.fstat(fd), os.fstat(dir_fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_BYTES:
            raise ValueError("not a regular file of at most 256 KiB")
        if not (_owned_by_root_only(st) and _owned_by_root_only(dir_st)):
            raise PermissionError(
                f"it (owner {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) or its directory "
                f"(owner {dir_st.st_uid}, mode {stat.S_IMODE(dir_st.st_mode):04o}) could have been "
                "written by a user other than root"
            )
        data = json.loads(os.read(fd, _MAX_BYTES + 1))
        if data.get("version") == 1:
            return _from_version_1(data["records"], mount_namespace())
        if data.get("version") != _VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        return [_record(r) for r in data["records"]]
    except PermissionError as exc:
        raise ConfigError(
            f"{path} is not trusted: {exc}. jailshim acts on nothing it records there; make dev/ "
            "and that file root-owned and not group/other-writable, check the jail by hand, "
            "then run again.",
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{path} is not a valid jailshim record ({exc}); nothing was changed. Check the "
            "jail by hand, then delete that file.",
        ) from None
    finally:
        os.close(fd)


_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up"}


def disk_full(exc: OSError) -> str:
    """What a full disk or quota is called in a sentence ("" for any other error)."""
    return _FULL.get(exc.errno or 0, "")


class JournalUnwritable(SystemRefused):
    """The journal could not be rewritten (a full disk, mostly); its temporary is gone."""


def _unwritable(dir_fd: int, exc: OSError) -> JournalUnwritable:
    try:
        where = os.readlink(f"/proc/self/fd/{dir_fd}")
    except OSError:
        where = "dev"
    where = where.removesuffix(f"/{NEW_DEV}") + "/dev" if where.endswith(NEW_DEV) else where
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    why = disk_full(exc) or exc.strerror or "refused"
    return JournalUnwritable(
        f"{where}/{STATE_NAME}, jailshim's record of what it made in the jail, cannot be "
        f"written: {why} ({name}); nothing was done that it does not record: free space on "
        "that filesystem, then run again.",
        errno=exc.errno,
    )


def _write(dir_fd: int, records: list[Record]) -> None:
    """Replace the record atomically: a fixed temporary name, then rename over the old one.

    Atomic against process death (SIGKILL, OOM), which is what a container stop does. No fsync:
    mounts do not survive a power loss anyway, and a stale record is reconciled by inode. A
    write that fails (a full disk) removes its temporary and raises JournalUnwritable: the
    temporary was left behind by a teardown on a full disk.
    """
    if not records:
        for name in (STATE_NAME, _STATE_TMP):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
        return
    body = json.dumps({"version": _VERSION, "records": [r._asdict() for r in records]})
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_STATE_TMP, dir_fd=dir_fd)  # a leftover of a killed run
    try:
        fd = os.open(
            _STATE_TMP,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dir_fd,
        )
    except OSError as exc:
        raise _unwritable(dir_fd, exc) from None
    try:
        try:
            view = memoryview(body.encode() + b"\n")
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(_STATE_TMP, STATE_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(_STATE_TMP, dir_fd=dir_fd)
        raise _unwritable(dir_fd, exc) from None


class Journal:
    """The records of one jail, kept in step with the file in ``dir_fd`` (dev/ or the tmpfs)."""

    def __init__(self, dir_fd: int | None, records: list[Record]) -> None:
        self.dir_fd = dir_fd
        self.records = records

    def _save(self) -> None:
        if self.dir_fd is None:
            raise RuntimeError("the journal has no directory yet")
        _write(self.dir_fd, self.records)

    def intend(self, record: Record) -> int:
        """Record a step before doing it; returns its index for ``update``. When the record
        cannot be written the step must not be done: it is not kept either."""
        self.records.append(record)
        try:
            self._save()
        except JournalUnwritable:
            self.records.pop()
            raise
        return len(self.records) - 1

    def update(self, index: int, **changes: Any) -> None:
        self.records[index] = self.records[index]._replace(**changes)
        self._save()

    def complete_replacing(self, index: int, old: int) -> None:
        """Mark ``index`` done and forget ``old`` (the record it replaced) in one write."""
        self.records[index] = self.records[index]._replace(done=True)
        del self.records[old]
        self._save()

    def drop(self, index: int) -> None:
        """Forget an undone (or never done) step. If the file cannot be rewritten now (a
        full disk), it keeps the step for a while: undoing it again finds it "already gone",
        as after a kill between an undo and its drop. Teardown on a full disk goes on (each
        undo frees space, and the last drop removes the file) instead of stopping at the
        first record."""
        del self.records[index]
        with contextlib.suppress(JournalUnwritable):
            self._save()
