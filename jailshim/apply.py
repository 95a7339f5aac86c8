"""Carry out a Plan: the only module that calls mknod, mount and umount on a jail.

Every step pushes its own undo; if a later step fails, the undos run in reverse, so a failed
prepare leaves the jail as it found it and never hands a half-prepared jail to a daemon.
A step the plan expected to work but the kernel refuses (an LSM, a seccomp filter, a nodev
that statvfs did not show) falls down the ladder: mknod -> bind.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import time
from collections.abc import Callable
from typing import Any, NoReturn

from jailshim import state
from jailshim.devices import Device
from jailshim.errors import ConfigError, JailshimError, NotPermitted, PrepareOSError
from jailshim.jail import mounts
from jailshim.jail.powers import Powers
from jailshim.jail.safepath import O_PATH_NOFOLLOW, OPEN_TRIAL, Jail
from jailshim.plan import (
    Action,
    DeviceStep,
    Plan,
    SocketStep,
    Strategy,
    describe_errno,
    refusal_sentence,
)
from jailshim.state import Kind, Record

__all__ = ["Applied", "apply_plan"]

_TMPFS_FLAGS = mounts.MS_NODEV | mounts.MS_NOSUID | mounts.MS_NOEXEC
_TMPFS_DATA = "mode=0755,size=256k,nr_inodes=64"
_BIND_HARDENING = mounts.MS_RDONLY | mounts.MS_NOSUID | mounts.MS_NOEXEC
_REFUSALS = (errno.EPERM, errno.EACCES)


class Applied:
    """What one apply run did: the records to keep and the dev/ fd it ended with.

    ``dev_fd`` is a new fd when apply created dev/ or mounted over it; the caller closes it.
    """

    def __init__(self, dev_fd: int | None, records: list[Record], created: list[str]) -> None:
        self.dev_fd = dev_fd
        self.records = records
        self.created = created


def _rmdir(name: str, dir_fd: int) -> None:
    os.rmdir(name, dir_fd=dir_fd)


_PLACEHOLDER = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _bind_onto_placeholder(source: int, dir_fd: int, name: str) -> int:
    """Create an empty file at ``name`` (never through a symlink, never over an existing entry)
    and bind ``source`` onto it. Returns the placeholder's inode; on failure removes it."""
    os.close(os.open(name, _PLACEHOLDER, 0o444, dir_fd=dir_fd))
    target = os.open(name, O_PATH_NOFOLLOW, dir_fd=dir_fd)
    try:
        ino = os.fstat(target).st_ino
        mounts.bind(source, target)
        return ino
    except OSError:
        os.unlink(name, dir_fd=dir_fd)
        raise
    finally:
        os.close(target)


def _unbind(dir_fd: int, name: str) -> None:
    mounts.unmount_at(dir_fd, name)
    os.unlink(name, dir_fd=dir_fd)


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 3)


