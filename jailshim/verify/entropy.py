"""The entropy rows of check, run and doctor, spoken from verdict.decide(): pure, no syscalls.

Issue 23: check and doctor judged entropy by the jail's dev/urandom alone, and said it with
sentences of their own ("OpenSSL, GnuTLS and Python fall back to dev/urandom, so the jail's
device nodes are essential"), false both ways for OpenSSL >= 1.1.1d on a kernel >= 4.8. Here
the facts (jailshim's probe's, for check and run: the daemon-to-be shares its lineage, filter,
IPC namespace and personality; the daemon's own, for doctor) go through the one table, and
every row says whose fact it is. A missing node is a failure only where the verdict needs it.
"""

from __future__ import annotations

import errno
from typing import Any, NamedTuple

from jailshim.verify.findings import DeviceFacts, Finding
from jailshim.verify.verdict import (
    Decision,
    EntropyFacts,
    Getrandom,
    Library,
    Remedy,
    Verdict,
    decide,
    library_of,
)

__all__ = [
    "CHECK_FAILS",
    "ProbeEntropy",
    "ProbeLibrary",
    "absent_only",
    "after_row",
    "getrandom_of",
    "judge_entropy",
    "release_of",
    "remedy_words",
    "sentence",
    "worst",
    "worst_verdict",
]

# check and run fail on these; "cannot tell" is a warning there (nothing to rerun before the
# daemon starts). doctor's verdict -> exit code table is errors.VERDICT_ERRORS.
CHECK_FAILS = frozenset({Verdict.WILL_FAIL, Verdict.FRAGILE})
# worst first: the verdict line of a daemon with several libraries is its worst library's
_SEVERITY = (Verdict.WILL_FAIL, Verdict.FRAGILE, Verdict.CANNOT_TELL, Verdict.SAFE)


class ProbeLibrary(NamedTuple):
    """A crypto library jailshim's probe loaded (or could not), as the probe child saw it."""

    family: str  # "OpenSSL", "GnuTLS", "libsodium", ...
    version: str  # the library's own version string when known
    check: str  # its reseed row ("OpenSSL 3.0.19 reseed"), "" when it was not probed


