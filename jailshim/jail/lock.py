"""One lock per jail: prepare and teardown never run at once on the same jail.

flock(2) on the jail directory itself: the lock belongs to the inode, so it holds across mount
namespaces (two containers sharing a volume) and across the tmpfs jailshim may mount over dev/,
and the kernel drops it when the holder dies (a SIGKILLed prepare never leaves a stale lock).
Without it, eight prepares at once stacked tmpfs mounts eight deep and one's rollback deleted
the node another had just made, while that other one exited 0.
"""

from __future__ import annotations

import fcntl
import os
import time
from types import TracebackType

from jailshim.errors import PrepareOSError

__all__ = ["JailLock", "LockTimeout"]

_POLL = 0.02


class LockTimeout(PrepareOSError):
    """Another jailshim kept the jail's lock for the whole budget."""


def _holder(fd: int) -> str:
    """Who holds the flock on ``fd``'s inode, from /proc/locks (for the sentence only)."""
    st = os.fstat(fd)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted:
                    return f"process {fields[4]}"
    except OSError:
        pass
    return "another process"


class JailLock:
    """An exclusive flock on the jail directory, waited for up to ``timeout`` seconds."""

    def __init__(self, jail_fd: int, where: str, timeout: float) -> None:
        # flock needs a real open file, not the O_PATH handle: reopen the same inode via ".".
        self.fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=jail_fd)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(self.fd)
                    self.release()
                    raise LockTimeout(
                        f"{holder} has held the lock on {where} for {timeout:g} s (another "
                        "jailshim prepare or teardown); wait for it to finish, or raise --timeout."
                    ) from None
                time.sleep(_POLL)
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only fd drops the flock
            self.fd = -1

    def __enter__(self) -> JailLock:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