class _Run:
    def __init__(
        self, jail: Jail, dev_fd: int | None, plan: Plan, powers: Powers, log: Any
    ) -> None:
        self.jail = jail
        self.strategy = plan.strategy
        self.powers = powers
        self.nodev = plan.nodev
        self.dev_fd = dev_fd
        self.log = log
        self.undo: list[tuple[str, Callable[[], None]]] = []
        self.records: list[Record] = []
        self.created: list[str] = []
        self.fds: list[int] = []  # fds the undo steps may still need; closed when apply ends

    @property
    def dev(self) -> int:
        """The dev/ fd; device steps only run once dev/ exists."""
        if self.dev_fd is None:
            raise RuntimeError("dev/ is not open")
        return self.dev_fd

    # -- dev/ itself -------------------------------------------------------------------------

    def make_dev_dir(self) -> None:
        os.mkdir("dev", 0o755, dir_fd=self.jail.fd)
        self.undo.append(("rmdir dev", lambda: os.rmdir("dev", dir_fd=self.jail.fd)))
        self.records.append(Record(Kind.MKDIR, "dev", where=""))
        self.dev_fd = self.jail.open_dir("dev")
        self.log.info("dev.created", path=f"{self.jail.real}/dev")

    def mount_tmpfs(self) -> None:
        start = time.monotonic()
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
        # From here on dev/ is the new tmpfs's root, not the directory below it. The caller
        # still owns (and closes) the fd it passed in.
        self.dev_fd = self.jail.open_dir("dev")
        dev_fd = self.dev
        self.undo.append(("unmount tmpfs", lambda: mounts.unmount(dev_fd)))
        self.records.append(Record(Kind.TMPFS, "dev"))
        self.log.info(
            "dev.tmpfs",
            strategy="tmpfs",
            outcome="mounted",
            options=_TMPFS_DATA,
            elapsed_ms=_ms(start),
        )

    # -- one device -----------------------------------------------------------------------------

    def displace(
        self, name: str, found: str, dir_fd: int | None = None, where: str = "dev"
    ) -> None:
        """Move a wrong entry aside (kept, never deleted: teardown puts it back)."""
        dev_fd, n = (self.dev if dir_fd is None else dir_fd), 0
        while True:
            aside = f".jailshim-displaced-{name}" + (f".{n}" if n else "")
            try:
                os.stat(aside, dir_fd=dev_fd, follow_symlinks=False)
                n += 1
            except FileNotFoundError:
                break
        os.rename(name, aside, src_dir_fd=dev_fd, dst_dir_fd=dev_fd)
        self.undo.append(
            (
                f"restore {name}",
                lambda: os.rename(aside, name, src_dir_fd=dev_fd, dst_dir_fd=dev_fd),
            )
        )
        self.records.append(Record(Kind.DISPLACED, name, aside=aside, where=where))
        self.log.warning("device.displaced", device=name, found=found, moved_to=f"{where}/{aside}")

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
        """mknod at a temporary name, check it opens, rename into place. 0 or the refusal errno."""
        dev_fd, start = self.dev, time.monotonic()
        tmp = f".jailshim-new-{device.name}.{os.getpid()}"
        try:
            os.mknod(tmp, stat.S_IFCHR | device.mode, device.rdev, dir_fd=dev_fd)
        except OSError as exc:
            return self._refusal(device.name, "mknod", exc, start, "refused")
        try:
            # A nodev filesystem accepts mknod but refuses open(): catch it here, not an hour
            # later in the daemon.
            os.close(os.open(tmp, OPEN_TRIAL, dir_fd=dev_fd))
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: tty without a controlling terminal, fine
                os.unlink(tmp, dir_fd=dev_fd)
                return self._refusal(device.name, "mknod", exc, start, "does not open")
        os.rename(tmp, device.name, src_dir_fd=dev_fd, dst_dir_fd=dev_fd)
        st = os.stat(device.name, dir_fd=dev_fd, follow_symlinks=False)
        self.undo.append((f"remove {device.name}", lambda: os.unlink(device.name, dir_fd=dev_fd)))
        self.records.append(Record(Kind.MKNOD, device.name, ino=st.st_ino, rdev=st.st_rdev))
        self.log.info(
            "device",
            device=device.name,
            strategy="mknod",
            outcome="created",
            mode=f"{device.mode:04o}",
            elapsed_ms=_ms(start),
        )
        return 0

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
        """Bind the host's node onto an empty placeholder file. 0 or the refusal errno."""
        dev_fd, start, name = self.dev, time.monotonic(), device.name
        source = self._host_node(device)
        try:
            placeholder_ino = _bind_onto_placeholder(source, dev_fd, name)
        except OSError as exc:
            return self._refusal(name, "bind", exc, start, "refused")
        finally:
            os.close(source)
        self.undo.append((f"unbind {name}", functools.partial(_unbind, dev_fd, name)))
        self.records.append(Record(Kind.BIND, name, ino=placeholder_ino, rdev=device.rdev))
        hardened = self._harden(name)
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

    def _harden(self, name: str) -> bool:
        """Remount the bind read-only, nosuid, noexec; a refusal is only a warning."""
        fd = os.open(name, O_PATH_NOFOLLOW, dir_fd=self.dev)  # now the bind's root
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

    def device(self, step: DeviceStep) -> None:
        if step.displaces:
            self.displace(step.device.name, step.found.describe())
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
        """Bind the host's log socket at the same path in the jail, making dirs on the way."""
        start, path = time.monotonic(), step.facts.path
        parent, name = os.path.split(path)
        where = parent.strip("/")
        dir_fd, missing = self.jail.walk(where)
        self.fds.append(dir_fd)
        made = where[: len(where) - len("/".join(missing))].strip("/")
        for part in missing:
            os.mkdir(part, 0o755, dir_fd=dir_fd)
            self.undo.append((f"rmdir {made}/{part}", functools.partial(_rmdir, part, dir_fd)))
            self.records.append(Record(Kind.MKDIR, part, where=made))
            dir_fd = os.open(
                part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
            )
            self.fds.append(dir_fd)
            made = f"{made}/{part}".strip("/")
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            self.displace(name, step.reason, dir_fd, where)
        except FileNotFoundError:
            pass
        source = os.open(path, O_PATH_NOFOLLOW)
        try:
            if not stat.S_ISSOCK(os.fstat(source).st_mode):
                raise ConfigError(
                    f"The host's {path} stopped being a socket; start the log daemon."
                )
            ino = _bind_onto_placeholder(source, dir_fd, name)
        finally:
            os.close(source)
        self.undo.append((f"unbind {path}", functools.partial(_unbind, dir_fd, name)))
        self.records.append(Record(Kind.SOCKET, name, ino=ino, where=where))
        self.log.info(
            "log_socket", path=path, strategy="bind", outcome="bound", elapsed_ms=_ms(start)
        )

    def rollback(self) -> None:
        for what, action in reversed(self.undo):
            try:
                action()
                self.log.info("rollback", step=what)
            except OSError as exc:
                self.log.error("rollback", step=what, errno=describe_errno(exc.errno or 0))


