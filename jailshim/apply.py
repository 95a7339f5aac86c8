"""Carry out a Plan: the only module that calls mknod, mount and umount on a jail.

Every step is written to the journal (state.py) *before* its syscall and completed after it,
so whatever stops this process — a failed step, a stop signal, SIGKILL — the journal covers
what was left: a failed or interrupted run undoes this run's records (jail/undo.py) at once,
a killed one is reconciled by the next prepare or teardown. Nothing is created at a name that
depends on the PID. A step the plan expected to work but the kernel refuses (an LSM, a seccomp
filter, a nodev that statvfs did not show) falls down the ladder: mknod -> bind.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from typing import TYPE_CHECKING, Any, NoReturn

from jailshim import state
from jailshim.devices import ALLOWLIST, Device
from jailshim.errors import ConfigError, NotPermitted, SystemRefused
from jailshim.files import FileAction, FileStep
from jailshim.jail import mounts
from jailshim.jail.namespaces import pid_namespace
from jailshim.jail.powers import Powers
from jailshim.jail.safepath import (
    O_PATH_NOFOLLOW,
    OPEN_TRIAL,
    Jail,
    exchange,
    lstat_at,
    rename_into_place,
)
from jailshim.plan import (
    Action,
    DeviceStep,
    Plan,
    SocketStep,
    Strategy,
    describe_errno,
    refusal_sentence,
)
from jailshim.state import Journal, Kind, Record

if TYPE_CHECKING:
    from jailshim.logs import Logger

__all__ = ["Applier"]

_TMPFS_FLAGS = mounts.MS_NODEV | mounts.MS_NOSUID | mounts.MS_NOEXEC
_TMPFS_DATA = "mode=0755,size=256k,nr_inodes=64"
_BIND_HARDENING = mounts.MS_RDONLY | mounts.MS_NOSUID | mounts.MS_NOEXEC
_REFUSALS = (errno.EPERM, errno.EACCES)
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A directory this run made is opened for real (not O_PATH): its mode and ACL are then set.
_MADE_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# What a parent directory passes on to new entries besides its setgid group.
_ACCESS_ACL, _DEFAULT_ACL = "system.posix_acl_access", "system.posix_acl_default"
_PLACEHOLDER = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ALLOWED_RDEVS = frozenset(d.rdev for d in ALLOWLIST.values())


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 3)


def _event(step: SocketStep) -> str:
    return "notify_socket" if step.facts.notify else "log_socket"


def _unnamed_file(dir_fd: int) -> int | None:
    """An unnamed regular file (O_TMPFILE, mode 0) on ``dir_fd``'s filesystem, or None where
    that filesystem cannot make one (older overlayfs, some FUSE): then the file is named."""
    try:
        return os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _root_with_exactly(fd: int, mode: int, *acls: str) -> None:
    """Make what this run just created root's, with exactly ``mode`` and no ACL: a directory
    the daemon's user owns passes its setgid group and its default ACL on to new entries, and
    a copy of the host's 0640 key would become readable by that user."""
    for acl in acls:
        try:
            os.removexattr(fd, acl)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                raise
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (0, 0):
        os.fchown(fd, 0, 0)
    if stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)


