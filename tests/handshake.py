"""Handshakes for tests: wait for the event a test means, never for a fixed time.

A fixed delay ("act after 1 s", "assert after 0.2 s") stands for "by then it has happened";
on a loaded machine it has not, and the test fails, or passes without looking (issue 32).
Each helper here waits for the thing itself, with a deadline generous enough that it only
expires when the thing never comes, and then says what did not come.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support import Result

__all__ = [
    "FIFO_OPEN",
    "WAIT",
    "EventReader",
    "datagrams_until",
    "exited",
    "kernel_wait",
    "wait_until",
]

T = TypeVar("T")

# Long enough for a slow start on a machine shared by many test runs; reached only when the
# awaited thing never happens (then the test fails saying what it waited for).
WAIT = 60.0


def wait_until(
    predicate: Callable[[], T], what: str, timeout: float = WAIT, interval: float = 0.01
) -> T:
    """Poll ``predicate`` every ``interval`` seconds until it returns something true, and
    return that; AssertionError naming ``what`` when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:.0f}s for {what}: it did not happen")
        time.sleep(interval)


FIFO_OPEN = "wait_for_partner"  # the kernel function an open(2) of a FIFO sleeps in (fs/pipe.c)


def kernel_wait(pid: int) -> str:
    """Where the kernel holds ``pid`` asleep (its wchan, e.g. "wait_for_partner": a FIFO's
    open waiting for the other end), or "" when it is not asleep (running, runnable after a
    wake-up, stopped, gone). Read as root: another user's wchan reads "0"."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        state = stat[stat.rfind(")") + 2]
        if state not in "SD":
            return ""
        where = Path(f"/proc/{pid}/wchan").read_text().strip()
    except (OSError, IndexError):
        return ""
    return "" if where == "0" else where


def exited(pid: int, timeout: float = WAIT) -> bool:
    """Has the process ``pid`` (a child or not) ended within ``timeout`` seconds? Waits on its
    pidfd, which reads ready when it ends: no PID reuse, no polling interval."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def datagrams_until(
    socks: dict[str, socket.socket], last: Callable[[str], bool], timeout: float = WAIT
) -> list[str] | None:
    """The name of the socket of every datagram received on the non-blocking ``socks``, read
    until one arrives at a socket whose name ``last`` accepts, then all that is queued; None
    when none comes within ``timeout`` seconds.

    For a sender that sends to the others before that last one: a unix datagram is in the
    receiver's queue when sendto returns, so once the last is here the others are too. (A
    fixed 0.5 s wait instead made a late datagram a false difference.)"""
    by_fd = {s.fileno(): name for name, s in socks.items()}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    got: list[str] = []

    def drain(name: str) -> None:
        while True:
            try:
                socks[name].recv(65536)
            except BlockingIOError:
                return
            got.append(name)

    deadline = time.monotonic() + timeout
    while not any(last(name) for name in got):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        for fd, _ in poller.poll(left * 1000):
            drain(by_fd[fd])
    for name in socks:
        drain(name)
    return got


class EventReader:
    """The JSON log events of a running jailshim, read from its stderr as they come, so a test
    can act once jailshim has said something (e.g. that it waits) instead of after a delay.

    Reads the pipes' file descriptors directly (stdout too, so a full pipe cannot stall the
    process); ``finish`` waits for the exit and returns everything as a support.Result.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self._fds = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        self._open = set(self._fds)
        self._err = proc.stderr.fileno()
        self._seen = 0  # complete stderr lines already parsed into events
        self.events: list[dict[str, Any]] = []

    def _read(self, timeout: float) -> None:
        if not self._open:
            time.sleep(min(timeout, 0.01))
            return
        ready, _, _ = select.select(list(self._open), [], [], timeout)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                self._fds[fd] += data
            else:
                self._open.discard(fd)
        lines = bytes(self._fds[self._err]).split(b"\n")[:-1]
        for line in lines[self._seen :]:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a blank line, or the daemon's own output after the handover
            if isinstance(event, dict):
                self.events.append(event)
        self._seen = len(lines)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT
    ) -> dict[str, Any]:
        """The first event for which ``predicate`` is true, waiting for it up to ``timeout``
        seconds; AssertionError (with what was said) if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for event in self.events[checked:]:
                if predicate(event):
                    return event
            checked = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0 or not self._open:
                raise AssertionError(
                    f"waited for {what}; jailshim said:\n{self._fds[self._err].decode()}"
                )
            self._read(min(left, 0.5))

    def wait_for_text(self, needle: str, what: str, timeout: float = WAIT) -> None:
        """Wait until ``needle`` is on stderr (any process's words, JSON or not); AssertionError
        (with what was said) if the process ends or time runs out first."""
        deadline = time.monotonic() + timeout
        while needle.encode() not in self._fds[self._err]:
            left = deadline - time.monotonic()
            if left <= 0 or not self._open:
                raise AssertionError(
                    f"waited for {what}; it said:\n{self._fds[self._err].decode()}"
                )
            self._read(min(left, 0.5))

    def finish(self, timeout: float = WAIT * 2) -> Result:
        """Wait for the process to end and return its exit status and whole output."""
        deadline = time.monotonic() + timeout
        while self._open and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        code = self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        stdout, stderr = (bytes(b).decode(errors="replace") for b in self._fds.values())
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()  # type: ignore[union-attr]
        assert "Traceback" not in stderr, stderr
        return Result(code, stdout, stderr)

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        """A test that failed half-way leaves nothing running: the process (and what it
        started) is stopped by PID."""
        if self.proc.returncode is None and self.proc.poll() is None:
            from tests.daemons import stop

            stop(self.proc)

    def output(self) -> tuple[str, str]:
        """What was read so far (stdout, stderr), without waiting."""
        stdout, stderr = (bytes(b).decode(errors="replace") for b in self._fds.values())
        return stdout, stderr