def apply_plan(jail: Jail, dev_fd: int | None, plan: Plan, powers: Powers, log: Any) -> Applied:
    """Carry out ``plan``; on any failure undo this run's steps and raise a JailshimError."""
    run = _Run(jail, dev_fd, plan, powers, log)
    applied = False
    old_umask = os.umask(0)  # modes are exactly as written: 0666 nodes, 0755 dirs
    try:
        if plan.make_dev_dir:
            run.make_dev_dir()
        if plan.mount_tmpfs:
            run.mount_tmpfs()
        for step in plan.steps:
            if step.action is not Action.NOTHING:
                run.device(step)
        for sock in plan.sockets:
            if sock.action is Action.BIND:
                run.socket(sock)
                run.created.append(sock.facts.path)
            elif sock.facts.host_problem:
                log.warning("log_socket", path=sock.facts.path, outcome=sock.reason)
        if run.records:
            state.save(run.dev, state.load(run.dev, f"{jail.real}/dev") + run.records)
    except JailshimError:
        run.rollback()
        raise
    except OSError as exc:
        run.rollback()
        raise PrepareOSError(
            f"Preparing {jail.real}/dev failed: {exc.strerror or exc} "
            f"({describe_errno(exc.errno or 0)}); nothing was left half-made.",
            errno=exc.errno,
        ) from None
    except BaseException:  # SIGINT/SIGTERM (see cli.Interrupted) or a bug: still undo
        run.rollback()
        raise
    else:
        applied = True
        return Applied(run.dev_fd, run.records, run.created)
    finally:
        os.umask(old_umask)
        for fd in run.fds:
            os.close(fd)
        if not applied and run.dev_fd not in (dev_fd, None):
            os.close(run.dev_fd)  # a dev/ fd of our own, and no Applied to hand it back in
