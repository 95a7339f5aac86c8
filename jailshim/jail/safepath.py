"""Safe access to the jail: every path is walked from a directory fd, never through a symlink.

The jail may be writable by the daemon's user, who could plant dev -> /etc or
dev/urandom -> /etc/shadow. Every lookup here is dirfd-relative with O_NOFOLLOW, so no symlink
inside the jail is ever followed and nothing outside it is ever created, changed or mounted on.
"""

from __future__ import annotations

import errno
import os
import stat
from enum import StrEnum
from types import TracebackType
from typing import NamedTuple, NoReturn

from jailshim.errors import ConfigError, UsageError
from jailshim.jail.mounts import MountTable

__all__ = [
    "OPEN_TRIAL",
    "O_PATH_NOFOLLOW",
    "Entry",
    "EntryKind",
    "Holder",
    "Jail",
    "exchange",
    "holder",
    "inspect_entry",
    "link_names",
    "lstat_at",
    "movable_out",
    "name_swappable",
    "owner_name",
    "rename_into_place",
    "server_owned_mount",
    "shared_write",
    "swappable_path",
    "writable_by_non_root",
]

O_PATH_NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_NOFOLLOW = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_TRIAL = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``name`` in ``dir_fd``, not followed if a symlink; None when there is none."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _renameat2(dir_fd: int, src: str, dst: str, flags: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.renameat2(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), flags)
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def rename_into_place(dir_fd: int, src: str, dst: str) -> None:
    """rename(2) that never replaces: EEXIST when ``dst`` exists.

    A plain rename silently replaces a file or an empty directory at ``dst``; in a jail its
    user can write, something may have appeared there since we looked. renameat2 with
    RENAME_NOREPLACE (Linux >= 3.15) makes that an error instead of a deletion.
    """
    _renameat2(dir_fd, src, dst, _RENAME_NOREPLACE)


def exchange(dir_fd: int, one: str, other: str) -> None:
    """Swap two names atomically (RENAME_EXCHANGE): a reader of either name always finds a
    whole file, and nothing is deleted; the caller checks what it got back."""
    _renameat2(dir_fd, one, other, _RENAME_EXCHANGE)


class EntryKind(StrEnum):
    ABSENT = "nothing"
    CHAR = "a character device"
    BLOCK = "a block device"
    REGULAR = "a regular file"
    SYMLINK = "a symlink"
    DIRECTORY = "a directory"
    FIFO = "a FIFO"
    SOCKET = "a socket"


def _kind(mode: int) -> EntryKind:
    for test, kind in (
        (stat.S_ISCHR, EntryKind.CHAR),
        (stat.S_ISBLK, EntryKind.BLOCK),
        (stat.S_ISREG, EntryKind.REGULAR),
        (stat.S_ISLNK, EntryKind.SYMLINK),
        (stat.S_ISDIR, EntryKind.DIRECTORY),
        (stat.S_ISFIFO, EntryKind.FIFO),
    ):
        if test(mode):
            return kind
    return EntryKind.SOCKET


class Entry(NamedTuple):
    """What stands at one name in a jail directory, as lstat and a trial open saw it."""

    name: str
    kind: EntryKind
    rdev: int = 0
    mode: int = 0
    ino: int = 0
    size: int = 0
    mountpoint: bool = False
    open_errno: int = 0  # errno of the trial open of a character device (EACCES on nodev)
    link_target: str = ""
    dir_empty: bool = True
    placeholder: bool = False  # an empty file jailshim made, bound in another mount namespace

    def describe(self) -> str:
        """A phrase for logs: 'a symlink to /etc/passwd', 'a character device 1:3'."""
        if self.kind is EntryKind.SYMLINK:
            return f"a symlink to {self.link_target}"
        if self.kind in (EntryKind.CHAR, EntryKind.BLOCK):
            text = f"{self.kind} {os.major(self.rdev)}:{os.minor(self.rdev)} mode {self.mode:04o}"
            return text + (
                f" that cannot be opened ({errno.errorcode.get(self.open_errno, self.open_errno)})"
                if self.open_errno
                else ""
            )
        if self.kind is EntryKind.REGULAR:
            return f"a regular file of {self.size} bytes"
        return str(self.kind)


