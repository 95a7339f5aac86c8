"""Gather the facts plan.decide needs: read-only syscalls on the jail, /proc, the mount table."""

from __future__ import annotations

import errno
import os
import stat

from jailshim.devices import Device
from jailshim.errors import ConfigError
from jailshim.files import FileFacts, HostFile, JailFile, host_problem, missing_host_file
from jailshim.jail.mounts import MountTable
from jailshim.jail.powers import Powers
from jailshim.jail.safepath import (
    O_PATH_NOFOLLOW,
    Entry,
    EntryKind,
    Jail,
    inspect_entry,
    link_names,
    owner_name,
    server_owned_mount,
    shared_write,
    writable_by_non_root,
)
from jailshim.plan import DevDir, SocketFacts, Survey
from jailshim.spec import Identity
from jailshim.state import TMPFS_SOURCE

__all__ = ["check_ownership", "open_host_path", "read_host_file", "survey", "survey_file"]

_MAX_FILE = 4 * 1024 * 1024  # a jail file is configuration, not data
_DIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _writable_only_by(st: os.stat_result, daemon: Identity | None) -> bool:
    """Whether the only non-root users who can write here are the daemon's user or group."""
    if daemon is None or st.st_mode & stat.S_IWOTH:
        return False
    owner_ok = st.st_uid in (0, daemon.uid)  # any other owner may chmod it and write
    group_ok = st.st_gid in (0, daemon.gid) or not st.st_mode & stat.S_IWGRP
    return owner_ok and group_ok


def check_ownership(
    jail: Jail, dev_fd: int | None, *, allow_writable: bool, daemon: Identity | None = None
) -> list[tuple[str, str]]:
    """Refuse a jail (or jail/dev) that a non-root user can write to; (level, text) notes when
    that is allowed: the daemon's own user or group (stock packages give it its jail, as
    Debian's /var/lib/unbound), or --allow-writable-jail.

    Such a user could swap entries under us or replace a node after we checked it: jailshim's
    own entries stay in a root-owned dev/, and prepare checks dev/ is still its own after it.
    """

    def describe(where: str, st: os.stat_result) -> str:
        return f"{where} (owner {st.st_uid}, group {st.st_gid}, mode {st.st_mode & 0o7777:04o})"

    if dev_fd is not None:
        st = os.fstat(dev_fd)
        if writable_by_non_root(st):
            # Not covered by --allow-writable-jail: dev/ holds the nodes the daemon trusts and
            # jailshim's record, which root's teardown acts on. A user who can write there could
            # swap a node after the check or forge the record.
            raise ConfigError(
                f"{describe(jail.real + '/dev', st)} is writable by a non-root user; jailshim "
                "keeps the nodes and its record there, so dev/ must be owned by root and not "
                "group/other-writable (even with --allow-writable-jail).",
                chroot=jail.path,
            )
    if not writable_by_non_root(jail.stat):
        return []
    movable = jail.root_movable()
    if movable:  # whatever the flag says: root must never work in a jail that can be moved away
        raise ConfigError(movable, chroot=jail.path)
    found = describe(jail.real, jail.stat)
    if daemon is not None and _writable_only_by(jail.stat, daemon):
        return [
            ("info", f"writable only by the daemon's own user or group ({daemon.name}): {found}")
        ]
    if not allow_writable:
        raise ConfigError(
            f"The jail is writable by a non-root user: {found}; make it owned by root (or by "
            "the daemon's own user) and not writable by others, or pass --allow-writable-jail.",
            chroot=jail.path,
        )
    return [("warning", f"writable by a non-root user: {found}")]


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def survey_socket(
    jail: Jail,
    path: str,
    mounts: MountTable,
    placeholders: frozenset[int] = frozenset(),
    *,
    notify: bool = False,
) -> SocketFacts:
    """The host socket at ``path`` (a log socket, or $NOTIFY_SOCKET with ``notify``) and what
    stands at the same path inside the jail."""
    host_problem, host_id = "", (0, 0)
    shown = f"$NOTIFY_SOCKET {path}" if notify else path
    lost = "the daemon's READY=1 will be lost" if notify else "logs will be lost"
    try:
        # walked as a --file's host path is: the daemon's user's symlink in its own directory
        # had root bind, into the jail, a 0666 socket only root could reach (its directory
        # 0700); review1 noted it, review2 reproduced it
        host_fd, _ = open_host_path(path)
        try:
            st = os.fstat(host_fd)
        finally:
            os.close(host_fd)
        host_id = _identity(st)
        if not stat.S_ISSOCK(st.st_mode):
            host_problem = f"the host's {shown} is not a socket, {lost}"
    except OSError as exc:
        host_problem = f"the host's {shown} does not exist ({exc.strerror}), {lost}"
    parent, name = os.path.split(path.rstrip("/"))
    fd, missing = jail.walk(parent)
    try:
        readonly = bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
        if missing:
            entry, entry_id = Entry(name, EntryKind.ABSENT), (0, 0)
        else:
            where = jail.real + (parent if parent != "/" else "")
            entry = inspect_entry(fd, where, name, mounts, placeholders=placeholders)
            entry_id = (0, 0)
            if entry.kind is not EntryKind.ABSENT:
                entry_id = _identity(os.stat(name, dir_fd=fd, follow_symlinks=False))
    finally:
        os.close(fd)
    return SocketFacts(
        path=path,
        host_problem=host_problem,
        host_id=host_id,
        entry=entry,
        entry_id=entry_id,
        readonly=readonly,
        notify=notify,
    )


