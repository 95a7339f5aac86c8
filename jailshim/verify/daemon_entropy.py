"""The entropy facts of a running daemon, read where it runs (issue 23): its seccomp filters'
answer to getrandom(), OpenSSL's marker in its IPC namespace, the kernel release it sees.

doctor used to measure getrandom() and the marker in its own probe, and so said "✓ getrandom()
usable" of a daemon whose filter denied it. These are the daemon's own facts; each says what it
could not learn instead of guessing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from typing import NamedTuple

from jailshim.verify.seccomp import getrandom_answer, seccomp_status
from jailshim.verify.verdict import Getrandom

__all__ = ["DaemonEntropy", "daemon_entropy", "kernel_seen", "marker_in", "read_filters"]

UNAME26 = 0x0020000  # personality flag of `setarch --uname-2.6`: uname() says 2.6.<60+minor>
OPENSSL_SHM_KEY = 114  # OPENSSL_RAND_SEED_DEVRANDOM_SHM_ID, rand_unix.c
CLONE_NEWIPC = 0x08000000
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_SECCOMP_GET_FILTER = 0x420C
PR_SET_PDEATHSIG = 1
_MAX_FILTERS = 64  # a process with more is hostile: each is read as root


class DaemonEntropy(NamedTuple):
    getrandom: Getrandom
    getrandom_why: str
    seccomp_filters: int
    marker: bool | None
    kernel: tuple[int, int] | None


def _release(text: str) -> tuple[int, int] | None:
    major, _, rest = text.partition(".")
    minor = "".join(c for c in rest.split(".")[0] if c.isdigit())
    return (int(major), int(minor or 0)) if major.isdigit() else None


def kernel_seen(pid: int) -> tuple[int, int] | None:
    """The kernel release ``pid``'s uname() reports: the real one, or 2.6 under UNAME26."""
    try:
        with open(f"/proc/{pid}/personality") as f:
            personality = int(f.read().strip(), 16)
    except (OSError, ValueError):
        return None
    return (2, 6) if personality & UNAME26 else _release(os.uname().release)


def marker_in(pid: int) -> bool | None:
    """Does OpenSSL's "random is seeded" segment exist in ``pid``'s IPC namespace? A child
    joins that namespace and asks shmget(); doctor's own namespace is not the daemon's."""
    try:
        ns = os.open(f"/proc/{pid}/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 3
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(ns, CLONE_NEWIPC) != 0:  # os.setns is Python 3.12's
                    os._exit(3)
                found = libc.shmget(OPENSSL_SHM_KEY, 0, 0) >= 0
                code = (
                    0
                    if found or ctypes.get_errno() == errno.EACCES
                    else (1 if ctypes.get_errno() == errno.ENOENT else 3)
                )
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
    finally:
        os.close(ns)
    return {0: True, 1: False}.get(os.waitstatus_to_exitcode(status))


_READ_DEADLINE = 2.0  # seconds a daemon gets to reach the ptrace stop


def read_filters(pid: int, deadline: float = _READ_DEADLINE) -> list[bytes]:
    """``pid``'s seccomp filters, newest first, through PTRACE_SECCOMP_GET_FILTER (needs
    CAP_SYS_ADMIN; the daemon is stopped for the read, microseconds, then detached).

    The stop is made in a child of doctor's, given ``deadline`` seconds: a daemon that never
    reaches a ptrace stop (its main thread in vfork(), whose child never execs, or in another
    killable wait) held doctor in waitpid() for ever (review2). On the deadline the child is
    killed: the kernel detaches it from the daemon and cancels the pending interrupt, so the
    daemon is left running, never stopped (ETIMEDOUT)."""
    import select
    import struct

    read_end, write_end = os.pipe()
    parent = os.getpid()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            try:
                filters = _read_filters_here(pid, parent)
                data = b"\0" + b"".join(struct.pack("=I", len(f)) + f for f in filters)
            except OSError as exc:
                data = b"\1" + struct.pack("=i", exc.errno or errno.EIO)
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view) :]
        finally:
            os._exit(0)
    os.close(write_end)
    chunks: list[bytes] = []
    try:
        import time

        end = time.monotonic() + deadline
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                os.kill(child, signal.SIGKILL)
                raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(child, 0)
    data = b"".join(chunks)
    if data[:1] == b"\1" and len(data) == 5:
        err = struct.unpack("=i", data[1:])[0]
        raise OSError(err, os.strerror(err))
    if data[:1] != b"\0":
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    filters, at = [], 1
    while at + 4 <= len(data):
        (size,) = struct.unpack_from("=I", data, at)
        filters.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return filters