def writable_by_non_root(st: os.stat_result) -> bool:
    """Whether some user other than root can create or rename entries in this directory, or
    can at any time: an owner who is not root may chmod it (a 0555 directory of the daemon's
    user had passed as root's)."""
    mode = st.st_mode
    return bool(st.st_uid != 0 or (st.st_gid != 0 and mode & stat.S_IWGRP) or mode & stat.S_IWOTH)


class Holder(NamedTuple):
    """What decides whether a directory can be moved to another parent by a user other than
    root: its owner, its mode, and whether such a user can write it (mode, owner or ACL)."""

    uid: int
    mode: int
    writable: bool


def movable_out(directory: Holder, parent: Holder) -> bool:
    """Whether a user other than root could move ``directory`` to another parent, out of the
    jail. rename(2) to another parent needs write access to the directory itself (its ".."
    changes) as well as to the parent it leaves, and a sticky parent lets only the owner of
    the directory or of the parent move it. A directory root owns and no one else can write
    stays below its parent whoever owns that parent; the daemon's own directory in root's
    directory stays too. Renaming within the same parent stays possible: that keeps it in the
    jail (and every step checks the inode it made by its fd, not by its name)."""
    return directory.writable and name_swappable(directory.uid, parent)


def name_swappable(owner: int, parent: Holder) -> bool:
    """Whether a user other than root could rename, remove or replace an entry owned by
    ``owner`` in ``parent`` (exchange it with a symlink of its own): the parent is writable by
    such a user and no sticky bit keeps them off an entry that root owns in root's directory."""
    if not parent.writable:
        return False
    return not (parent.mode & stat.S_ISVTX and owner == 0 and parent.uid == 0)


_MAX_SYMLINKS = 40  # as the kernel's path walk (ELOOP beyond)


def server_owned_mount(fd: int) -> str:
    """ "" when the file open at ``fd`` is on a filesystem whose owners the kernel vouches
    for, else what it is on ("a fuse.x filesystem", "a filesystem jailshim cannot tell"): a
    FUSE server says who owns each entry and where each symlink leads, and may answer
    differently at every lookup (review3: a user's FUSE mount with allow_other showed a
    "root-owned" symlink). Asked of the mount by id (fdinfo), never of the file itself."""
    from jailshim.jail.mounts import parse_mountinfo
    from jailshim.verify.cryptolib import server_owned

    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
            mount_id = next(int(ln.split()[1]) for ln in f if ln.startswith("mnt_id:"))
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            fstype = {e.mount_id: e.fstype for e in parse_mountinfo(f.read())}.get(mount_id, "")
    except (OSError, ValueError, StopIteration):
        fstype = ""
    if fstype and not server_owned(fstype):
        return ""
    return f"a {fstype} filesystem" if fstype else "a filesystem jailshim cannot tell"


