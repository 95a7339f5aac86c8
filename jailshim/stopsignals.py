"""The stop signals jailshim turns into an unwinding exception before hand-over, and a way to
hold them while code must not be cut short.

Held (blocked, not lost): a signal that arrives meanwhile is delivered when the block ends, and
the handler's exception is raised in jailshim's own code. Two uses: while a step and its record
change together (prepare, teardown), and around library code that catches every exception
(pyroute2's message parsers have bare ``except:``, which swallowed the stop signal's
KeyboardInterrupt and left `run` waiting out its whole --timeout after a SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

__all__ = [
    "IGNORED_AT_START",
    "STOP_SIGNALS",
    "Interrupted",
    "catch_at_start",
    "interrupt",
    "parent_at_start",
    "raise_if_received",
    "signals_deferred",
]

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_received: list[int] = []  # the stop signals the handler saw
# The stop signals that came ignored: jailshim catches them until the hand-over, which gives
# them back ignored with --inherited-signals keep.
IGNORED_AT_START: set[int] = set()
# Who started us, read by catch_at_start (cli.main, before anything is prepared), not when this
# module is imported: --pdeath-signal is set only at the hand-over, and a starter that died
# meanwhile must still be noticed (getppid() then names the reaper).
_parent_at_start: list[int] = []


class Interrupted(KeyboardInterrupt):
    """SIGTERM, SIGINT or SIGHUP arrived while jailshim worked (before any hand-over)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def interrupt(signum: int, _frame: object) -> None:
    """The stop signals' handler: remember, then unwind (apply's undo stack runs, so a
    container stopped during prepare leaves no half-made jail). exec() resets it."""
    _received.append(signum)
    raise Interrupted(signum)


def catch_at_start() -> None:
    """At jailshim's start (cli.main, once): note who started us and which stop signals came
    ignored, then catch the stop signals (they unwind until the hand-over). Once: the fast
    `run --init` path (__main__.py) calls it first and may then hand over to cli.main, whose second
    call would read a later parent and see its own handler where SIG_IGN was."""
    if _parent_at_start:
        return
    _parent_at_start[:] = [os.getppid()]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if signal.signal(sig, interrupt) == signal.SIG_IGN:
            IGNORED_AT_START.add(sig)  # for --inherited-signals keep


def parent_at_start() -> int:
    """The PID that started jailshim, as catch_at_start read it (the parent now when jailshim
    was not started by cli.main, as in a test that calls run() itself)."""
    return _parent_at_start[0] if _parent_at_start else os.getppid()


def raise_if_received() -> None:
    """Raise the stop signal's exception again if it was swallowed: the handler runs at any
    bytecode, also inside a finalizer or a weakref callback (asyncio's, in pyroute2), where
    Python prints "Exception ignored" and goes on. Called where jailshim waits."""
    if _received:
        raise Interrupted(_received[-1])


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold the stop signals for the block; one that arrives meanwhile is delivered (and
    unwinds) right after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