class ProbeEntropy(NamedTuple):
    """The entropy facts the probe child gathered where the daemon will run (check, run)."""

    getrandom_errno: int = 0  # getrandom(GRND_NONBLOCK) in the probe, chrooted, as the user
    marker: bool | None = None  # SysV shm key 114 in the probe's IPC namespace
    kernel: tuple[int, int] | None = None  # uname() as the probe sees it (UNAME26: 2.6)
    libraries: tuple[ProbeLibrary, ...] = ()
    absent: tuple[str, ...] = ()  # device rows that failed only for being absent/unusable
    urandom: bool | None = None  # dev/urandom works for the user (None: not checked)

    def to_json(self) -> dict[str, Any]:
        return {**self._asdict(), "libraries": [lib._asdict() for lib in self.libraries]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeEntropy:
        kernel = data.get("kernel")
        return cls(
            getrandom_errno=int(data.get("getrandom_errno", 0)),
            marker=data.get("marker"),
            kernel=(int(kernel[0]), int(kernel[1])) if kernel else None,
            libraries=tuple(ProbeLibrary(**lib) for lib in data.get("libraries", ())),
            absent=tuple(data.get("absent", ())),
            urandom=data.get("urandom"),
        )


def release_of(text: str) -> tuple[int, int] | None:
    """ "6.1.0-18-amd64" -> (6, 1); "2.6.66" -> (2, 6); nonsense -> None."""
    major, _, rest = text.partition(".")
    minor = "".join(c for c in rest.split(".")[0] if c.isdigit())
    return (int(major), int(minor or 0)) if major.isdigit() else None


def getrandom_of(err: int) -> Getrandom:
    """The probe's getrandom(GRND_NONBLOCK) errno as the table's fact. EAGAIN is a kernel RNG
    not ready yet (its own row, waited for): the call itself works."""
    if err in (0, errno.EAGAIN):
        return Getrandom.WORKS
    if err == errno.ENOSYS:
        return Getrandom.ENOSYS
    if err == errno.EPERM:
        return Getrandom.EPERM
    return Getrandom.OTHER


def absent_only(facts: DeviceFacts) -> bool:
    """The node is missing, unreachable or unopenable for the user, and nothing worse: a wrong
    node (a file, other numbers, constant bytes) is a failure whatever the verdict, since a
    program that reads it gets bytes that are not random."""
    return bool(facts.lstat_errno or (facts.is_char and facts.open_errno))


def sentence(decision: Decision) -> str:
    """The verdict in words: what, why, when, what would break it."""
    verdict, why = decision.verdict, decision.why
    if verdict is Verdict.WILL_FAIL:
        return f"will fail {decision.when}: {why}"
    if verdict is Verdict.FRAGILE:
        return f"safe now, fragile: {why}; it breaks if {decision.breaks_if}"
    return f"{verdict}: {why}"


def remedy_words(
    decision: Decision, *, prepare: str, running: bool, after_prepare: str = ""
) -> str:
    """The remedy that really fixes it, as a command or a setting to change."""
    remedy = decision.remedy
    if remedy is Remedy.NONE:
        return "none needed"
    if remedy is Remedy.ALLOW_GETRANDOM:
        restart = (
            ", then restart the daemon (a seccomp filter cannot be lifted from a running process)"
            if running
            else ""
        )
        return (
            "allow getrandom() in the daemon's seccomp filter: systemd: take it out of "
            "SystemCallFilter= and do not answer it with SystemCallErrorNumber=; a container: "
            "allow getrandom in the runtime's seccomp profile (--security-opt seccomp=PROFILE, "
            f"Kubernetes securityContext.seccompProfile){restart}; dev/urandom in the jail does "
            "not help here"
        )
    then = f" ({after_prepare})" if after_prepare else ""
    if remedy is Remedy.PREPARE_AND_RESTART and running:
        return f"{prepare}{then}, then restart the daemon"
    return f"{prepare}{then}"


def worst(decisions: list[Decision]) -> Decision:
    """The decision a daemon's verdict line states: will fail > safe now, fragile > cannot
    tell > safe."""
    return min(decisions, key=lambda d: _SEVERITY.index(d.verdict))


def worst_verdict(verdicts: list[Verdict]) -> Verdict:
    return min(verdicts, key=_SEVERITY.index)


def _label(library: Library, family: str, version: str) -> str:
    words = version.split()[:2]
    if family and words and words[0] == family:
        return " ".join(words)
    return f"{family} {version}".strip() if family else str(library)


def judge_entropy(
    findings: list[Finding],
    facts: EntropyFacts,
    libraries: tuple[ProbeLibrary, ...],
    *,
    absent: tuple[str, ...],
    fails: frozenset[Verdict],
    prepare: str,
    whose: str,
    after_prepare: str = "",
) -> tuple[list[Finding], list[Finding], list[Decision]]:
    """The entropy verdict spoken over ``findings``: one verdict row per library, an absent
    node a failure only where a verdict needs the jail's devices, a failed reseed row given
    the remedy that really fixes it. ``facts``: all but the library; ``fails``: the verdicts
    that fail here (check: CHECK_FAILS). Returns (findings, verdict rows, decisions)."""
    rows: list[Finding] = []
    decisions: list[Decision] = []
    for lib in libraries or (ProbeLibrary("", "", ""),):
        library = library_of(lib.family, lib.version) if lib.family else Library.UNKNOWN
        decision = decide(facts._replace(library=library))
        decisions.append(decision)
        failing = decision.verdict in fails
        remedy = remedy_words(
            decision, prepare=prepare, running=facts.running, after_prepare=after_prepare
        )
        needs_nodes = failing and decision.remedy in (Remedy.PREPARE, Remedy.PREPARE_AND_RESTART)
        waits = needs_nodes and any(
            f.transient and f.check in absent and not f.ok for f in findings
        )
        label = _label(library, lib.family, lib.version)
        rows.append(
            Finding(
                f"entropy ({label})" if lib.family else "entropy",
                not failing,
                sentence(decision),
                remedy if failing else "",
                transient=waits,
                warning=not failing and decision.verdict is not Verdict.SAFE,
                whose=whose,
            )
        )
        if failing and lib.check:
            # its reseed failed for the verdict's reason: the same remedy, and worth waiting
            # for exactly when the missing node is (another step of the start may make it)
            findings = [
                f._replace(remedy=remedy, transient=waits)
                if f.check == lib.check and not f.ok
                else f
                for f in findings
            ]
    needed = any(
        d.verdict in fails and d.remedy in (Remedy.PREPARE, Remedy.PREPARE_AND_RESTART)
        for d in decisions
    )
    safe_why = next((d.why for d in decisions if d.verdict is Verdict.SAFE), "")
    why = (
        f"not needed now: {safe_why} (it would be, were getrandom() denied to it)"
        if safe_why
        else "whether the daemon needs it: see its entropy row"
    )
    judged = [
        f._replace(
            ok=True,
            warning=True,
            transient=False,
            remedy="",
            detail=f"{f.detail.rstrip('.')}; {why}",
        )
        if f.check in absent and not f.ok and not needed
        else f
        for f in findings
    ]
    return judged, rows, decisions


def after_row(findings: list[Finding], check: str, rows: list[Finding]) -> list[Finding]:
    """``rows`` inserted after the row named ``check`` (at the end when there is none)."""
    at = next((i + 1 for i, f in enumerate(findings) if f.check == check), len(findings))
    return findings[:at] + rows + findings[at:]