def swappable_path(path: str, actor: str) -> str:
    """ "" when no user other than root can change where ``path`` leads, else the sentence
    (which entry, whose directory, the fix) for ``actor``, who will act on the path by name.

    Walks from / as the kernel resolves the name, following symlinks, and asks of every
    entry on the way, the last included, whether a user other than root could swap it
    (name_swappable on its directory's fd) or, for a symlink, whether it is someone else's
    than root's. Walking stops at the first missing entry: what is made there is made in a
    directory proven root's. Seen without it: postfix, owning queue_directory's parent,
    exchanged the directory with a symlink after the jail was vetted, and root's `postfix
    check` made its queue directories outside the jail (review1 R3).
    """
    import collections

    if not path.startswith("/"):
        path = f"{os.getcwd()}/{path}"
    todo = collections.deque(path.split("/"))
    stack = [(os.open("/", _DIR_NOFOLLOW), "")]  # (fd, path) of each directory walked down
    links = 0
    try:
        while todo:
            part = todo.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            parent_fd, parent_path = stack[-1]
            where = f"{parent_path}/{part}"
            try:
                st = os.stat(part, dir_fd=parent_fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return ""
            refused = _swappable_entry(
                path, actor, parent_fd=parent_fd, parent_path=parent_path, part=part, st=st
            )
            if refused:
                return refused
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_SYMLINKS:
                    return ""  # ELOOP: whoever acts on it fails, nowhere
                todo.extendleft(reversed(link_names(os.readlink(part, dir_fd=parent_fd), stack)))
                continue
            if not stat.S_ISDIR(st.st_mode):
                return ""
            stack.append((os.open(part, _DIR_NOFOLLOW, dir_fd=parent_fd), where))
        return ""
    finally:
        for fd, _ in stack:
            os.close(fd)


def link_names(target: str, walked: list[tuple[int, str]]) -> list[str]:
    """The names a symlink's ``target`` leads through, to walk next; from / again when it is
    absolute (the directories ``walked``, fd and path, are then closed, all but / itself)."""
    if target.startswith("/"):
        while len(walked) > 1:
            os.close(walked.pop()[0])
    return [name for name in target.split("/") if name]


def _swappable_entry(
    path: str, actor: str, *, parent_fd: int, parent_path: str, part: str, st: os.stat_result
) -> str:
    """swappable_path's question for one entry ``part`` (lstat ``st``) of the directory
    ``parent_fd`` (``parent_path``): its sentence when a user other than root could change
    where it leads (a server-owned mount, a directory such a user can change, a symlink not
    root's), else ""."""
    where = f"{parent_path}/{part}"
    parent, parent_st = holder(parent_fd)
    if st.st_dev != parent_st.st_dev:  # a mount: is its owner the kernel's word?
        on = _mount_of(parent_fd, part)
        if on:
            return (
                f"{path} leads through {where}, on {on}, whose server says who owns "
                f"its entries and where they lead, at every lookup anew; {actor} acts "
                "on that path by name. Give a path on a local filesystem, then run again."
            )
    if name_swappable(st.st_uid, parent):
        return _swappable_sentence(path, where, _described(parent_path or "/", parent_st), actor)
    if stat.S_ISLNK(st.st_mode) and st.st_uid != 0:
        return (
            f"{path} leads through {where}, a symlink owned by "
            f"{owner_name(st.st_uid)}, not root; {actor} acts on that path by name, "
            "so only root may say where it leads. Replace the symlink with "
            "root's own or give the real directory, then run again."
        )
    return ""


def _mount_of(parent_fd: int, name: str) -> str:
    """server_owned_mount of the entry ``name`` of ``parent_fd``; gone again: ""."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except OSError:
        return ""
    try:
        return server_owned_mount(fd)
    finally:
        os.close(fd)


def _swappable_sentence(path: str, where: str, parent: str, actor: str) -> str:
    return (
        f"{path} leads through {where}, which a user other than root could swap for a "
        f"symlink at any moment: its directory {parent} is writable by such a user, and "
        f"{actor} acts on the path by name, so it would act wherever that user points it. "
        f"Make every directory on the way root's and not group/other-writable (or move the "
        "jail below one), then run again."
    )


def holder(fd: int) -> tuple[Holder, os.stat_result]:
    """Who holds the directory at ``fd`` (owner, mode, writable by a user other than root)."""
    st = os.fstat(fd)
    return Holder(st.st_uid, st.st_mode, st.st_uid != 0 or shared_write(fd, st)), st


def shared_write(fd: int, st: os.stat_result) -> bool:
    """Whether a user other than the owner (and root) can write the inode at ``fd``: the
    group's bits (a group other than root's, or an ACL behind them) or the others' bits."""
    mode = st.st_mode
    return bool(
        mode & stat.S_IWOTH or (mode & stat.S_IWGRP and (st.st_gid != 0 or _has_access_acl(fd)))
    )


def _has_access_acl(fd: int) -> bool:
    """A POSIX ACL may give a named user write access that the mode shows only as the group's
    bits (the ACL's mask), here with group root."""
    try:
        return "system.posix_acl_access" in os.listxattr(f"/proc/self/fd/{fd}")
    except OSError:
        return True  # cannot tell: not proven root's alone


