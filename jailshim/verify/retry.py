"""Run the probe until it passes, a permanent failure shows, or the time budget runs out.

Only states that clear by themselves while we wait are waited for: the kernel RNG not
initialised yet, an address absent or tentative, a resolver not answering yet. A missing or
wrong node, nodev, EACCES will not fix themselves (nothing in jailshim's start makes a node
after prepare), so they fail at once (issue 26: an empty jail waited 30 s printing 15
warnings). A wait is said once, with what is awaited and for how long; the attempts after it
are debug events, and the outcome is one line. tenacity is imported only when a first attempt
failed: a healthy jail pays nothing for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from logging import DEBUG, INFO, WARNING
from typing import TYPE_CHECKING, Any, NamedTuple

from jailshim.stopsignals import raise_if_received
from jailshim.verify.findings import Finding

if TYPE_CHECKING:
    from jailshim.logs import Logger

__all__ = ["Outcome", "verify_with_retries"]

_MAX_WAIT = 2.0  # seconds between attempts at most


def _failing(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if not f.ok]


def _waitable(findings: list[Finding]) -> bool:
    failing = _failing(findings)
    return bool(failing) and all(f.transient for f in failing)


class Outcome(NamedTuple):
    """The last attempt's findings and how long it took to get there."""

    findings: list[Finding]
    attempts: int
    elapsed: float

    @property
    def failing(self) -> list[Finding]:
        return _failing(self.findings)

    def sentence(self) -> str:
        """One sentence for exit 69: the first failing check, what was seen, what to do."""
        failing = self.failing
        first = failing[0]
        more = f" (and {len(failing) - 1} more failing, see the log)" if len(failing) > 1 else ""
        when = (
            f"still failing after {self.attempts} attempts in {self.elapsed:.1f}s "
            "(the --timeout budget)"
            if _waitable(self.findings)
            else "failed"
        )
        return f"Check {first.check} {when}: {first.detail.rstrip('.')}; {first.remedy}.{more}"


def _waiting_for(failing: list[Finding], budget: float) -> dict[str, Any]:
    """The one line's fields: which checks are awaited, and until when."""
    checks = ", ".join(f.check for f in failing)
    return {
        "waiting_for": checks,
        "up_to_s": round(budget, 1),
        "message": f"waiting up to {budget:.0f}s (--timeout) for {checks}; "
        "the attempts are logged at debug level",
    }


def _sleep(seconds: float) -> None:
    raise_if_received()
    time.sleep(seconds)


def verify_with_retries(probe: Callable[[], list[Finding]], timeout: float, log: Logger) -> Outcome:
    """Attempt until every check passes, one fails for good, or ``timeout`` seconds are spent."""
    start = time.monotonic()
    attempt = 0

    def remaining() -> float:
        return timeout - (time.monotonic() - start)

    def one_attempt() -> list[Finding]:
        nonlocal attempt
        raise_if_received()
        attempt += 1
        findings = probe()
        failing = _failing(findings)
        waiting = attempt == 1 and _waitable(findings) and remaining() > 0
        # one line when it starts waiting (what, and for how long), one when it passes after
        # waiting; the attempts in between are debug: 15 identical warnings read as a hang
        level = INFO if not failing else WARNING if attempt == 1 else DEBUG
        log.log(
            level,
            "check.attempt",
            attempt=attempt,
            ok=not failing,
            reason="; ".join(f"{f.check}: {f.detail}" for f in failing) or None,
            elapsed_ms=round((time.monotonic() - start) * 1000, 1),
            **(_waiting_for(failing, remaining()) if waiting else {}),
        )
        return findings

    findings = one_attempt()
    if _waitable(findings) and remaining() > 0:
        import tenacity

        def capped(state: tenacity.RetryCallState) -> float:
            backoff: float = min(_MAX_WAIT, 0.1 * 2.0 ** int(state.attempt_number))
            return max(0.0, min(backoff, remaining()))

        # remaining() was positive a moment ago; on a loaded machine it may not be now, and
        # time.sleep(-0.01) raised ValueError: exit 70 instead of the check's 69 (test_network)
        time.sleep(max(0.0, min(0.1, remaining())))
        retrying = tenacity.Retrying(
            sleep=_sleep,
            stop=lambda state: remaining() <= 0,
            wait=capped,
            retry=tenacity.retry_if_result(_waitable),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else [],
        )
        findings = retrying(one_attempt)
    return Outcome(findings, attempt, time.monotonic() - start)
