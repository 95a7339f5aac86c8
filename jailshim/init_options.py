"""`run --init`'s stop options: --grace, --stop-delay, --rewrite-signal FROM:TO, --map-exit
CODE:CODE, --pdeath-signal SIG.

Pure parsing: each value becomes numbers the lean supervisor takes on its command line, or one
sentence naming the value as it was given (flag or JAILSHIM_ variable).
"""

from __future__ import annotations

import signal
from typing import NamedTuple

from jailshim.errors import UsageError, said
from jailshim.numbers import A_DAY, seconds
from jailshim.supervisor import FORWARDED, JOB_STOPS, STOPPING

__all__ = [
    "DEFAULT_GRACE",
    "MAX_GRACE",
    "StopOptions",
    "exit_map",
    "grace",
    "pdeath_signal",
    "rewrites",
    "stop_delay",
]

DEFAULT_GRACE = 10.0  # Docker's and podman's stop timeout
MAX_GRACE = A_DAY  # a longer grace is a typo, not a plan


class StopOptions(NamedTuple):
    grace: float = DEFAULT_GRACE
    rewrites: tuple[tuple[int, int], ...] = ()
    exit_map: tuple[tuple[int, int], ...] = ()
    stop_delay: float = 0.0
    pdeath_signal: int = 0  # 0: none (set by the hand-over, not a supervisor flag)

    def argv(self) -> list[str]:
        """The supervisor's command-line form."""
        words = ["--grace", repr(self.grace)]
        if self.stop_delay:
            words += ["--stop-delay", repr(self.stop_delay)]
        for old, new in self.rewrites:
            words += ["--rewrite", f"{old}:{new}"]
        for old, new in self.exit_map:
            words += ["--map-exit", f"{old}:{new}"]
        return words


def grace(raw: str, source: str) -> float:
    return seconds(raw, source, zero=True, example="10")


def stop_delay(raw: str, source: str) -> float:
    """--stop-delay: seconds a stop signal is held before it is forwarded (a load balancer
    drains meanwhile); the grace period starts when it is forwarded."""
    return seconds(raw, source, zero=True, example="5")


_UNCATCHABLE = (signal.SIGKILL, signal.SIGSTOP)
_PAUSES = (signal.SIGSTOP, *JOB_STOPS)
_FORWARDED_SAID = "any signal but KILL, STOP and CHLD (and glibc's own 32 and 33)"


def pdeath_signal(raw: str, source: str) -> int:
    """--pdeath-signal: the signal the kernel sends the supervisor when the process that
    started jailshim ends (PR_SET_PDEATHSIG); forwarded like one sent by hand."""
    number = _signal_number(raw)
    if number is None or number not in FORWARDED:
        raise UsageError(
            f"{said(source, raw)} is not a signal the supervisor forwards; give "
            f"{_FORWARDED_SAID}, such as TERM."
        )
    return number


def _signal_number(word: str) -> int | None:
    """TERM, SIGTERM, term, 15 or RTMIN+3 (as kill -l names them) as a number; 0 stays 0
    (drop); None when it is none of them."""
    text = word.strip().upper()
    if text.isascii() and text.isdigit():
        number = int(text)
        return number if number <= signal.SIGRTMAX else None
    base, sign, offset = text.removeprefix("SIG").partition("+" if "+" in text else "-")
    if base in ("RTMIN", "RTMAX") and sign and offset.isascii() and offset.isdigit():
        number = int(getattr(signal, "SIG" + base)) + int(sign + offset)
        return number if signal.SIGRTMIN <= number <= signal.SIGRTMAX else None
    try:
        return int(signal.Signals["SIG" + text.removeprefix("SIG")])
    except KeyError:
        return None


def _pair(raw: str, source: str, what: str) -> tuple[str, str]:
    old, sep, new = raw.partition(":")
    if not sep or not old.strip() or not new.strip():
        raise UsageError(f"{said(source, raw)} is not {what}.")
    return old, new


def rewrites(raws: list[str], source: str) -> tuple[tuple[int, int], ...]:
    """FROM:TO signal pairs; FROM one the supervisor forwards, TO any signal or 0 (drop it)."""
    what = "FROM:TO with two signals, such as TERM:QUIT (TO may be 0: do not forward FROM)"
    pairs: dict[int, int] = {}
    for raw in raws:
        old_word, new_word = _pair(raw, source, what)
        old, new = _signal_number(old_word), _signal_number(new_word)
        if old is None or old not in FORWARDED:
            uncatchable = " (it cannot be caught)" if old in _UNCATCHABLE else ""
            raise UsageError(
                f"{said(source, raw)}: {old_word.strip()} is not a signal the supervisor "
                f"forwards{uncatchable}; FROM must be {_FORWARDED_SAID}."
            )
        if new is None:
            raise UsageError(
                f"{said(source, raw)}: {new_word.strip()} is not a signal; give a name such "
                "as QUIT or USR1, a number, or 0 to drop FROM."
            )
        if old in STOPPING and new in _PAUSES:
            # the supervisor sends SIGCONT right after a stop signal, so that a stopped daemon
            # can act on it: the pause would be undone, and the daemon killed after the grace
            raise UsageError(
                f"{said(source, raw)}: {old_word.strip()} starts the stop sequence, which "
                f"continues the daemon right after it, so {new_word.strip()} would be undone "
                "at once; give a signal that ends the daemon, or 0 to drop FROM."
            )
        if old in pairs:
            raise UsageError(f"{said(source, raw)}: {old_word.strip()} is rewritten twice.")
        pairs[old] = new
    return tuple(pairs.items())


def exit_map(raws: list[str], source: str) -> tuple[tuple[int, int], ...]:
    """CODE:CODE pairs, each an exit status 0-255 (143 is a stop by SIGTERM)."""
    what = "CODE:CODE with two exit statuses from 0 to 255, such as 143:0"
    pairs: dict[int, int] = {}
    for raw in raws:
        codes = _pair(raw, source, what)
        if not all(c.strip().isascii() and c.strip().isdigit() for c in codes):
            raise UsageError(f"{said(source, raw)} is not {what}.")
        old, new = (int(c) for c in codes)
        if old > 255 or new > 255:
            raise UsageError(f"{said(source, raw)} is not {what}.")
        if old in pairs:
            raise UsageError(f"{said(source, raw)}: {old} is mapped twice.")
        pairs[old] = new
    return tuple(pairs.items())
