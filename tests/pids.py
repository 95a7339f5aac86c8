"""Signalling what a test recorded through pidfds, never by a PID read earlier.

A PID read from /proc, a pid file or a child list names a process only until that process is
reaped (by its parent, a subreaper or PID 1); the number can then go to any new process of the
machine, and a clean-up SIGKILL by number would hit it (issue 32: "SIGKILLs sent to PIDs recorded
before reaping"). A pidfd names one process for its whole life: taken while the process is known
to be the one meant, a signal sent through it later reaches that process or nothing.

``pin(pid, *checks)`` takes the pidfd first and checks /proc afterwards: facts read from
/proc/PID after the pin belong to the pinned process if it has not ended since (else the number
may already be another's), so a pin whose process ended meanwhile is dropped.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

Check = Callable[[int], bool]


def ended(pidfd: int, timeout: float = 0.0) -> bool:
    """The process of ``pidfd`` has ended (a pidfd polls readable then), waiting ``timeout`` s."""
    ready, _, _ = select.select([pidfd], [], [], timeout)
    return bool(ready)


def pin(pid: int, *checks: Check) -> int | None:
    """A pidfd on the process now numbered ``pid`` if every check holds for it; else None."""
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, ValueError, OSError):
        return None
    try:
        ours = all(check(pid) for check in checks)
    except (OSError, ValueError, IndexError):
        ours = False
    if ours and not ended(pidfd):
        return pidfd
    os.close(pidfd)
    return None


def send(pidfd: int, sig: int) -> None:
    """``sig`` to the pinned process; nothing if it has ended (never another process)."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, sig)


def kill(pidfds: Iterable[int | None], sig: int = signal.SIGKILL) -> None:
    """``sig`` to each pinned process, then close the pidfds (None entries are skipped)."""
    for pidfd in pidfds:
        if pidfd is not None:
            send(pidfd, sig)
            os.close(pidfd)


def close(pidfds: Iterable[int | None]) -> None:
    for pidfd in pidfds:
        if pidfd is not None:
            os.close(pidfd)


# ---- checks: who the process is, read after the pin ----------------------------------------


def _stat_fields(pid: int) -> list[str]:
    # comm (field 2) may hold spaces and parentheses: split after its closing one
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].decode().split()


def parent(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def child_of(ppid: int) -> Check:
    """The process's parent is ``ppid`` (a child list read earlier may be stale)."""
    return lambda pid: parent(pid) == ppid


def session_of(sid: int) -> Check:
    return lambda pid: os.getsid(pid) == sid


def cmdline_has(marker: str | bytes) -> Check:
    """``marker`` (e.g. a path of the test's tmp_path) appears in the process's command line."""
    needle = marker.encode() if isinstance(marker, str) else marker
    return lambda pid: needle in Path(f"/proc/{pid}/cmdline").read_bytes()


def exe_is(name: str) -> Check:
    """The process runs an executable file called ``name``."""
    return lambda pid: Path(f"/proc/{pid}/exe").resolve().name == name


def cwd(pid: int) -> Path:
    return Path(f"/proc/{pid}/cwd").resolve()


def comm_is(name: str) -> Check:
    return lambda pid: Path(f"/proc/{pid}/comm").read_text().strip() == name


def mark() -> int:
    """Now, in /proc/PID/stat's start-time unit (clock ticks since boot): see ``started_since``."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def started_since(ticks: int) -> Check:
    """The process started at or after ``mark()`` returned ``ticks`` (a reused number taken by a
    process older than the test is not the test's)."""
    return lambda pid: int(_stat_fields(pid)[19]) >= ticks


# ---- families ------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [
                    int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
    return found


def pin_children(pidfd_of_parent: int, ppid: int) -> list[int]:
    """Pidfds on the children of the process pinned by ``pidfd_of_parent`` (numbered ``ppid``),
    each checked to be a child of ``ppid`` after its pin, and the parent checked alive after
    that: else ``ppid`` may have named another process while its children were read."""
    pinned = [fd for c in children(ppid) if (fd := pin(c, child_of(ppid))) is not None]
    if ended(pidfd_of_parent):
        close(pinned)
        return []
    return pinned


def pin_family(pid: int) -> list[int]:
    """Pidfds on ``pid`` (the caller knows the number is its process's, e.g. an unreaped Popen
    child) and on every descendant below it now, each pinned as the child of a pinned parent.
    The deepest come last."""
    top = pin(pid)
    if top is None:
        return []
    found, todo = [top], [(top, pid)]
    while todo:
        pidfd, ppid = todo.pop(0)
        for fd in pin_children(pidfd, ppid):
            found.append(fd)
            todo.append((fd, _pid_of(fd)))
    return found


def pin_descendants(pid: int) -> list[int]:
    """``pin_family`` without ``pid`` itself."""
    family = pin_family(pid)
    close(family[:1])
    return family[1:]


def _pid_of(pidfd: int) -> int:
    """The PID a pidfd names (its fdinfo's "Pid:" line; -1 once the process was reaped)."""
    for line in Path(f"/proc/self/fdinfo/{pidfd}").read_text().splitlines():
        if line.startswith("Pid:"):
            return int(line.split()[1])
    return -1


@contextlib.contextmanager
def killed_afterwards(pidfds: list[int]) -> Iterator[list[int]]:
    """Yields a list to put pidfds in; on the way out SIGKILL goes to each, and they are closed."""
    try:
        yield pidfds
    finally:
        kill(pidfds)
