"""`jailshim check` (and the verify step of prepare and run): prove the jail from inside it."""

from __future__ import annotations

import sys
from typing import Any

from jailshim.errors import CheckFailed
from jailshim.jail.safepath import Jail
from jailshim.spec import Spec
from jailshim.verify.findings import Finding, render_table
from jailshim.verify.probe import run_probe
from jailshim.verify.retry import verify_with_retries

__all__ = ["check"]


def check(spec: Spec, log: Any, *, table: bool | None = None) -> list[Finding]:
    """Run the probe with retries, report every finding; raise CheckFailed unless all pass."""
    with Jail(spec.chroot) as jail:
        path = jail.real
    outcome = verify_with_retries(
        lambda: run_probe(path, spec.identity, spec.devices), spec.timeout, log
    )
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
