"""`jailshim doctor --pid PID | --chroot DIR`: will this daemon still get entropy after its next
reseed? Read from /proc without entering anything, then the in-jail probe as the daemon's user.

The probe chroots into /proc/PID/root: that magic link is the daemon's own root in its own mount
namespace, so a daemon in a container is seen exactly as it sees itself, with no setns.
"""

from __future__ import annotations

import os
import stat
import sys
from logging import DEBUG, ERROR, INFO
from typing import TYPE_CHECKING, NamedTuple

from jailshim.devices import Device
from jailshim.errors import VERDICT_ERRORS, ConfigError, NotPermitted, UsageError, exit_code_for
from jailshim.spec import Identity
from jailshim.verify.cryptolib import CryptoLib, recovery
from jailshim.verify.findings import Finding, log_findings, render_table
from jailshim.verify.probe import CryptoSource, run_probe
from jailshim.verify.verdict import Decision, EntropyFacts, Getrandom, Library, Verdict, library_of

if TYPE_CHECKING:
    from jailshim.logs import Logger
    from jailshim.verify.daemon_entropy import DaemonEntropy
    from jailshim.verify.entropy import ProbeLibrary

__all__ = [
    "DOCTOR_DEVICES",
    "DaemonFacts",
    "Diagnosis",
    "chrooted_children",
    "doctor",
    "expand_pids",
    "read_daemon",
    "verdict",
    "verdict_lines",
]

# What doctor checks unless told otherwise (--device adds, --only-devices replaces).
DOCTOR_DEVICES = ("urandom", "random")

_ENTROPY_RDEVS = {os.makedev(1, 9): "/dev/urandom", os.makedev(1, 8): "/dev/random"}


class DaemonFacts(NamedTuple):
    """What /proc says about a running daemon."""

    pid: int
    name: str = ""
    root: str = "/"
    cwd: str = ""
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    seccomp: bool = False
    open_entropy_fds: tuple[str, ...] = ()  # "fd 7 -> /dev/urandom (1:9)"
    crypto: tuple[CryptoLib, ...] = ()  # the crypto libraries it has mapped
    crypto_note: str = ""  # why none could be named (then none is probed, not the host's)

    @property
    def libraries(self) -> tuple[str, ...]:
        """How they are reported: "libcrypto-2ade47cd.so.1.1 (OpenSSL 1.1.1r)"."""
        return tuple(lib.label for lib in self.crypto)

    jail_mounts: tuple[str, ...] = ()  # "/dev/urandom (devtmpfs devtmpfs, ro,nosuid,noexec)"
    status_text: str = ""  # /proc/PID/status as read: its Seccomp and Seccomp_filters lines


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _other_mount_namespace(pid: int) -> bool:
    from jailshim.verify.libfind import same_mount_namespace

    return os.path.exists(f"/proc/{pid}/ns/mnt") and not same_mount_namespace(pid)


def _jail_mounts(pid: int, root: str) -> tuple[str, ...]:
    """Mounts inside the daemon's jail, from its own mount namespace's mountinfo."""
    if root == "/":
        return ()
    from jailshim.jail.mounts import parse_mountinfo

    try:
        with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            entries = parse_mountinfo(f.read())
    except OSError:
        return ()
    # The kernel shows a chrooted process its mount points relative to its own root, and hides
    # the mounts outside it: what is listed (but "/") is inside the jail.
    return tuple(
        f"{e.mount_point} ({e.fstype} {e.source}, {e.options})"
        for e in entries
        if e.mount_point != "/"
    )


def _gone(pid: int, status: dict[str, str]) -> UsageError:
    """--pid names no running process: gone, a zombie, or a leader whose threads live on."""
    state = status.get("State", "")
    if not state.startswith(("Z", "X")):
        return UsageError(f"--pid {pid}: no such process; give the daemon's PID.")
    parent = status.get("PPid", "?").strip()
    try:
        threads = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if t != str(pid))
    except (OSError, ValueError):
        threads = []
    if threads:  # its main thread called pthread_exit; the process runs on in the others
        return UsageError(
            f"--pid {pid}: its main thread has exited but the process runs on in threads "
            f"{', '.join(map(str, threads[:5]))}; give one of those as --pid."
        )
    return UsageError(
        f"--pid {pid}: the process has exited and is a zombie (its parent, PID {parent}, has "
        "not reaped it yet): there is no daemon left to inspect."
    )


