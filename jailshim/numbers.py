"""How a number of seconds is read from a flag or a JAILSHIM_ variable (PURE).

Python's float() takes far more than an operator means by "seconds": `1_000` (1000), `1e3`,
`inf`, `nan`, full-width digits. `JAILSHIM_TIMEOUT=1_000` was a timeout of 1000 s; a typo must
be one sentence instead, so only plain decimals are numbers here.
"""

from __future__ import annotations

__all__ = ["plain_seconds"]


def plain_seconds(raw: str) -> float:
    """``raw`` as a float if it is a plain ASCII decimal (``30``, ``0.5``, `` 2 ``), else NaN."""
    whole, dot, fraction = raw.strip().partition(".")
    digits = whole + fraction
    if not digits or not (digits.isascii() and digits.isdigit()):
        return float("nan")
    return float(f"{whole or 0}{dot}{fraction}")
