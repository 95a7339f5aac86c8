"""Undo one record: the one piece of code that takes back what apply made.

Used by apply's rollback (this run's records), by reconcile (what a killed run left half-done)
and by teardown. Each undo looks at what is really there and acts only on the very inode the
record names, found at its temporary name or its final name, so it is right whether the
recorded syscall happened or not, and running it twice is harmless. Every directory is walked
down from the jail without following a symlink; nothing outside the jail is ever touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from jailshim import state
from jailshim.jail import mounts
from jailshim.jail.safepath import O_PATH_NOFOLLOW, Jail, exchange, lstat_at, rename_into_place
from jailshim.state import Kind, Record

__all__ = ["KEPT", "UNPROVEN", "describe", "sweep_new_dev", "undo"]


def describe(record: Record) -> str:
    """The step a record stands for, as rollback and teardown log it."""
    return {
        Kind.MKDIR: "rmdir {}",
        Kind.TMPFS: "unmount the tmpfs on {}",
        Kind.DISPLACED: "restore {}",
        Kind.MKNOD: "remove {}",
        Kind.PLACEHOLDER: "remove the placeholder {}",
        Kind.BIND: "unbind {}",
        Kind.HOLDER: "release the hold on {}",
        Kind.COPY: "remove the copy {}",
    }[record.kind].format(record.path)


def _ours(record: Record, st: os.stat_result | None, *, at_tmp: bool) -> bool:
    """Whether ``st`` is the inode ``record`` made. Before the inode was recorded only the
    temporary name can hold it, and only something of the recorded shape made by root.
    Root's in any case: a freed inode number is handed out again at once (ext4, tmpfs), so in
    a directory the daemon's user can write, its own file may have the recorded number."""
    if st is None or st.st_uid != 0:
        return False
    if record.kind is Kind.MKNOD:
        shape = stat.S_ISCHR(st.st_mode) and st.st_rdev == record.rdev
    else:  # a placeholder: an empty regular file
        shape = stat.S_ISREG(st.st_mode) and st.st_size == 0
    if record.ino:
        return shape and st.st_ino == record.ino
    return shape and at_tmp and st.st_uid == 0


def _remove_made(dir_fd: int, record: Record) -> str:
    """MKNOD and PLACEHOLDER: unlink the inode at its temporary or final name."""
    for name, at_tmp in ((record.tmp, True), (record.name, False)):
        if _ours(record, lstat_at(dir_fd, name), at_tmp=at_tmp):
            os.unlink(name, dir_fd=dir_fd)
            return "removed" + (" (from its temporary name)" if at_tmp else "")
    if record.ino and lstat_at(dir_fd, record.name) is not None:
        return "left: changed since prepare"
    return "already gone"


def _remove_copy(dir_fd: int, record: Record) -> str:
    """COPY: unlink the file jailshim wrote, at its temporary or final name. A refresh killed
    after its exchange puts the copy it replaced back first: the jail keeps a whole file."""
    at_tmp, at_name = lstat_at(dir_fd, record.tmp), lstat_at(dir_fd, record.name)

    def written(st: os.stat_result | None, *, at_tmp: bool) -> bool:
        # root's: the daemon's user's own file may have got the freed inode number (_ours)
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_uid != 0:
            return False
        if record.ino:
            return st.st_ino == record.ino
        # before its inode was recorded only the temporary name can hold it
        return at_tmp and st.st_ino != record.replaces

    if (
        record.replaces
        and written(at_name, at_tmp=False)
        and at_tmp is not None
        and stat.S_ISREG(at_tmp.st_mode)
        and at_tmp.st_ino == record.replaces
        and at_tmp.st_uid == 0
    ):
        exchange(dir_fd, record.tmp, record.name)
        os.unlink(record.tmp, dir_fd=dir_fd)
        return "removed; the copy it replaced is back"
    if written(at_tmp, at_tmp=True):
        os.unlink(record.tmp, dir_fd=dir_fd)
        return "removed (from its temporary name)"
    if written(at_name, at_tmp=False):
        os.unlink(record.name, dir_fd=dir_fd)
        return "removed"
    if record.ino and at_name is not None:
        return "left: changed since prepare"
    return "already gone"