def _capabilities(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            line = next(x for x in f if x.startswith("CapEff:" if pid == "self" else "CapPrm:"))
        return int(line.split()[1], 16)
    except (OSError, StopIteration, ValueError, IndexError):
        return 0


_CAP_SYS_PTRACE = 1 << 19
_INIT_USER_NS = 0xEFFFFFFD  # PROC_USER_INIT_INO: the inode of the initial user namespace


def _refused(pid: int) -> NotPermitted:
    """The kernel refused to show /proc/PID's root: say why it refused this process, which
    is not always "not root" (issue 25: root was told to run doctor as root)."""
    if os.geteuid() != 0:
        return NotPermitted(f"--pid {pid}: /proc/{pid} is not readable; run doctor as root.")
    try:
        in_init_ns = os.stat("/proc/self/ns/user").st_ino == _INIT_USER_NS
    except OSError:
        in_init_ns = True
    if not in_init_ns:
        return NotPermitted(
            f"--pid {pid}: the kernel refused /proc/{pid}/root: doctor runs as root in a user "
            "namespace (a rootless container?), which gives it no power over processes "
            "outside it; run doctor on the host."
        )
    ours = _capabilities("self")
    if not ours & _CAP_SYS_PTRACE:
        lacking = _capabilities(str(pid)) & ~ours
        more = f" and PID {pid} holds capabilities doctor lacks ({lacking:#x})" if lacking else ""
        return NotPermitted(
            f"--pid {pid}: the kernel refused /proc/{pid}/root: doctor runs as root but without "
            f"CAP_SYS_PTRACE (containers drop it){more}; run doctor with CAP_SYS_PTRACE or on "
            "the host."
        )
    return NotPermitted(
        f"--pid {pid}: the kernel refused /proc/{pid}/root although doctor runs as root with "
        f"CAP_SYS_PTRACE: a security module (Landlock, AppArmor, SELinux, a BPF LSM) keeps "
        f"this process from inspecting PID {pid}; run doctor outside that confinement."
    )


def read_daemon(pid: int) -> DaemonFacts:
    """Everything doctor reads from /proc/PID (never entering the daemon's namespaces)."""
    from jailshim.verify.libfind import cached_type, for_pid

    base = f"/proc/{pid}"
    status: dict[str, str] = {}
    text = ""
    try:
        with open(f"{base}/status", encoding="utf-8") as f:
            text = f.read()
        status = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        root = os.readlink(f"{base}/root")
        cwd = os.readlink(f"{base}/cwd")
    except FileNotFoundError:
        raise _gone(pid, status) from None
    except PermissionError:
        raise _refused(pid) from None
    fds = []
    try:
        for fd in os.listdir(f"{base}/fd"):
            mode, rdev, _ = cached_type(f"{base}/fd/{fd}")
            if stat.S_ISCHR(mode) and rdev in _ENTROPY_RDEVS:
                numbers = f"{os.major(rdev)}:{os.minor(rdev)}"
                fds.append(f"fd {fd} -> {_ENTROPY_RDEVS[rdev]} ({numbers})")
    except OSError:
        pass
    crypto, note = for_pid(pid)
    return DaemonFacts(
        jail_mounts=_jail_mounts(pid, root),
        pid=pid,
        name=status.get("Name", ""),
        root=root,
        cwd=cwd,
        uid=int(status["Uid"].split()[1]),
        gid=int(status["Gid"].split()[1]),
        groups=tuple(int(g) for g in status.get("Groups", "").split()),
        seccomp=status.get("Seccomp", "0").strip() != "0",
        open_entropy_fds=tuple(sorted(fds)),
        crypto=tuple(crypto),
        crypto_note=note,
        status_text=text,
    )


def after_prepare(libs: tuple[CryptoLib, ...]) -> str:
    """Pure: what happens once the jail is fixed, per library (cryptolib.recovery, the table
    `explain` uses too); unknown libraries: what holds for each family."""
    if not libs:
        return (
            "takes effect at once for a daemon on OpenSSL 1.1.1 or later or on GnuTLS: they "
            "reopen the node at their next reseed; restart one on any other library"
        )
    seen = [recovery(lib.family, lib.version) for lib in libs]
    why = "; ".join(dict.fromkeys(r.why for r in seen))
    if any(r.restart for r in seen):
        return f"then restart the daemon: {why}"
    return f"takes effect at once, no restart needed: {why}"


class Diagnosis(NamedTuple):
    """One daemon's (or jail's) verdict: its worst library's, or a failing check's."""

    verdict: Verdict  # errors.VERDICT_ERRORS maps it to the exit code
    words: str


def _hints(facts: EntropyFacts, libs: tuple[ProbeLibrary, ...]) -> str:
    """What to rerun with, for a "cannot tell": the facts that were missing."""
    hints = []
    if facts.getrandom is Getrandom.UNKNOWN:
        hints.append(
            "rerun with --read-filter to read the daemon's seccomp filters (a ptrace stop of "
            "microseconds; needs CAP_SYS_ADMIN)"
        )
    if not libs or any(library_of(lib.family, lib.version) is Library.UNKNOWN for lib in libs):
        hints.append("name its crypto library with --crypto-lib PATH")
    if facts.marker is None or facts.kernel is None:
        hints.append(
            "run doctor with the powers to join its IPC namespace and read its /proc entries "
            "(root, CAP_SYS_ADMIN, on the host)"
        )
    return "; ".join(hints)


def verdict(
    decisions: list[Decision],
    facts: EntropyFacts,
    libs: tuple[ProbeLibrary, ...],
    broken: list[Finding],
    fix: str,
    *,
    after: str = "",
) -> Diagnosis:
    """Pure: the verdict line from each library's decision (verdict.decide, the worst one
    stated) and the checks that failed for another reason (a privilege drop, a wrong node)."""
    from jailshim.verify.entropy import remedy_words, sentence, worst

    decision = worst(decisions)
    words = sentence(decision)
    if decision.verdict is Verdict.CANNOT_TELL:
        hints = _hints(facts, libs)
        words += f". {hints[0].upper()}{hints[1:]}" if hints else ""
    elif decision.verdict is not Verdict.SAFE:
        remedy = remedy_words(decision, prepare=fix, running=facts.running, after_prepare=after)
        words += f". Fix: {remedy}"
    if broken and decision.verdict in (Verdict.SAFE, Verdict.CANNOT_TELL):
        first = broken[0]
        more = f" (and {len(broken) - 1} more failing)" if len(broken) > 1 else ""
        return Diagnosis(
            Verdict.WILL_FAIL,
            f"not safe: {first.check}: {first.detail.rstrip('.')}{more}. Fix: "
            f"{first.remedy or fix}; entropy: {words}",
        )
    if decision.verdict is Verdict.SAFE:
        words += "; no action needed"
    return Diagnosis(decision.verdict, words)


def _user_word(uid: int) -> str:
    """How `--user` should say ``uid``: its name, else the number (+N if N is also a name)."""
    import pwd

    name = _user_name(uid)
    if name != str(uid):
        return name
    try:
        pwd.getpwnam(name)
    except KeyError:
        return name
    return f"+{uid}"  # a user *named* "{uid}" exists: the + keeps it a UID (chown's rule)


def chrooted_children(pid: int) -> tuple[int, ...]:
    """The children of ``pid`` whose root is not "/" (a master's chrooted workers), in PID
    order; () when there are none or /proc cannot say."""
    found = []
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return ()
    for name in entries:
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # the name may hold ") "
            if int(fields[1]) == pid and os.readlink(f"/proc/{name}/root") != "/":
                found.append(int(name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return tuple(sorted(found))


def _on_terminal() -> bool:
    """A person reads stdout (issue 26): each daemon's table, then one verdict line, and the
    log events (doctor.workers, doctor.daemon, doctor.verdict, failed) drop to debug; on a
    terminal they were timestamped key=value lines around the table, and the verdict of a
    failing daemon showed only as `[error] failed error=…`. Machines (no TTY) get every event."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # no stdout, or closed
        return False


def expand_pids(pids: tuple[int, ...], log: Logger) -> tuple[int, ...]:
    """The PIDs to inspect: each given one, except that a PID which is not chrooted but has
    chrooted children (haproxy -W/-Ws: the master stays outside the jail, its workers chroot)
    stands for those children, which is said. Order kept, no repeats."""
    return tuple(_workers_of(pids, log))


def _workers_of(pids: tuple[int, ...], log: Logger) -> dict[int, int | None]:
    """expand_pids with each inspected PID's master (None: it was given itself)."""
    result: dict[int, int | None] = {}
    for pid in pids:
        try:
            root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            root = ""  # read_daemon says why, in its own words
        children = chrooted_children(pid) if root == "/" else ()
        if children:
            log.log(
                DEBUG if _on_terminal() else INFO,  # on a terminal each table's heading says it
                "doctor.workers",
                pid=pid,
                workers=list(children),
                detail=f"PID {pid} is not chrooted but its children "
                f"{', '.join(map(str, children))} are (a master and its workers): inspecting "
                "those",
            )
        for found in children or (pid,):
            result.setdefault(found, pid if children else None)
    return result


def doctor(
    pids: tuple[int, ...] | None,
    chroot: str | None,
    identity: Identity | None,
    devices: tuple[Device, ...],
    log: Logger,
    *,
    crypto_libs: tuple[str, ...] = (),
    read_filter: bool = False,
) -> int:
    """Diagnose the daemons ``pids`` (each one's jail and user from /proc; a master stands for
    its chrooted workers) or the jail ``chroot`` as ``identity``; 0 when all are safe, else
    the error errors.VERDICT_ERRORS gives the worst verdict (each PID's words, when there are
    several). ``read_filter``: read a daemon's seccomp filters (a brief ptrace stop)."""
    results: list[tuple[str, Diagnosis]] = []
    if pids:
        targets = _workers_of(pids, log)
        for pid, master in targets.items():
            facts = read_daemon(pid)
            found = _diagnose(
                facts,
                "",
                None,
                devices,
                log,
                crypto_libs=crypto_libs,
                read_filter=read_filter,
                master=master,
            )
            results.append((f"PID {pid}: " if len(targets) > 1 else "", found))
    else:
        if chroot is None:
            raise UsageError("jailshim doctor needs --pid PID or --chroot DIR.")
        if not os.path.isdir(chroot):
            raise ConfigError(f"The jail {chroot} does not exist or is not a directory.")
        results.append(
            ("", _diagnose(None, chroot, identity, devices, log, crypto_libs=crypto_libs))
        )
    from jailshim.verify.entropy import worst_verdict

    verdicts = [found.verdict for _, found in results]
    error = VERDICT_ERRORS[worst_verdict(verdicts)]
    if error is None:
        return 0
    said = [f"{who}{found.words}" for who, found in results if found.verdict is not Verdict.SAFE]
    failure = error(" ".join(said))
    if _on_terminal():  # each verdict line is on screen: the exit code, not a `failed` event
        log.debug("failed", error=failure.sentence, exit_code=exit_code_for(failure))
        return exit_code_for(failure)
    raise failure


def _daemon_rows(
    facts: DaemonFacts, entropy: DaemonEntropy, libs: tuple[CryptoLib, ...], note: str
) -> list[Finding]:
    """The daemon's own entropy facts, each a row that says it is the daemon's."""
    getrandom = entropy.getrandom
    kernel = entropy.kernel
    marker = {
        True: "present in its IPC namespace (OpenSSL >= 1.1.1d reads the devices when "
        "getrandom() fails)",
        False: "absent from its IPC namespace",
        None: "unknown: its IPC namespace could not be joined",
    }[entropy.marker]
    seen = (
        "unknown"
        if kernel is None
        else "2.6, as it sees it (personality UNAME26: setarch --uname-2.6)"
        if kernel == (2, 6)
        else f"{kernel[0]}.{kernel[1]}, as it sees it"
    )
    fds = ", ".join(facts.open_entropy_fds) or "none open"
    named = ", ".join(lib.label for lib in libs) or f"none identified ({note})"
    return [
        Finding(
            "getrandom()",
            True,
            f"{getrandom}: {entropy.getrandom_why}",
            warning=getrandom is not Getrandom.WORKS,
            whose="daemon",
        ),
        Finding("shm marker", True, marker, warning=entropy.marker is None, whose="daemon"),
        Finding("kernel", True, seen, warning=kernel is None, whose="daemon"),
        Finding("device fds", True, fds, whose="daemon"),
        Finding("libraries", True, named, warning=not libs, whose="daemon"),
    ]


def _as_evidence(findings: list[Finding]) -> list[Finding]:
    """jailshim's probe rows in doctor: evidence, said to be the probe's. Its getrandom() is
    doctor's, not the daemon's (issue 23: "✓ getrandom() usable" of a daemon whose filter
    denied it), and its reseed closes the library's kept fds first: a failure there is what
    happens once the daemon reopens the device, which the verdict weighs, not a verdict."""
    return [_evidence(f) for f in findings]


def _evidence(f: Finding) -> Finding:
    if f.check in ("getrandom()", "kernel RNG"):
        return f._replace(
            check=f"{f.check} (probe)" if f.check == "getrandom()" else f.check,
            detail=f"in jailshim's probe, not the daemon: {f.detail}",
        )
    if f.check.endswith(" reseed") and not f.ok:
        return f._replace(
            ok=True,
            warning=True,
            remedy="",
            detail=f"{f.detail.rstrip('.')} (in jailshim's probe, which closes the library's "
            "kept fds first: what the daemon meets once it opens the device in its jail; the "
            "entropy row weighs it)",
        )
    return f


def _diagnose(
    facts: DaemonFacts | None,
    chroot: str,
    identity: Identity | None,
    devices: tuple[Device, ...],
    log: Logger,
    *,
    crypto_libs: tuple[str, ...] = (),
    read_filter: bool = False,
    master: int | None = None,
    show: bool = True,
) -> Diagnosis:
    """One daemon (``facts``; ``master``: the PID it was found under) or one jail: its
    findings and verdict logged, or on a terminal shown (``show``: doctor --all shows its own
    table, one row per daemon)."""
    from jailshim.verify.entropy import (
        ProbeLibrary,
        after_row,
        getrandom_of,
        judge_entropy,
    )

    if facts is not None:
        jail = f"/proc/{facts.pid}/root"
        jail_name = facts.root
        user = _user_word(facts.uid)
        identity = Identity(
            _user_name(facts.uid), facts.uid, facts.gid, facts.groups or (facts.gid,)
        )
        log.log(
            DEBUG if _on_terminal() else INFO,  # on a terminal the table's heading says it
            "doctor.daemon",
            pid=facts.pid,
            name=facts.name,
            root=facts.root,
            cwd=facts.cwd,
            uid=facts.uid,
            user=identity.name,
            gid=facts.gid,
            seccomp=facts.seccomp,
            open_entropy_fds=list(facts.open_entropy_fds),
            libraries=list(facts.libraries),
            jail_mounts=list(facts.jail_mounts),
        )
    else:
        jail = jail_name = chroot
        user = identity.name if identity is not None else "USER"
    pid = {} if facts is None else {"pid": facts.pid}
    libs, missing = _libraries(facts, crypto_libs)
    crypto = CryptoSource(libs=libs, missing=missing)
    chrooted = facts is None or facts.root != "/"
    findings, probed = run_probe(jail, identity, devices, crypto) if chrooted else ([], None)
    fix = f"`jailshim prepare --chroot {jail_name} --user {user}`"
    if facts is not None and _other_mount_namespace(facts.pid):
        fix += (
            " (for the next container start make jailshim the ENTRYPOINT; without CAP_MKNOD, "
            "add --cap-add=SYS_ADMIN so it can bind the nodes)"
        )
    # the libraries, with the versions the probe measured (GnuTLS says its own)
    known = probed.libraries if probed is not None else ()
    if not known:
        known = tuple(ProbeLibrary(lib.family, lib.version, "") for lib in libs)
    nodes = (probed.urandom if probed is not None else None) if chrooted else True
    absent = probed.absent if probed is not None else ()
    if facts is not None:
        from jailshim.verify.daemon_entropy import daemon_entropy

        entropy = daemon_entropy(facts.pid, facts.status_text, read_filter=read_filter)
        asked = EntropyFacts(
            library=Library.UNKNOWN,
            getrandom=entropy.getrandom,
            kernel=entropy.kernel,
            marker=entropy.marker,
            kept_fd=bool(facts.open_entropy_fds),
            nodes=nodes,
            running=True,
        )
        rows = _daemon_rows(facts, entropy, libs, facts.crypto_note or missing)
        findings = rows + _as_evidence(findings)
    else:  # a jail and no daemon: the probe's facts stand for a daemon about to start there
        asked = EntropyFacts(
            library=Library.UNKNOWN,
            getrandom=getrandom_of(probed.getrandom_errno) if probed else Getrandom.UNKNOWN,
            kernel=probed.kernel if probed else None,
            marker=probed.marker if probed else None,
            kept_fd=None,
            nodes=nodes,
            running=False,
        )
    judged, verdict_rows, decisions = judge_entropy(
        findings,
        asked,
        known,
        absent=absent,
        fails=frozenset({Verdict.WILL_FAIL, Verdict.FRAGILE}),
        prepare=fix,
        whose="daemon" if facts is not None else "probe",
        after_prepare=after_prepare(libs),
    )
    findings = after_row(
        judged, "crypto library" if facts is not None else "getrandom()", verdict_rows
    )
    broken = [f for f in findings if not f.ok and not f.check.startswith("entropy")]
    found = verdict(decisions, asked, known, broken, fix, after=after_prepare(libs))
    heading = [] if facts is None else [_heading(facts, user, master)]
    _tell(findings, found, log, table=show and _on_terminal(), heading=heading, **pid)
    return found


def _libraries(
    facts: DaemonFacts | None, crypto_libs: tuple[str, ...]
) -> tuple[tuple[CryptoLib, ...], str]:
    """The crypto libraries to probe (--crypto-lib's, else the daemon's own), and why there
    are none when a daemon's could not be found ('' otherwise)."""
    libs: tuple[CryptoLib, ...] = ()
    if crypto_libs:
        from jailshim.verify.libfind import for_paths

        libs = tuple(for_paths(crypto_libs))
    elif facts is not None:
        libs = facts.crypto
    missing = ""
    if facts is not None and not crypto_libs and not libs:
        missing = f"{facts.crypto_note}; --crypto-lib PATH names a library to probe"
    return libs, missing


def _tell(
    findings: list[Finding],
    found: Diagnosis,
    log: Logger,
    *,
    table: bool,
    heading: list[str],
    **pid: int,
) -> None:
    """The findings and the verdict: as check.report does, with the table on screen (under
    ``heading``, if any) each is said once (their events drop to debug); machines get every
    finding as a JSON event."""
    log_findings(findings, log, table=table, **pid)
    if table:
        shown = [render_table(findings)] if findings else []
        sys.stdout.write("\n".join([*heading, *shown, verdict_lines(found)]) + "\n")
    safe = found.verdict is Verdict.SAFE
    level = DEBUG if table else INFO if safe else ERROR
    extra = {} if safe else {"outcome": str(found.verdict)}
    log.log(level, "doctor.verdict", safe=safe, verdict=found.words, **extra, **pid)


def _heading(facts: DaemonFacts, user: str, master: int | None) -> str:
    """What doctor.daemon says, for a person: which process, where, as whom."""
    under = f", a worker of PID {master} (not chrooted itself)" if master is not None else ""
    return f"PID {facts.pid} {facts.name}{under}: jail {facts.root}, user {user}"


_MARKS = {Verdict.SAFE: "✓", Verdict.CANNOT_TELL: "!"}


def verdict_lines(found: Diagnosis) -> str:
    """The verdict under the table: one line, and the fix on its own line when there is one."""
    head, _, fix = found.words.partition(". Fix: ")
    mark = _MARKS.get(found.verdict, "✗")
    return f"{mark} verdict: {head}" + (f"\n  Fix: {fix}" if fix else "")