def _read_regular(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size <= limit:
        chunk = os.read(fd, min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# Kernel interfaces, not files (--file itself may not name them): reading /proc/kmsg as root
# consumes the messages syslog was to log.
_NOT_FILES = ("/proc/", "/sys/", "/dev/")


def _open_regular(name: str, dir_fd: int | None = None) -> tuple[int, os.stat_result] | str:
    """A read fd on ``name`` (not followed) and its stat when it is a regular file, else why
    not. Anything else is looked at through O_PATH and never opened: opening acts for some
    files (a watchdog device arms the watchdog, a FIFO wakes its blocked writer)."""
    return _reopen_regular(os.open(name, O_PATH_NOFOLLOW, dir_fd=dir_fd), host=dir_fd is None)


def _reopen_regular(path_fd: int, *, host: bool) -> tuple[int, os.stat_result] | str:
    """``_open_regular`` for the O_PATH fd ``path_fd``, which it closes."""
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISREG(st.st_mode):
            return "it is not a regular file"
        magic = f"/proc/self/fd/{path_fd}"  # the kernel's name for the very inode
        real = os.readlink(magic)
        if host and real.startswith(_NOT_FILES):
            return f"it is {real}, under /{real.split('/')[1]}: a kernel interface, not a file"
        return os.open(magic, _READ & ~os.O_NOFOLLOW), st
    finally:
        os.close(path_fd)


_MAX_LINKS = 40  # the kernel's own limit before ELOOP


def _refuse_server_owned(path: str, dir_fd: int, fd: int, here: str, st: os.stat_result) -> str:
    """Why root must not take ``here`` (open at ``fd``) when it is the root of a FUSE mount, or
    "" when it is not: a FUSE server says who owns what it shows, so the owner rule below would
    take its word. Seen without it (review3): a user's FUSE mount (allow_other) on its home
    claimed root's ownership of itself and of app.conf, a symlink to root's 0644 notes in a 0700
    directory; every name looked root's, the link was followed and the daemon's user read the
    notes in the jail. Only a mount crossing (a device change) is asked about, by mount id."""
    if os.fstat(dir_fd).st_dev == st.st_dev:
        return ""
    on = server_owned_mount(fd)
    if not on:
        return ""
    return (
        f"{here}, on the way to the host's {path}, is on {on}, whose server says who owns "
        "its files (FUSE), so a user could have shown there a root-owned symlink to a file only "
        "root can reach; copy the file to a local filesystem, then run again."
    )


def _refuse_host_step(path: str, where: str, dir_fd: int, here: str, st: os.stat_result) -> str:
    """Why root must not take the entry ``here`` (stat ``st``) found in the host directory
    ``where`` (fd ``dir_fd``) on the way to ``path``, or "" when it may (sshd's StrictModes
    rule, for every name on the way). Seen without it (review1, R1): the daemon's user, owning
    the directory of a --file, replaced the file by a symlink to root's 0644 notes in a 0700
    directory; root followed it and the copy in the jail was the user's to read. Root follows
    a symlink only when root owns it in a directory only root can change (or in a sticky
    one such as /tmp, whose root-owned entries no one else can move). In a directory
    another user owns, only that user's own files and directories are taken: whatever that
    user put there, it could reach it itself (a hard link needs the path to its target, and
    protected_hardlinks even more), so the copy or bind gives no one a file they could not
    reach. A directory others than its owner can write (group or other bits, an ACL) is
    refused, unless sticky and root's: there only root's entries, which no one else can move."""
    dir_st = os.fstat(dir_fd)
    link, dir_owner = stat.S_ISLNK(st.st_mode), dir_st.st_uid
    shown = f"{where} (owner {owner_name(dir_owner)}, mode {dir_st.st_mode & 0o7777:04o})"
    named = f"The host's {path}" if here == path else f"{here}, on the way to the host's {path},"
    fix = "name a path through directories and symlinks only root can change, then run again."
    if shared_write(dir_fd, dir_st):
        return _refuse_in_shared(named, shown, fix, dir_st, st)
    if dir_owner != 0:
        if st.st_uid == dir_owner and not link:
            return ""
        what = "a symlink" if link else f"an entry of {owner_name(st.st_uid)}"
        return (
            f"{named} is {what} in {shown}, a directory that user can change, so it could have "
            "put there a name leading to a file only root can reach (from such a directory "
            f"jailshim takes only that user's own files and directories); {fix}"
        )
    if link and st.st_uid != 0:
        return (
            f"{named} is a symlink {owner_name(st.st_uid)} owns, which could point at a file only "
            "root can reach, and jailshim follows only root's symlinks on the host; name the "
            "file it leads to, or make the link root's (chown -h root), then run again."
        )
    return ""


def _refuse_in_shared(
    named: str, shown: str, fix: str, dir_st: os.stat_result, st: os.stat_result
) -> str:
    """_refuse_host_step in a directory users other than its owner can write: only root's
    entries of a sticky directory of root's are taken."""
    if dir_st.st_mode & stat.S_ISVTX and dir_st.st_uid == 0:
        if st.st_uid == 0:
            return ""
        return (
            f"{named} belongs to {owner_name(st.st_uid)} in the sticky directory {shown}, so "
            f"that user could have made it a link to a file only root can reach; {fix}"
        )
    return (
        f"{named} is in {shown}, which users other than its owner can write (group "
        f"{dir_st.st_gid} or an ACL), so any of them could have put there a symlink to a "
        f"file only root can reach; {fix}"
    )


def open_host_path(path: str) -> tuple[int, str]:
    """An O_PATH fd on the host's ``path`` and the path it led to, walked from / one name at
    a time without the kernel following a symlink: a symlink is read and followed here, when
    ``_refuse_host_step`` allows it (ConfigError, 78, when it does not; OSError as open(2)
    would give it). Root's own links keep working: /etc/localtime into zoneinfo, resolv.conf
    into /run/systemd/resolve (a directory systemd-resolve owns, with its own file)."""
    todo = [p for p in path.split("/") if p]
    dirs = [(os.open("/", _DIR_PATH), "")]  # the directories walked: fd, path
    links = 0
    try:
        while todo:
            part = todo.pop(0)
            if part == ".":
                continue
            if part == "..":
                if len(dirs) > 1:
                    os.close(dirs.pop()[0])
                continue
            dir_fd, where = dirs[-1]
            fd = os.open(part, O_PATH_NOFOLLOW, dir_fd=dir_fd)
            here = f"{where}/{part}"
            try:
                st = os.fstat(fd)
                _refuse_host_entry(path, here, st, where=where, dir_fd=dir_fd, fd=fd)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > _MAX_LINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                    todo[:0] = link_names(os.readlink(part, dir_fd=dir_fd), dirs)
                    continue
                if todo and not stat.S_ISDIR(st.st_mode):
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            except BaseException:
                os.close(fd)
                raise
            if todo:
                dirs.append((fd, here))
                continue
            return fd, here
        return os.dup(dirs[-1][0]), dirs[-1][1] or "/"
    finally:
        for fd, _ in dirs:
            os.close(fd)


def _refuse_host_entry(
    path: str, here: str, st: os.stat_result, *, where: str, dir_fd: int, fd: int
) -> None:
    """ConfigError (78) when root must not take the entry ``here`` on the way to ``path``:
    on a server-owned filesystem, or changeable by another user (_refuse_host_step)."""
    refused = _refuse_server_owned(path, dir_fd, fd, here, st)
    refused = refused or _refuse_host_step(path, where or "/", dir_fd, here, st)
    if refused:
        raise ConfigError(refused)


def read_host_file(path: str) -> HostFile:
    """The host's file at ``path``, its symlinks followed on the host (etc/localtime into
    /usr/share/zoneinfo, resolv.conf into /run/systemd/resolve): the content is what counts.
    Walked by ``open_host_path``: a name on the way that a user other than root could have
    pointed elsewhere is refused (78), not followed."""
    try:
        path_fd, real = open_host_path(path)
        opened = _reopen_regular(path_fd, host=True)
    except OSError as exc:
        return HostFile(path, problem=host_problem(path, exc.errno or 0))
    if isinstance(opened, str):
        return HostFile(path, real, missing_host_file(path, opened))
    fd, st = opened
    try:
        if st.st_size > _MAX_FILE:
            return HostFile(path, real, missing_host_file(path, "it is larger than 4 MiB"))
        content = _read_regular(fd, _MAX_FILE)
        if len(content) > _MAX_FILE:
            return HostFile(path, real, missing_host_file(path, "it is larger than 4 MiB"))
    except OSError as exc:
        return HostFile(path, real, host_problem(path, exc.errno or 0))
    finally:
        os.close(fd)
    return HostFile(path, real, "", content, stat.S_IMODE(st.st_mode), _identity(st))


def survey_file(
    jail: Jail,
    file: JailFile,
    mounts: MountTable,
    placeholders: frozenset[int] = frozenset(),
    copies: frozenset[tuple[str, int]] = frozenset(),
) -> FileFacts:
    """The host's file and what stands at the same path in the jail (never followed)."""
    host = read_host_file(file.path)
    parent, name = os.path.split(file.path)
    fd, missing = jail.walk(parent)
    content: bytes | None = None
    entry_id, root_s, root_kept = (0, 0), False, False
    try:
        readonly = bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
        if missing:
            entry = Entry(name, EntryKind.ABSENT)
        else:
            where = jail.real + (parent if parent != "/" else "")
            entry = inspect_entry(fd, where, name, mounts, placeholders=placeholders)
            if entry.kind is not EntryKind.ABSENT:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                entry_id, root_s = _identity(st), st.st_uid == 0
                root_kept = not writable_by_non_root(st)
            if entry.kind is EntryKind.REGULAR and not entry.mountpoint:
                content = _jail_content(fd, name, entry.ino, len(host.content))
    finally:
        os.close(fd)
    return FileFacts(
        file=file,
        host=host,
        missing_dirs=tuple(missing),
        entry=entry,
        entry_dev_ino=entry_id,
        content=content,
        # root's too: the daemon's user's own file may have got the freed inode number
        ours=(file.path, entry.ino) in copies and entry.kind is EntryKind.REGULAR and root_s,
        readonly=readonly,
        root_kept=root_kept,
    )


def _jail_content(dir_fd: int, name: str, ino: int, want: int) -> bytes | None:
    """The first ``want`` + 1 bytes of the regular file ``name`` (enough to compare), or None
    when it changed since lstat (the daemon's user may have put a FIFO there meanwhile)."""
    try:
        opened = _open_regular(name, dir_fd)
    except OSError:
        return None
    if isinstance(opened, str):
        return None
    fd, st = opened
    try:
        return _read_regular(fd, want) if st.st_ino == ino else None
    finally:
        os.close(fd)


def survey(
    jail: Jail,
    dev_fd: int | None,
    devices: tuple[Device, ...],
    mounts: MountTable,
    powers: Powers,
    *,
    sockets: tuple[str, ...] = (),
    placeholders: frozenset[int] = frozenset(),
    files: tuple[JailFile, ...] = (),
    copies: frozenset[tuple[str, int]] = frozenset(),
    notify: str = "",
) -> Survey:
    fs_fd = dev_fd if dev_fd is not None else jail.fd
    flags = os.fstatvfs(fs_fd).f_flag
    dev_path = f"{jail.real}/dev"
    dev_mount = mounts.at(dev_path)
    dev = DevDir(
        exists=dev_fd is not None,
        readonly=bool(flags & os.ST_RDONLY),
        nodev=bool(flags & os.ST_NODEV),
        ours_tmpfs=dev_mount is not None
        and dev_mount.fstype == "tmpfs"
        and dev_mount.source == TMPFS_SOURCE,
    )
    entries = {
        d.name: (
            inspect_entry(
                dev_fd, dev_path, d.name, mounts, expected_rdev=d.rdev, placeholders=placeholders
            )
            if dev_fd is not None
            else Entry(d.name, EntryKind.ABSENT)
        )
        for d in devices
    }
    return Survey(
        jail=jail.real,
        dev=dev,
        entries=entries,
        powers=powers,
        sockets=tuple(
            survey_socket(jail, path, mounts, placeholders, notify=path == notify)
            for path in sockets
        ),
        files=tuple(survey_file(jail, f, mounts, placeholders, copies) for f in files),
        unpinned=_unpinned(jail, (*sockets, *(f.path for f in files))),
    )


def _unpinned(jail: Jail, paths: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The directories of ``paths`` (as relative to the jail) on whose way a user other than
    root could move a directory out of the jail, each with the sentence that says so: a step
    must not act there (plan.decide; apply proves it again when it acts)."""
    found = []
    for where in sorted({os.path.dirname(p.rstrip("/")).strip("/") for p in paths}):
        fd, _missing, movable = jail.walk_proving(where)
        os.close(fd)
        if movable:
            found.append((where, movable))
    return tuple(found)
