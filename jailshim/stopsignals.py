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
import signal
from collections.abc import Iterator

__all__ = ["STOP_SIGNALS", "Interrupted", "interrupt", "raise_if_received", "signals_deferred"]

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_received: list[int] = []  # the stop signals the handler saw


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
