"""`jailshim explain [FILE]`: recognise the error lines people paste, say the cause and the fix.

The original report took days: the only clue was "SSL_new: malloc failure". Every signature
lives in SIGNATURES, one row each; add a row to teach jailshim a new one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import NamedTuple, TextIO

from jailshim.verify.cryptolib import GNUTLS, OPENSSL, recovery
from jailshim.verify.verdict import EntropyFacts, Getrandom, Library, decide

__all__ = ["SIGNATURES", "Signature", "explain", "match"]

_PREPARE = (
    "Fix: run `jailshim prepare --chroot JAIL --user USER` (or `jailshim run -- DAEMON …` as "
    "the entrypoint) so dev/urandom and dev/random exist in the jail, then restart the daemon; "
    "`jailshim doctor --pid PID` checks a running one."
)


def _after(family: str, version: str) -> str:
    """The fix for a library's entropy failure; whether to restart comes from the table doctor
    uses too (cryptolib.recovery), so the two never disagree."""
    then = recovery(family, version)
    step = (
        f"then restart the daemon: {then.why}" if then.restart else f"no restart needed: {then.why}"
    )
    return (
        "Fix: run `jailshim prepare --chroot JAIL --user USER` (or `jailshim run -- DAEMON …` as "
        f"the entrypoint) so dev/urandom and dev/random exist in the jail; {step}. "
        "`jailshim doctor --pid PID` checks a running one."
    )


def _filter_fix(family: str, version: str) -> str:
    """The fix where the cause may be a seccomp filter rather than the jail (both are said:
    explain sees an error line, not the daemon's filter, marker or kernel)."""
    return (
        "Fix: if the daemon runs under a seccomp filter that denies getrandom() (systemd's "
        "SystemCallFilter=/SystemCallErrorNumber=, a container runtime's seccomp profile) and "
        "has no marker, allow getrandom() in it and restart the daemon: no jail helps. "
        "Otherwise: "
        + _after(family, version)
        .removeprefix("Fix: ")
        .replace(
            "`jailshim doctor --pid PID` checks a running one.",
            "`jailshim doctor --pid PID --read-filter` checks a running one and says which.",
        )
    )


def _table_says(library: Library) -> str:
    """What the one table (verify/verdict.py) says for ``library`` when getrandom() is denied
    to it on a modern kernel, without and with OpenSSL's marker, in a jail without devices:
    explain's causes use its words, so they never disagree with check and doctor."""
    facts = EntropyFacts(
        library, Getrandom.ENOSYS, kernel=(6, 1), marker=False, kept_fd=False, nodes=False,
        running=True,
    )  # fmt: skip
    without, marked = decide(facts), decide(facts._replace(marker=True))
    if without == marked:
        return f"when {without.why} ({without.verdict} {without.when})."
    return (
        f"when {without.why} ({without.verdict} {without.when}: the filter is the cause); "
        f"with the marker, {marked.why} ({marked.verdict} {marked.when})."
    )


class Signature(NamedTuple):
    name: str
    pattern: re.Pattern[str]
    cause: str
    fix: str


def _sig(name: str, pattern: str, cause: str, fix: str = _PREPARE) -> Signature:
    return Signature(name, re.compile(pattern, re.IGNORECASE), cause, fix)


_WORKS = (
    "With getrandom() working it never opens a device, so a jail without dev/urandom is not "
    "the cause; "
)

SIGNATURES: tuple[Signature, ...] = (
    _sig(
        "OpenSSL 1.1.1: DRBG could not get entropy",
        r"RAND_DRBG_(instantiate|generate|reseed)[^\n]*(error retrieving entropy|in error state)",
        "OpenSSL 1.1.1's DRBG (re)seeds from getrandom(), the master after an hour. "
        + _WORKS
        + "it fails "
        + _table_says(Library.OPENSSL_111)
        + " Before 1.1.1d there is no marker test: it reads dev/urandom whenever getrandom() "
        "is denied. The DRBG stays in error state until its source works again.",
        _filter_fix(OPENSSL, "OpenSSL 1.1.1"),
    ),
    _sig(
        "OpenSSL 1.1.1: SSL_new malloc failure (really an entropy failure)",
        r"SSL_new[^\n]*malloc failure",
        "Not memory: SSL_new() fails this way when the random generator is in an error state: "
        "its getrandom() is denied and it could not read dev/urandom in the chroot, or (1.1.1d "
        "and later, kernel >= 4.8, no shm marker) would not read it at all.",
        _filter_fix(OPENSSL, "OpenSSL 1.1.1"),
    ),
    _sig(
        "OpenSSL 3: error retrieving entropy",
        r"^(?!.*RAND_DRBG)(.*(ossl_prov_drbg_\w+|error:1C8000BD|Provider routines|SSL handshake"
        r" failure)[^\n]*error retrieving entropy|.*error retrieving entropy)",
        "OpenSSL 3 seeds from getrandom(). "
        + _WORKS
        + "it fails "
        + _table_says(Library.OPENSSL_3)
        + ' Without the marker the daemon cannot even seed at start (haproxy: "unable to '
        'allocate SSL context"), even with /dev/urandom present.',
        _filter_fix(OPENSSL, "OpenSSL 3"),
    ),
    _sig(
        "GnuTLS: randomness device error",
        r"Error in the system's randomness device|GNUTLS_E_RANDOM_DEVICE_ERROR|"
        r"(error|code|returned)[^\n]*-342\b",
        "GnuTLS 3.7 chooses its source at load: getrandom(), else (any error but EAGAIN: a "
        "seccomp filter, an old kernel) /dev/urandom, which it opens at every reseed. "
        + _WORKS
        + "it fails "
        + _table_says(Library.GNUTLS),
        _after(GNUTLS, "GnuTLS 3.7"),
    ),
    _sig(
        "GnuTLS: failed to acquire random data",
        r"Failed to acquire random data|GNUTLS_E_RANDOM_FAILED|(error|code|returned)[^\n]*-206\b",
        "GnuTLS could not get random bytes: in a chroot, its getrandom() is denied and the jail "
        "has no usable dev/urandom (or the kernel RNG is not initialised yet).",
        _after(GNUTLS, "GnuTLS 3.7"),
    ),
    _sig(
        "Python: no /dev/urandom",
        r"/dev/urandom \(or equivalent\) not found",
        "os.urandom() reads /dev/urandom only when getrandom() is unusable (a seccomp filter, a "
        "kernel older than 3.17); the process had chrooted into a jail that has no dev/urandom.",
    ),
    _sig(
        "Syslog socket missing or unwritable inside the jail",
        r"(sendmsg|writev|send)[^\n]*logger[^\n]*(No such file or directory|Permission denied)",
        "The daemon logs to a unix socket path such as /dev/log; after chroot that path is "
        "resolved inside the jail, where the socket does not exist (or the daemon's user cannot "
        "write to it), so log lines are lost.",
        "Fix: let jailshim bind the host's socket into the jail — `jailshim run -- haproxy …` does "
        "it for haproxy's unix `log` targets, `--log-socket /dev/log` for any daemon — and make "
        "sure the host socket exists (rsyslog or journald's /dev/log).",
    ),
    _sig(
        "haproxy: cannot bind (address not available)",
        r"cannot bind socket[^\n]*(Cannot assign requested address|EADDRNOTAVAIL)",
        "The address haproxy binds is not assigned yet, or is an IPv6 address still in duplicate "
        "address detection (tentative) — common right after a container or host starts.",
        "Fix: start haproxy with `jailshim run -- haproxy …`, which waits until every bind "
        "address is usable (within --timeout) and says whether it is absent, tentative or "
        "dadfailed; or set net.ipv6.ip_nonlocal_bind=1.",
    ),
    _sig(
        "postfix: a chrooted smtpd cannot resolve names (Helo ... Host not found)",
        r"Helo command rejected: Host not found",
        "Debian's postfix runs smtpd chrooted in its queue directory (/var/spool/postfix); it "
        "reads etc/resolv.conf there, and Debian's start script copies it in. `postfix "
        "start-fg` (containers) skips that script, so the resolver asks 127.0.0.1:53 only and "
        "every HELO name that must be looked up is refused for now (450).",
        "Fix: start postfix with `jailshim run -- postfix start-fg`, which copies etc/resolv.conf, "
        "etc/hosts, etc/nsswitch.conf, etc/localtime and etc/services into the queue directory "
        "(or `jailshim prepare --chroot /var/spool/postfix --files resolver --files time --files "
        "services`); `jailshim check … --resolve NAME` proves a name resolves inside.",
    ),
)


def match(lines: Iterable[str]) -> list[tuple[Signature, str]]:
    """Each signature that matches some line, once, with the first line it matched."""
    found: dict[str, tuple[Signature, str]] = {}
    for line in lines:
        for sig in SIGNATURES:
            if sig.name not in found and sig.pattern.search(line):
                found[sig.name] = (sig, line.strip())
    return list(found.values())


def explain(stream: TextIO, out: TextIO | None = None) -> int:
    """Explain what ``stream`` holds (to ``out``, default stdout); 0 when something was
    recognised, 1 otherwise."""
    out = sys.stdout if out is None else out  # looked up now: cli may have replaced it
    matches = match(stream)
    if not matches:
        out.write(
            "no known signature: jailshim recognises entropy failures (OpenSSL, GnuTLS, Python), "
            "syslog sockets missing in a jail, haproxy bind failures, and a chrooted postfix "
            "without its resolver files.\n"
        )
        return 1
    for sig, line in matches:
        out.write(f"* {sig.name}\n  seen:  {line[:300]}\n  cause: {sig.cause}\n  {sig.fix}\n\n")
    return 0
