"""One lock per jail: prepare and teardown never run at once on the same jail.

Two flocks, both dropped by the kernel when the holder dies (a SIGKILLed prepare never leaves a
stale lock):
- root's own lock file, /run/jailshim/locks/DEV-INO (0600 in a 0700 directory): nobody but
  root can open it, so no user can hold it to stop a daemon from starting;
- the jail directory itself: an inode lock, so it holds across mount namespaces (two
  containers sharing a volume, each with its own /run) and across the tmpfs over dev/. Any
  user who can read the jail can take this one too, so a hold by a process that is not root's
  is ignored, with a warning: that user gets no say in root's start-up. So is a hold whose
  locker is gone (its child keeps the lock), where every process is seen.
Without a lock, eight prepares at once stacked tmpfs mounts eight deep and one's rollback deleted
the node another had just made, while that other one exited 0.

Root's lock file is removed by its holder just before it lets go (322 of them were left in
/run/jailshim/locks after one afternoon, one per jail ever prepared). A process that was
waiting on the removed file then holds a lock on a name no one else sees: so after every
flock the fd must still be the file at the name (device and inode), else it opens the name
again and waits on that. Only the holder removes, so the file at the name never changes under
a holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from types import TracebackType

from jailshim.errors import SystemRefused

__all__ = ["JailLock", "LockTimeout"]

_POLL = 0.02
_LOCK_DIR = "/run/jailshim/locks"


class LockTimeout(SystemRefused):
    """Another jailshim kept the jail's lock for the whole budget."""


def _holder(fd: int) -> tuple[int, int | None]:
    """(pid, uid) of the process holding an flock on ``fd``'s inode, from /proc/locks; pid 0
    and uid None when that cannot be seen (another PID namespace); uid -1 when /proc/locks
    names a process that no longer exists, the locker's child keeping its open file."""
    st = os.fstat(fd)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted:
                    pid = int(fields[4])
                    try:
                        status = open(f"/proc/{pid}/status", encoding="ascii")  # noqa: SIM115
                    except FileNotFoundError:
                        return (pid, -1) if pid else (0, None)
                    with status:
                        for row in status:
                            if row.startswith("Uid:"):
                                # the real uid first: a user's locker that exec()s a setuid
                                # program waiting for ever (su at its password prompt) has
                                # euid 0 and was taken for root's; root's prepare waited out
                                # --timeout at every start (review2)
                                real, effective = (int(u) for u in row.split()[1:3])
                                return pid, real or effective
    except (OSError, ValueError):
        pass
    return 0, None


def _not_roots(pid: int, uid: int | None) -> bool:
    """Whether the jail directory's lock holder is provably not root's jailshim: another
    user's process, or a locker gone where every process is seen (the initial PID namespace
    prints the locker's PID even after it exits: a user flocked, forked and exited, and the
    child kept the lock; root waited out its whole --timeout, review1 R4). Root's own runs
    are serialised by root's lock file first, so none of them is waited on here. Only where
    other namespaces' processes are hidden (pid 0) is an unknown holder taken for root's."""
    if uid == -1:
        from jailshim.jail.namespaces import in_initial_pid_namespace

        return in_initial_pid_namespace()
    return uid not in (None, 0)


def _root_lock_path(st: os.stat_result) -> str | None:
    """Root's lock file for the jail with identity ``st``; None where /run cannot take it."""
    try:
        os.makedirs(_LOCK_DIR, mode=0o700, exist_ok=True)
        dir_st = os.stat(_LOCK_DIR, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISDIR(dir_st.st_mode) or dir_st.st_uid != 0 or dir_st.st_mode & 0o077:
        return None  # not root's own: do not trust it
    return f"{_LOCK_DIR}/{st.st_dev}-{st.st_ino}"


def _open_lock_file(path: str) -> int | None:
    try:
        return os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600
        )
    except OSError:
        return None


def _is_at(fd: int, path: str) -> bool:
    """Whether ``fd`` is still the file at ``path`` (its holder removes it when done)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


class JailLock:
    """Both locks on the jail, waited for up to ``timeout`` seconds. ``ignored`` names a
    non-root holder of the jail directory's lock, when there was one."""

    def __init__(self, jail_fd: int, where: str, timeout: float) -> None:
        self.fds: list[int] = []
        self.ignored = ""
        self._root_file = ""  # root's lock file, once held (removed by ``release``)
        deadline = time.monotonic() + timeout
        try:
            path = _root_lock_path(os.fstat(jail_fd))
            while path is not None and (root_fd := _open_lock_file(path)) is not None:
                self.fds.append(root_fd)
                self._wait(root_fd, deadline, where, timeout)
                if _is_at(root_fd, path):
                    self._root_file = path
                    break
                # its holder removed it as it let go: wait on the file at the name now
                self.fds.remove(root_fd)
                os.close(root_fd)
            # flock needs a real open file, not the O_PATH handle: reopen the same inode.
            dir_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=jail_fd)
            self.fds.append(dir_fd)
            self._wait(dir_fd, deadline, where, timeout, only_root_counts=True)
        except BaseException:
            self.release()
            raise

    def _wait(
        self, fd: int, deadline: float, where: str, timeout: float, only_root_counts: bool = False
    ) -> None:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pid, uid = _holder(fd)
                if only_root_counts and _not_roots(pid, uid):
                    self.ignored = (
                        f"process {pid} (uid {uid})"
                        if uid != -1
                        else f"process {pid}, gone (a process it started keeps its lock)"
                    )
                    return
                if time.monotonic() >= deadline:
                    holder = f"process {pid}" if pid else "another process"
                    raise LockTimeout(
                        f"{holder} has held the lock on {where} for {timeout:g} s (another "
                        "jailshim prepare or teardown); wait for it to finish, or raise --timeout."
                    ) from None
                time.sleep(_POLL)

    def release(self) -> None:
        if self._root_file and self.fds:  # still held: remove it before letting go
            with contextlib.suppress(OSError):
                if _is_at(self.fds[0], self._root_file):
                    os.unlink(self._root_file)
        self._root_file = ""
        for fd in self.fds:  # closing the only fd drops its flock
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()

    def __enter__(self) -> JailLock:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