def _read_filters_here(pid: int, parent: int) -> list[bytes]:
    """read_filters' ptrace work, in the child that read_filters can kill."""
    libc = ctypes.CDLL(None, use_errno=True)
    # dies with doctor (a stop signal): not left as the daemon's tracer, waiting on its stop
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        raise OSError(errno.ECHILD, os.strerror(errno.ECHILD))
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]

    def ptrace(request: int, addr: int = 0, data: ctypes.c_void_p | int | None = None) -> int:
        result = int(libc.ptrace(request, pid, addr, data))
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return result

    ptrace(PTRACE_SEIZE)
    try:
        ptrace(PTRACE_INTERRUPT)
        os.waitpid(pid, os.WALL if hasattr(os, "WALL") else 0x40000000)
        filters: list[bytes] = []
        for index in range(_MAX_FILTERS):
            try:
                count = ptrace(PTRACE_SECCOMP_GET_FILTER, index)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    break
                raise
            buf = ctypes.create_string_buffer(count * 8)
            ptrace(PTRACE_SECCOMP_GET_FILTER, index, ctypes.cast(buf, ctypes.c_void_p).value)
            filters.append(buf.raw)
        # the request numbers them from the oldest; the kernel runs the newest first, and of
        # two equal actions (ERRNO) the newest's data wins: an ENOSYS was said EPERM (review3)
        return filters[::-1]
    finally:
        # A detach resumes it; were this child killed first, the kernel detaches it the same way.
        libc.ptrace(PTRACE_DETACH, pid, 0, 0)


def daemon_entropy(pid: int, status_text: str, *, read_filter: bool) -> DaemonEntropy:
    """What getrandom() does for ``pid``, its marker and the kernel it sees. Without
    ``read_filter`` a daemon with a filter is "cannot tell": reading it stops the daemon."""
    mode, count = seccomp_status(status_text)
    if mode == 0:
        answer, why = Getrandom.WORKS, "it has no seccomp filter"
    elif mode == 1:
        answer, why = Getrandom.OTHER, "it runs in strict seccomp mode (read/write/exit only)"
    elif not read_filter:
        answer = Getrandom.UNKNOWN
        why = (
            f"it has {count} seccomp filter{'s' if count != 1 else ''}; `doctor --read-filter` "
            "reads them (the daemon is stopped for microseconds)"
        )
    else:
        try:
            answer, why = getrandom_answer(read_filters(pid), os.uname().machine)
        except OSError as exc:
            answer = Getrandom.UNKNOWN
            name = errno.errorcode.get(exc.errno or 0, str(exc))
            why = f"its seccomp filters could not be read ({name})"
            if exc.errno == errno.ETIMEDOUT:
                why += (
                    f": it did not stop for the read within {_READ_DEADLINE:g} s (a vfork() "
                    "or another wait no signal interrupts); it was left running"
                )
    real = _release(os.uname().release)
    if real is not None and real < (3, 17) and answer is Getrandom.WORKS:
        # the syscall is the running kernel's, whatever release UNAME26 makes uname() say
        answer, why = Getrandom.ENOSYS, "this kernel predates getrandom() (3.17)"
    return DaemonEntropy(answer, why, count, marker_in(pid), kernel_seen(pid))
