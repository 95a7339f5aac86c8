"""`jailshim check` (and the verify step of prepare and run): prove the jail from inside it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from jailshim.errors import CheckFailed
from jailshim.jail.safepath import Jail
from jailshim.spec import Spec
from jailshim.verify.findings import Finding, render_table
from jailshim.verify.probe import run_probe
from jailshim.verify.retry import Outcome, verify_with_retries

if TYPE_CHECKING:
    from jailshim.verify.network import WaitTarget

__all__ = ["check", "report"]


def report(outcome: Outcome, log: Any, *, table: bool | None = None) -> list[Finding]:
    """Log every finding (and print the table on a TTY); raise CheckFailed unless all pass."""
    for f in outcome.findings:
        level = 20 if f.ok and not f.warning else 30 if f.ok else 40
        remedy = {"remedy": f.remedy} if f.remedy and not f.ok else {}
        log.log(level, "check", check=f.check, ok=f.ok, detail=f.detail, **remedy)
    if table if table is not None else sys.stdout.isatty():
        sys.stdout.write(render_table(outcome.findings) + "\n")
    if outcome.failing:
        raise CheckFailed(
            outcome.sentence(), check=outcome.failing[0].check, attempts=outcome.attempts
        )
    log.info(
        "checked",
        passed=len(outcome.findings),
        attempts=outcome.attempts,
        elapsed_ms=round(outcome.elapsed * 1000, 1),
    )
    return outcome.findings


def check(
    spec: Spec | None,
    log: Any,
    *,
    targets: tuple[WaitTarget, ...] = (),
    ensure_loopback: bool = False,
    timeout: float = 30.0,
) -> list[Finding]:
    """The jail probe (when there is a jail) and network readiness, retried, then reported."""
    path = None
    if spec is not None:
        with Jail(spec.chroot) as jail:
            path = jail.real
        targets, ensure_loopback, timeout = spec.wait_targets, spec.ensure_loopback, spec.timeout

    def attempt() -> list[Finding]:
        findings = run_probe(path, spec.identity, spec.devices) if spec and path else []
        if targets:
            from jailshim.verify.network import network_findings

            findings += network_findings(list(targets), ensure_loopback, log)
        return findings

    return report(verify_with_retries(attempt, timeout, log), log)