def _stands_on(dir_fd: int, name: str, ino: int) -> bool:
    """Whether the entry ``name`` itself is the inode ``ino``, whatever is mounted on it:
    readdir reports the inode a mount covers, stat the mount's root."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as entries:
            return any(e.name == name and e.inode() == ino for e in entries)
    finally:
        os.close(fd)


def _moved_bind(record: Record, table: mounts.MountTable, st_dev: int, jail: str) -> str:
    """Where this namespace still has the bind ``record`` made, after its directory was
    renamed (by the daemon's user, who may own it; the mount goes along), or "".

    Neither the directory nor the placeholder can be removed while the bind is on it, so a
    bind not found at its name was moved, not lost: forgetting its record would leave a mount
    no teardown takes back. A mount point keeps its own name; the entry under it is the
    placeholder, on the filesystem ``st_dev`` of the record's directory (a rename does not
    leave its filesystem; inode numbers alone repeat across filesystems). Mount points in the
    jail are looked at, and outside it those whose directory the mount table puts on that
    filesystem (a directory an older prepare made in the user's own directory, moved out of
    the jail with it): a directory of another filesystem (a hung NFS mount) is never opened."""
    devs = {entry.mount_id: entry.dev for entry in table.entries}
    for entry in table.entries:
        parent, name = os.path.split(entry.mount_point)
        if name != record.name:
            continue
        if not parent.startswith(f"{jail}/") and devs.get(entry.parent_id) != st_dev:
            continue
        try:  # reading a directory's entries only: following a symlink on the way is harmless
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_dev == st_dev and _stands_on(fd, name, record.ino):
                return entry.mount_point
        finally:
            os.close(fd)
    return ""


def _unbind(dir_fd: int, record: Record) -> str:
    """BIND in this namespace: detach the mount on the name if it holds what was bound and
    stands on jailshim's placeholder.

    Found through the directory fd, not by path in mountinfo: a user who can write the jail
    could rename the directory under us, and the mount moves with it. That user can also move
    in a directory holding another's mount at the same name (a mount point cannot be renamed,
    its directory can): that mount stands on another file, and is left.
    """
    try:
        fd = os.open(record.name, O_PATH_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return "already gone"
    try:
        st = os.fstat(fd)
        # What we bound: the host's character device, or (rdev 0) the host's log socket.
        # A jail file (regular): the host's file, not the placeholder under it.
        bound = (
            stat.S_ISCHR(st.st_mode) and st.st_rdev == record.rdev
            if record.rdev
            else stat.S_ISSOCK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_ino != record.ino)
        )
        if not bound:
            return "already gone" if st.st_ino == record.ino else "left: something else is there"
        if record.ino and not _stands_on(dir_fd, record.name, record.ino):
            return "left: a mount jailshim did not make"
        try:
            mounts.unmount(fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not a mount point here
                raise
            return "left: not a mount here"
    finally:
        os.close(fd)
    return "unmounted"


def _restore(dir_fd: int, record: Record) -> str:
    aside = lstat_at(dir_fd, record.aside)
    if aside is None or (record.ino and aside.st_ino != record.ino):
        at_name = lstat_at(dir_fd, record.name)
        if at_name is not None and at_name.st_ino == record.ino:
            return "never moved"
        return "left: the entry moved aside is gone"
    if lstat_at(dir_fd, record.name) is not None:
        return f"left at {record.where}/{record.aside}: {record.name} exists again"
    try:
        rename_into_place(dir_fd, record.aside, record.name)
    except FileExistsError:
        return f"left at {record.where}/{record.aside}: {record.name} exists again"
    return f"restored from {record.where}/{record.aside}"


def _remove_dev(jail: Jail, record: Record) -> str:
    """dev/ itself goes back to its temporary name first, so that a kill while emptying it
    leaves a name sweep_new_dev recognises, never an unrecorded empty dev/."""
    st = lstat_at(jail.fd, "dev")
    if st is not None and stat.S_ISDIR(st.st_mode) and (st.st_ino == record.ino or not record.ino):
        fd = os.open("dev", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=jail.fd)
        try:
            others = [n for n in os.listdir(fd) if not n.startswith(state.STATE_NAME)]
        finally:
            os.close(fd)
        if others:
            return f"left: not empty ({', '.join(sorted(others)[:5])})"
        if lstat_at(jail.fd, state.NEW_DEV) is not None:
            return "left: a leftover temporary dev/ is in the way"
        try:
            rename_into_place(jail.fd, "dev", state.NEW_DEV)
        except FileExistsError:
            return "left: a leftover temporary dev/ is in the way"
    elif st is not None:
        return "left: changed since prepare"
    return sweep_new_dev(jail) or "already gone"


def sweep_new_dev(jail: Jail) -> str:
    """Remove the temporary dev/ a killed prepare or teardown left: it holds at most jailshim's
    own record files (root-owned regular files), and is removed only then."""
    st = lstat_at(jail.fd, state.NEW_DEV)
    if st is None:
        return ""
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        return f"left {state.NEW_DEV}: not a directory jailshim made"
    fd = os.open(state.NEW_DEV, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=jail.fd)
    try:
        for name in os.listdir(fd):
            entry = lstat_at(fd, name)
            if (
                name.startswith(state.STATE_NAME)
                and entry is not None
                and stat.S_ISREG(entry.st_mode)
                and entry.st_uid == 0
            ):
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(state.NEW_DEV, dir_fd=jail.fd)
    except OSError as exc:
        return f"left {state.NEW_DEV}: {exc.strerror}"
    return "removed"


def _rmdir(dir_fd: int, record: Record) -> str:
    st = lstat_at(dir_fd, record.name)
    if st is None:
        return "already gone"
    # before its inode was recorded: only a directory root made (not the daemon's user's own,
    # which appeared at the name meanwhile)
    if not stat.S_ISDIR(st.st_mode) or (st.st_ino != record.ino if record.ino else st.st_uid):
        return "left: changed since prepare"
    try:
        os.rmdir(record.name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
            return f"left: {exc.strerror}"
        raise
    return "removed"


def _unmount_tmpfs(jail: Jail, table: mounts.MountTable) -> str:
    entry = table.at(f"{jail.real}/dev")
    if entry is None or entry.fstype != "tmpfs" or entry.source != state.TMPFS_SOURCE:
        return "already gone"
    mounts.unmount_at(jail.fd, "dev")  # detaches the binds inside it too
    return "unmounted"


# An outcome that keeps its record: the step could not be undone yet, and a later run can.
KEPT = "kept"
# ... because its directory is not proven to stay in the jail: nothing was done there
UNPROVEN = f"{KEPT}, nothing done there"


def _record_dir(jail: Jail, record: Record, dev_fd: int | None) -> tuple[int, list[str], str]:
    """An fd on the record's directory (the very dev/ the journal was read from, for dev/),
    what is missing on the way, and "" when every directory on the way is proven to stay in
    the jail (else the sentence that says which one a user other than root could move out)."""
    if record.where == "dev" and dev_fd is not None:
        return os.dup(dev_fd), [], ""
    return jail.walk_proving(record.where)


def _unbind_at(jail: Jail, record: Record, dev_fd: int | None) -> tuple[str, int]:
    """_unbind, and the filesystem the record's directory (or what is left of it) is on.
    Nothing is done in a directory not proven to stay in the jail: its record is kept."""
    dir_fd, missing, movable = _record_dir(jail, record, dev_fd)
    try:
        st_dev = os.fstat(dir_fd).st_dev
        if movable:
            return f"{UNPROVEN}: {movable}", st_dev
        if missing:
            return f"already gone: {record.where}/ is gone", st_dev
        return _unbind(dir_fd, record), st_dev
    finally:
        os.close(dir_fd)


def undo(jail: Jail, record: Record, table: mounts.MountTable, dev_fd: int | None = None) -> str:
    """Undo ``record`` in this mount namespace; returns what was done, or why it was left.

    ``dev_fd`` is the dev/ the journal was read from: records there are undone in that very
    directory, even if its name was swapped meanwhile. The caller decides whether a record is
    this namespace's to undo (state.Record.is_mount).
    """
    if record.kind is Kind.HOLDER:
        return "released"
    if record.kind is Kind.TMPFS:
        return _unmount_tmpfs(jail, table)
    if record.kind is Kind.MKDIR and (record.where, record.name) == ("", "dev"):
        return _remove_dev(jail, record)
    if record.kind is Kind.BIND:
        return _undo_bind(jail, record, table, dev_fd)
    return _undo_in_dir(jail, record, dev_fd)


def _undo_bind(jail: Jail, record: Record, table: mounts.MountTable, dev_fd: int | None) -> str:
    """Unmount a bind where it was made; one that moved with its directory is said, and
    never followed out of the jail."""
    outcome, st_dev = _unbind_at(jail, record, dev_fd)
    if outcome == "unmounted" or not record.ino:
        return outcome
    moved = _moved_bind(record, table, st_dev, jail.real)
    if not moved or (outcome.startswith(KEPT) and moved == f"{jail.real}/{record.path}"):
        return outcome  # gone; or where it was, in a directory not proven to stay
    if moved.startswith(f"{jail.real}/"):
        return f"{KEPT}: the bind moved to {moved} with its directory"
    return (
        f"{KEPT}: the bind moved out of the jail to {moved} with its directory; jailshim "
        "never unmounts outside the jail: move the directory back"
    )


def _undo_in_dir(jail: Jail, record: Record, dev_fd: int | None) -> str:
    """Undo a file, directory or node record in its directory, opened without following a
    name that may have moved out of the jail."""
    dir_fd, missing, movable = _record_dir(jail, record, dev_fd)
    try:
        if movable:  # never act where the directory may be outside the jail by now
            return f"{UNPROVEN}: {movable}"
        if missing:
            return f"already gone: {record.where}/ is gone"
        if record.kind is Kind.DISPLACED:
            return _restore(dir_fd, record)
        if record.kind is Kind.MKDIR:
            return _rmdir(dir_fd, record)
        if record.kind is Kind.COPY:
            return _remove_copy(dir_fd, record)
        return _remove_made(dir_fd, record)
    finally:
        with contextlib.suppress(OSError):
            os.close(dir_fd)