class Applier:
    """One apply run on one jail. ``dev_fd`` ends as the dev/ jailshim works in (a new fd when
    apply made dev/ or mounted over it; ``close`` closes what it opened)."""

    def __init__(
        self,
        jail: Jail,
        dev_fd: int | None,
        journal: Journal,
        powers: Powers,
        *,
        ns: int,
        log: Logger,
    ) -> None:
        self.jail = jail
        self.dev_fd = dev_fd
        self.journal = journal
        self.powers = powers
        self.ns = ns
        self.pidns = pid_namespace()
        self.log = log
        self.created: list[str] = []
        self.opened: list[int] = []  # fds this run opened (closed by ``close``)
        self.strategy = Strategy.AUTO
        self.nodev = False
        # Set when a mount made here would not reach the daemon (prepare.mounts_refused):
        # the ladder must not fall back to bind at run time either.
        self.mounts_refused = ""

    @property
    def dev(self) -> int:
        if self.dev_fd is None:
            raise RuntimeError("dev/ is not open")
        return self.dev_fd

    def _open_dir(self, name: str, dir_fd: int) -> int:
        fd = os.open(name, _DIR, dir_fd=dir_fd)
        self.opened.append(fd)
        return fd

    def _intend(self, record: Record) -> int:
        """Journal a step of this run (in this mount namespace) before doing it."""
        return self.journal.intend(record._replace(ns=self.ns, pidns=self.pidns))

    def _open_made_dir(self, name: str, dir_fd: int) -> int:
        """Open a directory this run just made, and make sure it is that one: in a jail its user
        can write, the name could have been swapped for the user's own directory, which the
        user could then move out of the jail with everything root put in it. A directory root
        made cannot be moved to another parent by that user (it needs write access to it).
        A setgid parent gives it 02755 and a default ACL may take bits away: both are taken
        off here, so nothing made below it inherits them either."""
        fd = os.open(name, _MADE_DIR, dir_fd=dir_fd)
        self.opened.append(fd)
        st = os.fstat(fd)
        if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & ~0o2755:
            raise ConfigError(
                f"{self.jail.real}: the directory {name} jailshim just made was replaced by "
                f"another (owner {st.st_uid}); someone who can write the jail is interfering. "
                "Nothing was left made; make the jail root-owned, then run again.",
            )
        _root_with_exactly(fd, 0o755, _ACCESS_ACL, _DEFAULT_ACL)
        return fd

    def _rename(self, dir_fd: int, where: str, src: str, dst: str) -> None:
        """Rename into place, never over something that appeared meanwhile."""
        try:
            rename_into_place(dir_fd, src, dst)
        except FileExistsError:
            raise ConfigError(
                f"{self.jail.real}/{where}/{dst} appeared while jailshim prepared the jail "
                "(someone who can write the jail is interfering); what was made is taken back. "
                "Make the jail root-owned, then run again.".replace("//", "/"),
            ) from None
        except FileNotFoundError:
            # the user who owns the directory moved jailshim's temporary entry away (a
            # non-directory moves between any two parents its user can write): was 71
            # "Preparing …/dev failed: ENOENT"
            raise ConfigError(
                f"{self.jail.real}/{where}/{src} was moved away while jailshim prepared the "
                "jail (someone who can write the jail is interfering); what was made is taken "
                "back. Make the directory root-owned, then run again.".replace("//", "/"),
            ) from None

    def _still_at(self, dir_fd: int, name: str, fd: int) -> None:
        """After a rename into place: ``name`` must be the directory ``fd`` holds."""
        st = lstat_at(dir_fd, name)
        if st is None or st.st_ino != os.fstat(fd).st_ino:
            raise ConfigError(
                f"{self.jail.real}/{name} was swapped while jailshim made it; someone who can "
                "write the jail is interfering. Make the jail root-owned, then run again.",
            )

    def close(self) -> None:
        for fd in self.opened:
            os.close(fd)
        self.opened.clear()

    def apply(self, plan: Plan) -> None:
        self.strategy, self.nodev = plan.strategy, plan.nodev
        old_umask = os.umask(0)  # modes are exactly as written: 0666 nodes, 0755 dirs
        try:
            if plan.make_dev_dir:
                self.make_dev_dir()
            if plan.mount_tmpfs:
                self.mount_tmpfs()
            for step in plan.steps:
                if step.action is not Action.NOTHING:
                    self.device(step)
            for sock in plan.sockets:
                if sock.action is Action.BIND:
                    self.socket(sock)
                    self.created.append(sock.facts.path)
                elif sock.facts.host_problem:
                    self.log.warning(_event(sock), path=sock.facts.path, outcome=sock.reason)
            for file in plan.files:
                if file.action is not FileAction.NOTHING:
                    self.jail_file(file)
                    self.created.append(file.facts.file.path)
                elif file.facts.host.problem and not file.facts.file.optional:
                    self.log.warning(
                        "jail_file", path=file.facts.file.path, detail=file.facts.host.problem
                    )
        finally:
            os.umask(old_umask)

    # -- dev/ itself -------------------------------------------------------------------------

    def make_dev_dir(self) -> None:
        """dev/ is made at a temporary name and gets its record inside before it is renamed
        into place: a kill at any point leaves either nothing or a name sweep_new_dev knows."""
        try:
            os.mkdir(state.NEW_DEV, 0o755, dir_fd=self.jail.fd)
        except FileExistsError:
            # reconcile took back every one of ours (sweep_new_dev): this one is someone
            # else's, left alone; a bare EEXIST (71) named neither it nor the fix (review1 R6)
            raise ConfigError(
                f"{self.jail.real}/{state.NEW_DEV} is in the way and jailshim did not make it; "
                "move it away and run again.",
                chroot=self.jail.path,
            ) from None
        fd = self._open_made_dir(state.NEW_DEV, self.jail.fd)
        record = Record(Kind.MKDIR, "dev", "", os.fstat(fd).st_ino, tmp=state.NEW_DEV)
        self.journal.dir_fd = fd
        try:
            index = self._intend(record)
        except state.JournalUnwritable:  # a full disk: nothing records it, so take it back
            os.rmdir(state.NEW_DEV, dir_fd=self.jail.fd)
            raise
        self._rename(self.jail.fd, "", state.NEW_DEV, "dev")
        self._still_at(self.jail.fd, "dev", fd)
        self.journal.update(index, done=True)
        self.dev_fd = fd
        self.log.info("dev.created", path=f"{self.jail.real}/dev")

    def mount_tmpfs(self) -> None:
        """The jail is read-only, so nothing can be recorded before this mount: the mount's
        source name (state.TMPFS_SOURCE) is its record, and its journal lives inside it."""
        start = time.monotonic()
        self._may_mount()
        try:
            mounts.mount_tmpfs(self.dev, state.TMPFS_SOURCE, _TMPFS_FLAGS, _TMPFS_DATA)
        except OSError as exc:
            self.log.error(
                "dev.tmpfs",
                strategy="tmpfs",
                errno=describe_errno(exc.errno or 0),
                elapsed_ms=_ms(start),
            )
            if exc.errno in _REFUSALS:
                where = f"{self.jail.real}/dev (read-only, so a tmpfs goes over it)"
                tried = [f"mounting a tmpfs ({describe_errno(exc.errno or 0)})"]
                raise NotPermitted(refusal_sentence(where, tried, self.powers, False)) from None
            raise
        # From here on dev/ is the new tmpfs's root, not the directory below it.
        self.dev_fd = self._open_dir("dev", self.jail.fd)
        self.journal.dir_fd, self.journal.records = self.dev_fd, []
        self._intend(Record(Kind.TMPFS, "dev", "", done=True))
        self.log.info(
            "dev.tmpfs",
            strategy="tmpfs",
            outcome="mounted",
            options=_TMPFS_DATA,
            elapsed_ms=_ms(start),
        )

    # -- entries -------------------------------------------------------------------------------

    def displace(
        self, dir_fd: int, where: str, name: str, found: str, *, what: str = "device"
    ) -> None:
        """Move a wrong entry aside (kept, never deleted: teardown puts it back)."""
        n = 0
        while lstat_at(dir_fd, state.aside_name(name, n)) is not None:
            n += 1
        aside = state.aside_name(name, n)
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        index = self._intend(Record(Kind.DISPLACED, name, where, st.st_ino, aside=aside))
        self._rename(dir_fd, where, name, aside)
        self.journal.update(index, done=True)
        self.log.warning(
            f"{what}.displaced", **{what: name}, found=found, moved_to=f"{where}/{aside}"
        )

    def _clear_temp(self, dir_fd: int, where: str, tmp: str) -> None:
        """A temporary name is free, or holds a leftover of ours (a node of an allowlisted
        device, or an empty file, made by root); anything else is not ours to remove."""
        st = lstat_at(dir_fd, tmp)
        if st is None:
            return
        leftover = st.st_uid == 0 and (
            (stat.S_ISCHR(st.st_mode) and st.st_rdev in _ALLOWED_RDEVS)
            or (stat.S_ISREG(st.st_mode) and st.st_size == 0)
        )
        if not leftover:
            raise ConfigError(
                f"{self.jail.real}/{where}/{tmp} is in the way and jailshim did not make it; "
                "move it away and run again.",
            )
        os.unlink(tmp, dir_fd=dir_fd)

    def _refusal(self, name: str, strategy: str, exc: OSError, start: float, outcome: str) -> int:
        """Log a step the kernel refused. A refusal (EPERM, EACCES) returns its errno so the
        ladder can go on; any other error is raised."""
        err = exc.errno or 0
        self.log.warning(
            "device",
            device=name,
            strategy=strategy,
            outcome=outcome,
            errno=describe_errno(err),
            elapsed_ms=_ms(start),
        )
        if err in _REFUSALS:
            return err
        raise exc

    def mknod(self, device: Device) -> int:
        """mknod at the temporary name, check it opens, rename into place. 0 or the refusal
        errno (then nothing is left and the record is gone)."""
        dev_fd, start, tmp = self.dev, time.monotonic(), state.temp_name(device.name)
        self._clear_temp(dev_fd, "dev", tmp)
        record = Record(Kind.MKNOD, device.name, rdev=device.rdev, tmp=tmp)
        index = self._intend(record)
        try:
            os.mknod(tmp, stat.S_IFCHR | device.mode, device.rdev, dir_fd=dev_fd)
        except OSError as exc:
            self.journal.drop(index)
            return self._refusal(device.name, "mknod", exc, start, "refused")
        self.journal.update(index, ino=os.stat(tmp, dir_fd=dev_fd, follow_symlinks=False).st_ino)
        try:
            # A nodev filesystem accepts mknod but refuses open(): catch it here, not an hour
            # later in the daemon.
            os.close(os.open(tmp, OPEN_TRIAL, dir_fd=dev_fd))
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: tty without a controlling terminal, fine
                os.unlink(tmp, dir_fd=dev_fd)
                self.journal.drop(index)
                return self._refusal(device.name, "mknod", exc, start, "does not open")
        self._rename(dev_fd, "dev", tmp, device.name)
        self.journal.update(index, done=True)
        self.log.info(
            "device",
            device=device.name,
            strategy="mknod",
            outcome="created",
            mode=f"{device.mode:04o}",
            elapsed_ms=_ms(start),
        )
        return 0

    def _placeholder(self, dir_fd: int, where: str, name: str) -> int:
        """An empty file at ``name``: made at the temporary name, recorded, renamed."""
        tmp = state.temp_name(name)
        self._clear_temp(dir_fd, where, tmp)
        index = self._intend(Record(Kind.PLACEHOLDER, name, where, tmp=tmp))
        os.close(os.open(tmp, _PLACEHOLDER, 0o444, dir_fd=dir_fd))
        ino = os.stat(tmp, dir_fd=dir_fd, follow_symlinks=False).st_ino
        self.journal.update(index, ino=ino)
        self._rename(dir_fd, where, tmp, name)
        self.journal.update(index, done=True)
        return index

    def _bind(self, source: int, dir_fd: int, where: str, name: str, rdev: int) -> bool:
        """Bind ``source`` onto the placeholder at ``name`` (made now unless one of jailshim's,
        bound in another mount namespace, is already there) and harden it. Returns whether
        the read-only remount worked. A refused bind leaves nothing and raises."""
        self._may_mount()
        st = lstat_at(dir_fd, name)
        if st is not None and not any(
            r.kind is Kind.PLACEHOLDER
            and r.done
            and (r.where, r.name, r.ino) == (where, name, st.st_ino)
            for r in self.journal.records
        ):
            raise ConfigError(
                f"{self.jail.real}/{where}/{name} changed while jailshim prepared the jail; "
                "run again."
            )
        placeholder = -1 if st is not None else self._placeholder(dir_fd, where, name)
        target = os.open(name, O_PATH_NOFOLLOW, dir_fd=dir_fd)
        try:
            ino = os.fstat(target).st_ino
            index = self._intend(Record(Kind.BIND, name, where, ino, rdev))
            try:
                mounts.bind(source, target)
            except OSError:
                self.journal.drop(index)
                if placeholder >= 0:
                    os.unlink(name, dir_fd=dir_fd)
                    self.journal.drop(placeholder)
                raise
        finally:
            os.close(target)
        hardened = self._harden(dir_fd, name)
        self.journal.update(index, done=True)  # only now: an unhardened bind is unfinished
        return hardened

    def _may_mount(self) -> None:
        if self.mounts_refused:
            raise NotPermitted(self.mounts_refused)

    def _harden(self, dir_fd: int, name: str) -> bool:
        """Remount the bind read-only, nosuid, noexec; a refusal is only a warning."""
        fd = os.open(name, O_PATH_NOFOLLOW, dir_fd=dir_fd)  # now the bind's root
        try:
            mounts.remount_bind(fd, _BIND_HARDENING)
            return True
        except OSError as exc:
            self.log.warning(
                "device.remount",
                device=name,
                errno=describe_errno(exc.errno or 0),
                detail="the bind stays as the host mounted it",
            )
            return False
        finally:
            os.close(fd)

    def _host_node(self, device: Device) -> int:
        fd = os.open(device.host_path, O_PATH_NOFOLLOW)
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != device.rdev:
            os.close(fd)
            raise ConfigError(
                f"The host's {device.host_path} is not the {device.name} device {device.numbers}; "
                "jailshim binds only the real node. Fix the host's /dev first."
            )
        return fd

    def bind(self, device: Device) -> int:
        """Bind the host's node onto a placeholder file. 0 or the refusal errno."""
        start, name = time.monotonic(), device.name
        source = self._host_node(device)
        try:
            hardened = self._bind(source, self.dev, "dev", name, device.rdev)
        except OSError as exc:
            return self._refusal(name, "bind", exc, start, "refused")
        finally:
            os.close(source)
        self.log.info(
            "device",
            device=name,
            strategy="bind",
            outcome="bound",
            source=device.host_path,
            read_only=hardened,
            elapsed_ms=_ms(start),
        )
        return 0

    def device(self, step: DeviceStep) -> None:
        if step.displaces:
            self.displace(self.dev, "dev", step.device.name, step.found.describe())
        tried: list[str] = []
        if step.action is Action.MKNOD:
            err = self.mknod(step.device)
            if not err:
                self.created.append(step.device.name)
                return
            tried.append(f"mknod ({describe_errno(err)})")
            if self.strategy is not Strategy.AUTO:
                self._refused(step.device, tried)
        err = self.bind(step.device)
        if err:
            tried.append(f"bind mount ({describe_errno(err)})")
            self._refused(step.device, tried)
        self.created.append(step.device.name)

    def _refused(self, device: Device, tried: list[str]) -> NoReturn:
        where = f"{self.jail.real}/dev/{device.name}"
        raise NotPermitted(
            refusal_sentence(where, tried, self.powers, self.nodev), device=device.name
        )

    def socket(self, step: SocketStep) -> None:
        """Bind the host's socket (log, notify) at the same path in the jail, making dirs on
        the way."""
        start, path = time.monotonic(), step.facts.path
        parent, name = os.path.split(path)
        where = parent.strip("/")
        dir_fd = self._make_dirs(where)
        if not step.facts.entry.placeholder and lstat_at(dir_fd, name) is not None:
            self.displace(dir_fd, where, name, step.reason)
        # Outside the jail root's symlinks are followed (systemd's /dev/log points into
        # /run/systemd/journal), another user's are not (survey.open_host_path): realpath()
        # followed the daemon's user's link to a socket only root could reach (review2).
        from jailshim.jail.survey import open_host_path

        source, host = open_host_path(path)
        try:
            if not stat.S_ISSOCK(os.fstat(source).st_mode):
                owner = "the service manager's socket" if step.facts.notify else "the log daemon"
                raise ConfigError(f"The host's {path} stopped being a socket; start {owner}.")
            self._bind_host(source, host, dir_fd, where, name)
        finally:
            os.close(source)
        self.log.info(
            _event(step),
            path=path,
            source=host,
            strategy="bind",
            outcome="bound",
            elapsed_ms=_ms(start),
        )

    def _bind_host(self, source: int, host: str, dir_fd: int, where: str, name: str) -> bool:
        """_bind of a host socket or file. Replaced on the host after it was opened (syslog
        restarted, resolv.conf renamed into place), the source is unlinked and mount(2)
        answers ENOENT: that is the host changing under prepare, not an OS error (it read
        "mount /proc/self/fd/12 on /proc/self/fd/13: No such file or directory", exit 71)."""
        try:
            return self._bind(source, dir_fd, where, name, 0)
        except FileNotFoundError:
            if os.fstat(source).st_nlink:  # the placeholder, unlinked by a user of the jail
                raise ConfigError(
                    f"{self.jail.real}/{where}/{name} changed while jailshim prepared the jail "
                    "(someone who can write the jail is interfering); run again.".replace("//", "/")
                ) from None
            raise ConfigError(
                f"The host's {host} changed while jailshim prepared the jail; run again."
            ) from None

    def _make_dirs(self, where: str) -> int:
        """An fd on the jail directory ``where``, made on the way where missing (root's, 0755,
        each recorded first), never through a symlink, and proven to stay in the jail: a
        directory on the way that a user other than root could move out is refused (78)
        before anything is made (the directories made here are root's alone)."""
        dir_fd, missing = self.jail.walk(where, inside=True)
        self.opened.append(dir_fd)
        made = where[: len(where) - len("/".join(missing))].strip("/")
        for part in missing:
            index = self._intend(Record(Kind.MKDIR, part, made))
            try:
                os.mkdir(part, 0o755, dir_fd=dir_fd)
            except FileExistsError:
                self.journal.drop(index)  # not ours: its undo must not remove it
                raise ConfigError(
                    f"{self.jail.real}/{made}/{part} appeared while jailshim prepared the jail "
                    "(someone who can write the jail is interfering); what was made is taken "
                    "back. Make the jail root-owned, then run again.".replace("//", "/"),
                ) from None
            dir_fd = self._open_made_dir(part, dir_fd)
            self.journal.update(index, ino=os.fstat(dir_fd).st_ino, done=True)
            made = f"{made}/{part}".strip("/")
        return dir_fd

    # -- jail files ----------------------------------------------------------------------------

    def jail_file(self, step: FileStep) -> None:
        """Place the host's file at the same path in the jail: a copy (written at a temporary
        name, fsynced, renamed into place) or a read-only bind."""
        start, facts = time.monotonic(), step.facts
        where, name, host = facts.where, facts.name, facts.host
        dir_fd = self._make_dirs(where)
        if step.displaces:
            self.displace(dir_fd, where, name, facts.entry.describe(), what="jail_file")
        if step.action is FileAction.BIND:
            source = os.open(host.real, O_PATH_NOFOLLOW)
            try:
                st = os.fstat(source)
                if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != host.dev_ino:
                    raise ConfigError(
                        f"The host's {host.real} changed while jailshim prepared the jail; "
                        "run again."
                    )
                hardened = self._bind_host(source, host.real, dir_fd, where, name)
            finally:
                os.close(source)
            outcome: dict[str, Any] = {"outcome": "bound", "read_only": hardened}
        else:
            stale = facts.entry.ino if step.action is FileAction.REFRESH else 0
            self._copy(dir_fd, where, name, host.content, mode=host.mode & 0o644, stale=stale)
            outcome = {"outcome": "refreshed" if stale else "copied", "bytes": len(host.content)}
        self.log.info(
            "jail_file",
            path=facts.file.path,
            source=host.real,
            strategy=str(step.action),
            elapsed_ms=_ms(start),
            **outcome,
        )

    def _copy(
        self, dir_fd: int, where: str, name: str, content: bytes, *, mode: int, stale: int
    ) -> None:
        """Write ``content`` at the temporary name, fsync, then rename it into place; with
        ``stale`` (the inode of jailshim's own older copy) exchange the two atomically, so
        the daemon always reads a whole file, and only then remove the old one."""
        tmp = state.temp_name(name)
        self._clear_temp(dir_fd, where, tmp)
        index = self._intend(Record(Kind.COPY, name, where, tmp=tmp, replaces=stale))
        # Made with no permission bits at all, then root:root with its final bits before a
        # byte is written: created with them, in a setgid directory of the daemon's user it
        # took that user's group, and an fd the user opened before the chown read the secret
        # after it (permissions are checked at open only). Mode 0 also masks a default ACL.
        try:
            unnamed = _unnamed_file(dir_fd)
            fd = os.open(tmp, _PLACEHOLDER, 0, dir_fd=dir_fd) if unnamed is None else unnamed
            try:
                _root_with_exactly(fd, mode, _ACCESS_ACL)
                self.journal.update(index, ino=os.fstat(fd).st_ino)
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                if unnamed is not None:
                    # A name only now, whole: the daemon's user may own this directory and a
                    # named file it can move to any directory of its own, outside the jail
                    # too, while root writes on through the fd (root wrote the host file's
                    # bytes outside the jail). Unnamed, it can be neither opened nor moved.
                    os.link(f"/proc/self/fd/{fd}", tmp, dst_dir_fd=dir_fd, follow_symlinks=True)
            finally:
                os.close(fd)
        except OSError as exc:
            if not state.disk_full(exc):
                raise
            # said as "Preparing …/dev failed", which named neither the file nor the cause
            raise SystemRefused(
                f"{self.jail.real}/{where}/{name} cannot be written: "
                f"{state.disk_full(exc)} ({errno.errorcode[exc.errno or 0]}); what this run "
                "made is taken back: free space on that filesystem, then run again.".replace(
                    "//", "/"
                ),
                errno=exc.errno,
            ) from None
        if not stale:
            self._rename(dir_fd, where, tmp, name)
            self.journal.update(index, done=True)
            return
        old = next(
            i
            for i, r in enumerate(self.journal.records)
            if r.kind is Kind.COPY and r.done and (r.where, r.name, r.ino) == (where, name, stale)
        )
        exchange(dir_fd, tmp, name)
        back = lstat_at(dir_fd, tmp)
        if back is None or back.st_ino != stale or back.st_uid != 0:
            exchange(dir_fd, tmp, name)  # not ours that was there: put it back, take ours back
            raise ConfigError(
                f"{self.jail.real}/{where}/{name} was swapped while jailshim refreshed it; "
                "someone who can write the jail is interfering. Make the jail root-owned, "
                "then run again.",
            )
        os.unlink(tmp, dir_fd=dir_fd)
        self.journal.complete_replacing(index, old)