def owner_name(uid: int) -> str:
    """A user as a sentence names it: its name and uid, or the uid alone."""
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _described(path: str, st: os.stat_result) -> str:
    return (
        f"{path} (owner {owner_name(st.st_uid)}, group {st.st_gid}, "
        f"mode {stat.S_IMODE(st.st_mode):04o})"
    )


def inspect_entry(
    dir_fd: int,
    dir_path: str,
    name: str,
    mounts: MountTable,
    *,
    expected_rdev: int | None = None,
    placeholders: frozenset[int] = frozenset(),
) -> Entry:
    """lstat ``name`` in ``dir_fd``; a character device with the ``expected_rdev`` numbers is
    also opened once (non-blocking) to see whether its filesystem lets it open.

    A device with other numbers is never opened: opening some devices acts (a watchdog node
    10:130 arms the watchdog and reboots the machine). ``placeholders`` are the inodes of the
    placeholder files jailshim's record lists.
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return Entry(name, EntryKind.ABSENT)
    kind = _kind(st.st_mode)
    link_target, dir_empty, open_errno = "", True, 0
    if kind is EntryKind.SYMLINK:
        link_target = os.readlink(name, dir_fd=dir_fd)
    elif kind is EntryKind.DIRECTORY:
        fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
        )
        try:
            dir_empty = not os.listdir(fd)
        finally:
            os.close(fd)
    elif kind is EntryKind.CHAR and st.st_rdev == expected_rdev:
        try:
            os.close(os.open(name, OPEN_TRIAL, dir_fd=dir_fd))
        except OSError as exc:
            open_errno = exc.errno or 0
    return Entry(
        name=name,
        kind=kind,
        rdev=st.st_rdev,
        mode=stat.S_IMODE(st.st_mode),
        ino=st.st_ino,
        size=st.st_size,
        mountpoint=mounts.at(f"{dir_path}/{name}") is not None,
        open_errno=open_errno,
        link_target=link_target,
        dir_empty=dir_empty,
        placeholder=kind is EntryKind.REGULAR and st.st_size == 0 and st.st_ino in placeholders,
    )


class Jail:
    """An open handle on the jail directory; every other path is reached from it."""

    _root_movable: str | None = None  # root_movable(), once asked

    def __init__(self, path: str) -> None:
        if not path or not path.strip():
            raise UsageError(
                "--chroot is empty; give the jail directory, such as /var/lib/haproxy."
            )
        self.path = path
        try:
            self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ConfigError(
                f"The jail {path} does not exist; create it or fix --chroot.", chroot=path
            ) from None
        except NotADirectoryError:
            what = "a symlink" if os.path.islink(path) else "not a directory"
            raise ConfigError(
                f"The jail {path} is {what}; --chroot must name a real directory "
                "(jailshim never follows a symlink to the jail).",
                chroot=path,
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(
                    f"The jail {path} is a symlink; --chroot must name the real directory.",
                    chroot=path,
                ) from None
            raise
        # The kernel's own name for the directory, as mountinfo spells mount points.
        self.real = os.readlink(f"/proc/self/fd/{self.fd}")
        st = os.fstat(self.fd)
        root = os.stat("/")
        if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino):
            self.close()
            raise ConfigError(
                "The jail is /, which is no jail; give a directory below it.", chroot=path
            )
        from jailshim.jail.hostdirs import host_directory

        # judged by device and inode, so /var/../var/lib or a bind mount of /var/lib is too
        host = host_directory(st, self.real)
        if host is not None:
            self.close()
            alias = "" if host == self.real else f" (reached as {self.real})"
            raise ConfigError(
                f"The jail {path} is the system directory {host}{alias}, the host's own; "
                "jailshim would create entries in it. Give the daemon's own jail directory, "
                "such as /var/lib/haproxy.",
                chroot=path,
            )
        self.stat = st

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Jail:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open_dir(self, name: str) -> int | None:
        """An O_PATH fd on the directory ``name`` (may contain /) in the jail, or None when
        some component is missing.

        A symlink or anything else at a component is a configuration error: jail/dev -> /dev
        would put the host's own /dev in reach of every later step.
        """
        fd, missing = self.walk(name)
        if missing:
            os.close(fd)
            return None
        return fd

    def walk(self, relative: str, *, inside: bool = False) -> tuple[int, list[str]]:
        """Walk ``relative`` (a/b/c) down from the jail without following any symlink.

        Returns an O_PATH fd on the deepest directory that exists and the names still missing
        below it (empty when the whole path exists). The caller closes the fd. With
        ``inside``, a directory on the way that a user other than root could move out of the
        jail is refused (78): a step must act only where it is proven to stay in the jail.
        """
        fd, missing, movable = self.walk_proving(relative)
        if inside and movable:
            os.close(fd)
            raise ConfigError(movable, chroot=self.path)
        return fd, missing

    def walk_proving(self, relative: str) -> tuple[int, list[str], str]:
        """``walk``, and "" when every directory it opened is pinned inside the jail, else
        the sentence that names the first one a user other than root could move out.

        The proof is made on each directory's fd as it is opened: a directory is pinned below
        its parent when no user other than root could move it (movable_out), and the jail
        root when its own parent keeps it (root_movable). Those facts are root's to change
        (the mode and owner of a root-owned inode), so they still hold when the step acts.
        Seen without it: the daemon's user pre-created jail/run/, renamed it out of the jail
        on the first inotify event, and root's bind of the log socket was made there.
        """
        parts = [p for p in relative.split("/") if p and p != "."]
        if ".." in parts:
            raise ConfigError(f"{relative!r} climbs out of the jail with '..'; give a plain path.")
        fd = os.dup(self.fd)
        movable = self.root_movable()
        above, _ = holder(fd)
        for i, part in enumerate(parts):
            try:
                nxt = os.open(part, _DIR_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                return fd, parts[i:], movable
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    os.close(fd)
                    raise
                self._refuse_non_directory(fd, part, "/".join([self.real, *parts[:i], part]))
            os.close(fd)
            fd = nxt
            held, st = holder(fd)
            if not movable and movable_out(held, above):
                where = "/".join([self.real, *parts[:i]])
                movable = _movable_sentence(_described(f"{where}/{part}", st), where)
            above = held
        return fd, [], movable

    def root_movable(self) -> str:
        """ "" when no user other than root can move the jail root itself away (its parent is
        root's and no one else's to write, or the jail root is root's alone, or it is a mount
        point, which cannot be renamed), else the sentence that says so. Asked once."""
        if self._root_movable is None:
            self._root_movable = ""
            held, st = holder(self.fd)
            parent_fd = os.open("..", _DIR_NOFOLLOW, dir_fd=self.fd)
            try:
                parent, parent_st = holder(parent_fd)
            finally:
                os.close(parent_fd)
            if parent_st.st_dev == st.st_dev and movable_out(held, parent):
                where = os.path.dirname(self.real)
                self._root_movable = (
                    f"The jail {_described(self.real, st)} is in {where}, which a user other "
                    "than root can write: that user could move the whole jail while jailshim "
                    "works in it, and root's mounts and files would go along. Make "
                    f"{where} root's and not group/other-writable, then run again."
                )
        return self._root_movable

    def _refuse_non_directory(self, dir_fd: int, name: str, where: str) -> NoReturn:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            found = (
                f"a symlink to {os.readlink(name, dir_fd=dir_fd)}"
                if stat.S_ISLNK(st.st_mode)
                else str(_kind(st.st_mode))
            )
        except OSError:  # gone again: someone who can write the jail is swapping it
            found = "something that changed while jailshim looked at it"
        finally:
            os.close(dir_fd)
        raise ConfigError(
            f"{where} is {found}, not a directory; jailshim never follows symlinks "
            "inside a jail: replace it with a real directory.",
            chroot=self.path,
        )


def _movable_sentence(described: str, parent: str) -> str:
    return (
        f"{described} is in {parent}, which a user other than root can write too: that user "
        "could move it out of the jail while jailshim works in it, and root's mounts and files "
        "would go along. chown root:root it and make it not group/other-writable, or remove it "
        "so that jailshim makes its own, then run again."
    )
