"""`jailshim check` (and the verify step of prepare and run, ready.py): prove the jail from
inside it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from jailshim.errors import CheckFailed
from jailshim.jail.safepath import Jail
from jailshim.options import DEFAULT_TIMEOUT
from jailshim.spec import Spec
from jailshim.verify.findings import Finding, log_findings, render_table
from jailshim.verify.probe import Probe, crypto_source, needs_of, start_probe
from jailshim.verify.retry import Outcome, verify_with_retries

if TYPE_CHECKING:
    from jailshim.logs import Logger
    from jailshim.options import JailOptions
    from jailshim.spec import WaitTarget
    from jailshim.verify.entropy import ProbeEntropy

__all__ = [
    "check",
    "check_network",
    "crypto_source",
    "judge_probe",
    "needs_of",
    "report",
    "start_probe",
]


def report(outcome: Outcome, log: Logger) -> list[Finding]:
    """Log every finding and, on a TTY, print the table; raise CheckFailed unless all pass.

    With the table on screen the per-check events drop to debug, so a person reads each
    finding once; machines (no TTY) get them all as JSON events.
    """
    table = sys.stdout.isatty()
    log_findings(outcome.findings, log, table=table)
    if table:
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


def judge_probe(findings: list[Finding], entropy: ProbeEntropy | None) -> list[Finding]:
    """The probe's rows with the entropy verdict spoken (verdict.decide): the probe's facts
    are the daemon's-to-be (same lineage, seccomp filter, IPC namespace, personality). Fails
    on "will fail" and "safe now, fragile"; "cannot tell" is a warning."""
    if entropy is None:  # the child died first: its failure row says why
        return findings
    from jailshim.verify.entropy import CHECK_FAILS, after_row, getrandom_of, judge_entropy
    from jailshim.verify.verdict import EntropyFacts, Library

    facts = EntropyFacts(
        library=Library.UNKNOWN,
        getrandom=getrandom_of(entropy.getrandom_errno),
        kernel=entropy.kernel,
        marker=entropy.marker,
        kept_fd=None,  # not running yet
        nodes=entropy.urandom,
        running=False,
    )
    judged, rows, _ = judge_entropy(
        findings,
        facts,
        entropy.libraries,
        absent=entropy.absent,
        fails=CHECK_FAILS,
        prepare="run `jailshim prepare` on this jail (`jailshim run` does it before the start)",
        whose="probe",
    )
    # after getrandom(): the one sentence of a failed check is the first failing row's
    return after_row(judged, "getrandom()", rows)


def check(
    spec: Spec | None,
    log: Logger,
    *,
    targets: tuple[WaitTarget, ...] = (),
    ensure_loopback: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    first: Probe | None = None,
) -> list[Finding]:
    """The jail probe (when there is a jail) and network readiness, retried, then reported.

    ``first`` is a probe started earlier with ``start_probe``; it serves the first attempt.
    """
    path = None
    if spec is not None:
        try:
            with Jail(spec.chroot) as jail:
                path = jail.real
        except BaseException:
            if first is not None:
                first.cancel()
            raise
        targets, ensure_loopback, timeout = spec.wait_targets, spec.ensure_loopback, spec.timeout
    pending = [first] if first is not None else []

    def attempt() -> list[Finding]:
        findings: list[Finding] = []
        if spec is not None and path is not None:
            probe = (
                pending.pop()
                if pending
                else Probe(
                    path,
                    spec.identity,
                    spec.devices,
                    needs_of(spec),
                    notify=spec.notify_socket,
                    crypto=crypto_source(spec),
                )
            )
            findings = judge_probe(probe.collect(), probe.entropy)
        if targets:
            from jailshim.verify.network import network_findings

            findings += network_findings(list(targets), ensure_loopback, log)
        return findings

    return report(verify_with_retries(attempt, timeout, log), log)


def check_network(
    options: JailOptions, log: Logger, targets: tuple[WaitTarget, ...]
) -> list[Finding]:
    """Network readiness alone, when there is no jail: ``targets`` (specs.wait_targets_of:
    --wait-addr and the daemon's own bind addresses), retried within --timeout (check without
    --chroot, and run when neither --chroot nor the daemon's config names a jail)."""
    return check(
        None,
        log,
        targets=targets,
        ensure_loopback=options.ensure_loopback,
        timeout=options.timeout,
    )
