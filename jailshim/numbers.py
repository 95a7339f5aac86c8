"""How a number of seconds is read from a flag or a JAILSHIM_ variable (PURE).

Python's float() takes far more than an operator means by "seconds": `1_000` (1000), `1e3`,
`inf`, `nan`, full-width digits. `JAILSHIM_TIMEOUT=1_000` was a timeout of 1000 s; a typo must
be one sentence instead, so only plain decimals are numbers here.
"""

from __future__ import annotations

from jailshim.errors import UsageError, said

__all__ = ["A_DAY", "plain_seconds", "seconds"]

A_DAY = 86400.0  # the most any option's seconds may be: more is a typo, not a plan


def plain_seconds(raw: str) -> float:
    """``raw`` as a float if it is a plain ASCII decimal (``30``, ``0.5``, `` 2 ``), else NaN."""
    whole, dot, fraction = raw.strip().partition(".")
    digits = whole + fraction
    if not digits or not (digits.isascii() and digits.isdigit()):
        return float("nan")
    return float(f"{whole or 0}{dot}{fraction}")


def seconds(raw: str, source: str, *, zero: bool, example: str) -> float:
    """``raw`` (from ``source``, a flag or variable) as seconds up to a day; 0 only when
    ``zero`` allows it. Else one sentence naming the value as it was given."""
    value = plain_seconds(raw)
    if zero and 0 <= value <= A_DAY:  # NaN fails every comparison
        return value
    if not zero and 0 < value <= A_DAY:
        return value
    if zero:
        wanted = f"a number of seconds from 0 to {A_DAY:.0f}"
    else:
        wanted = f"a positive number of seconds, at most {A_DAY:.0f} (a day)"
    raise UsageError(f"{said(source, raw)} must be {wanted}, such as {example}.")
