"""A jail's records under its lock, as prepare (reconcile, rollback) and teardown both need
them: the journal as this mount namespace sees it, its directories walked before any undo, a
set of records undone newest first, and jailshim's dev/ brought back when someone renamed it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from jailshim import state
from jailshim.errors import ConfigError
from jailshim.jail import mounts
from jailshim.jail.lock import JailLock
from jailshim.jail.namespaces import pid_namespace
from jailshim.jail.safepath import Jail, lstat_at, rename_into_place
from jailshim.jail.undo import KEPT, UNPROVEN, describe, undo
from jailshim.plan import describe_errno
from jailshim.state import Journal, Kind, Record

if TYPE_CHECKING:
    from jailshim.logs import Logger

__all__ = [
    "bring_back_moved_dev",
    "check_paths",
    "open_journal",
    "say_lock_ignored",
    "undo_records",
]


def open_journal(jail: Jail, dev_fd: int | None, table: mounts.MountTable, ns: int) -> Journal:
    """The journal of this jail as this mount namespace sees it.

    When dev/ is a jailshim tmpfs the records live inside it; a tmpfs whose record was never
    written (killed right after the mount) is adopted by its source name.
    """
    if dev_fd is None:
        return Journal(None, [])
    records = state.load_records(dev_fd, f"{jail.real}/dev")
    on_dev = table.at(f"{jail.real}/dev")
    ours_tmpfs = (
        on_dev is not None and on_dev.fstype == "tmpfs" and on_dev.source == state.TMPFS_SOURCE
    )
    if ours_tmpfs and not any(r.kind is Kind.TMPFS and r.ns == ns for r in records):
        records.insert(0, Record(Kind.TMPFS, "dev", "", ns=ns, pidns=pid_namespace(), done=True))
    return Journal(dev_fd, records)


_PUT_BACK = (
    "its record is kept: someone who can write the jail renamed a directory on the way; put "
    "it back, then run teardown again"
)


def undo_records(jail: Jail, journal: Journal, indexes: list[int], log: Logger, event: str) -> None:
    """Undo the records at ``indexes`` (newest first), dropping each from the journal. A
    record that could not be undone is kept, and so are the older ones in its directory (the
    placeholder under a bind that moved with it) or holding it, and the journal's home."""
    kept: set[str] = set()  # directories holding a record that is kept

    def holds_kept(record: Record) -> bool:
        if record.kind is Kind.TMPFS or (record.kind is Kind.MKDIR and record.path == "dev"):
            return bool(kept)  # the journal lives there
        return record.where in kept or any(
            d == record.path or d.startswith(f"{record.path}/") for d in kept
        )

    for index in sorted(indexes, reverse=True):
        record = journal.records[index]
        if holds_kept(record):
            log.warning(event, step=describe(record), outcome=f"{KEPT} with the records above")
            continue
        table = mounts.read_mount_table()
        try:
            outcome = undo(jail, record, table, journal.dir_fd)
        except OSError as exc:
            log.error(event, step=describe(record), errno=describe_errno(exc.errno or 0))
            kept.add(record.where)
            continue
        if outcome.startswith(KEPT):
            # a record kept in a directory not proven in the jail: its outcome says what to do
            said = {} if outcome.startswith(UNPROVEN) else {"detail": _PUT_BACK}
            log.warning(event, step=describe(record), outcome=outcome, **said)
            kept.add(record.where)
            continue
        log.info(event, step=describe(record), outcome=outcome)
        if record.kind is Kind.MKDIR and record.path == "dev":
            journal.dir_fd, journal.records = None, []  # its record went with dev/
        elif record.kind is Kind.TMPFS:
            journal.records = []  # the journal lived inside the tmpfs
        else:
            journal.drop(index)


def bring_back_moved_dev(jail: Jail, log: Logger, *, dry_run: bool = False) -> None:
    """When the jail has no dev/, look for jailshim's dev/ under another name and rename it
    back. The daemon's user may own the jail root and so rename dev/ (root's, but renaming
    needs only the parent); the binds in it go along. Without this, teardown said "nothing to
    undo" and exited 0 with the mounts still in the jail, and prepare made a second dev/ beside
    them. Only the jail root's own entries are looked at: a root-owned directory whose record
    file root wrote and trusts is jailshim's (nobody else can make one)."""
    if lstat_at(jail.fd, "dev") is not None:
        return
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=jail.fd)
    try:
        with os.scandir(fd) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    finally:
        os.close(fd)
    for name in sorted(names):
        if name == state.NEW_DEV or not _holds_our_journal(jail, name):
            continue
        if dry_run:
            log.warning("dev.moved", found=name, detail="would be renamed back to dev/")
            return
        try:
            rename_into_place(jail.fd, name, "dev")
        except OSError as exc:
            log.warning("dev.moved", found=name, outcome=f"left: {exc.strerror}")
            return
        log.warning(
            "dev.moved",
            found=name,
            outcome="renamed back to dev/",
            detail="someone who can write the jail renamed jailshim's dev/; make the jail "
            "root-owned to stop it",
        )
        return


def _holds_our_journal(jail: Jail, name: str) -> bool:
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=jail.fd
        )
    except OSError:
        return False
    try:
        return bool(state.load_records(fd, f"{jail.real}/{name}"))
    except ConfigError:  # not trusted, or not a record: not ours to move
        return False
    finally:
        os.close(fd)


def check_paths(jail: Jail, records: list[Record]) -> None:
    """Walk every directory the records name before acting on any: one through a symlink
    (planted after prepare) refuses the whole run, not the middle of it. One that a user
    other than root could move out of the jail is not refused here (that user could then
    block every teardown by making such a directory at a recorded name): undo keeps each
    record there, with the sentence that says why, and acts on none of them."""
    for where in {r.where for r in records}:
        fd, _missing = jail.walk(where)
        os.close(fd)


def say_lock_ignored(lock: JailLock, log: Logger) -> None:
    if lock.ignored:
        log.warning(
            "lock.ignored",
            holder=lock.ignored,
            detail="a process that is not root's holds a lock on the jail directory; it was "
            "ignored (only root's jailshim counts, or any user could stop the daemon's start)",
        )
