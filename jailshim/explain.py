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
    # --- daemons' own lines (issue 30): each quoted from the source file cited ---------------
    _sig(
        "PowerDNS: cannot open its random source",
        # 3.x-4.1, pdns/randomhelper.cc seedRandom: "Unable to open source of random '%s': %s"
        # (or "Unable to read random seed from %s: …"), exit(1), after the normal line "Reading
        # random entropy from '/dev/urandom'". 4.2-4.8 (rec 4.2-4.9), pdns/dns_random.cc
        # dns_random_setup: throw runtime_error("Cannot open " + rdev + ": " + stringerror());
        # auth aborts ("terminate called … what():  Cannot open …"), the recursor logs
        # msg="Fatal error" error="Cannot open …" (both measured with Debian's 4.7.3 / 4.8.8).
        r"Unable to open source of random '|Unable to read random seed from |"
        r"Cannot open \S*random\S*: |getrandom\(\) failed: [^\n]*falling back to",
        "PowerDNS (auth and recursor) opens its entropy source (`entropy-source=`, default "
        "/dev/urandom) once at start, before it chroots, and keeps it open: its own `chroot=` "
        "jail needs no device for this. So the path was missing in the root pdns was started "
        "in (pdns run inside a jail or minimal image without /dev, or `entropy-source=` names "
        "a file that is not there). Up to 4.1 it reads the source always and exits; auth "
        "4.2-4.8 and recursor 4.2-4.9 open it only with `rng=urandom`/`kiss`, or when "
        "getrandom() fails (a seccomp filter: "
        '"getrandom() failed: …, falling back to /dev/urandom"), and abort. Auth 4.9 and '
        "recursor 5.0 use arc4random (getrandom()) and print neither.",
        "Fix: make the path exist in the root pdns starts in — where pdns is itself started "
        "inside a jail, `jailshim prepare --chroot THAT_ROOT --user USER` makes dev/urandom "
        "there — or correct `entropy-source=`; from 4.2, `rng=auto` (the default) uses "
        "getrandom() where no filter denies it. Then start pdns again: it has exited.",
    ),
    _sig(
        "sshd: bad ownership or modes for chroot directory",
        # openssh session.c safely_chroot: fatal("bad ownership or modes for chroot directory
        # %s\"%s\"", cp == NULL ? "" : "component ", component) when st_uid != 0 or mode & 022
        r"bad ownership or modes for chroot directory",
        "sshd checks every component of ChrootDirectory (session.c safely_chroot) after the "
        "user has authenticated: each must be a directory owned by root and not writable by "
        "group or others, or the session ends (the client just sees the connection close). "
        '"component" means a parent of the jail is at fault, not the jail itself. The check '
        "is unconditional (StrictModes does not turn it off).",
        "Fix: for the path named and every directory above it, `chown root` and "
        "`chmod go-w`; give the user a writable subdirectory inside the jail (e.g. "
        "JAIL/upload owned by the user) instead of a writable jail. `sshd -T -C "
        "user=USER,host=HOST,addr=ADDR` shows which ChrootDirectory applies. No jailshim "
        "command changes this: the ownership is sshd's rule, not a missing device.",
    ),
    _sig(
        "vsftpd: secure_chroot_dir not found",
        # vsftpd twoprocess.c drop_all_privs: lstat() fails ->
        # die2("vsftpd: not found: directory given in 'secure_chroot_dir':", dir), sent to the
        # client as "500 OOPS: …" (and logged)
        r"not found: directory given in 'secure_chroot_dir'",
        "Each connection's pre-login process chroots into secure_chroot_dir (Debian: "
        "/var/run/vsftpd/empty) and vsftpd lstat()s it first; it is missing, so every "
        "connection gets this 500 OOPS while the listener itself runs on. Typical in a "
        "container or after a reboot: /run is empty and nothing (systemd-tmpfiles, Debian's "
        "unit's ExecStartPre) created it.",
        "Fix: create it root-owned and not writable by others (`mkdir -p -m 0755 DIR`) before "
        "vsftpd starts — in a container's entrypoint, or RuntimeDirectory= in a unit. Starting "
        "it as `jailshim run -- vsftpd CONFIG` prepares that jail and refuses at once (78, "
        "naming the directory) when it is missing, instead of failing each connection.",
    ),
    _sig(
        "vsftpd: refusing to run with writable root inside chroot()",
        # vsftpd secutil.c vsf_secutil_change_credentials: after chroot and setuid,
        # if (vsf_sysutil_write_access("/")) die("vsftpd: refusing to run with writable root
        # inside chroot()") unless allow_writeable_chroot
        r"refusing to run with writable root inside chroot",
        "After chroot() and dropping to the user, vsftpd (secutil.c) refuses a root that user "
        "can write. The root is the logged-in user's: their home with "
        "chroot_local_user=YES (or chroot_list), anon_root for anonymous logins (as user ftp), "
        "or secure_chroot_dir for the pre-login process (as nopriv_user).",
        "Fix: take the user's write permission off that directory (`chmod a-w DIR`, or make "
        "it root-owned) and give uploads a writable subdirectory inside it; or set "
        "allow_writeable_chroot=YES (Debian's 3.0.3 has it) if a writable root is what you want. A "
        "jailshim jail does not change this: it is the user's own root, not a missing device.",
    ),
    _sig(
        "postfix: no entropy for TLS key generation",
        # postfix src/tls/tls_server.c tls_server_init (and tls_client.c tls_client_init):
        # if (tls_ext_seed(var_tls_daemon_rand_bytes) < 0) msg_warn("no entropy for TLS key
        # generation: disabling TLS support"); tls_seed.c: tls_ext_seed asks tlsmgr(8)
        r"no entropy for TLS key generation",
        "smtpd/smtp (chrooted in the queue directory) ask tlsmgr(8) for seed bytes over "
        "private/tlsmgr (tls_seed.c tls_ext_seed); the request failed, so this process runs "
        "without TLS. tlsmgr is not in master.cf, not running, or not reachable — the "
        'warnings just before it name the socket and error ("connect to private/tlsmgr: '
        '…", "problem talking to server private/tlsmgr"). Not a device in the jail: tlsmgr '
        "opens tls_random_source before it chroots (tlsmgr.c tlsmgr_pre_init).",
        "Fix: make tlsmgr run — master.cf needs Debian's line `tlsmgr unix - - y 1000? 1 "
        "tlsmgr`, then `postfix reload` — and fix the error the preceding warnings name. "
        "A dev/urandom in the queue directory does not help here.",
    ),
    _sig(
        "BIND (9.12 and older): could not open entropy source",
        # bind9 bin/named/server.c (up to 9.12): "could not open entropy source %s: %s"
        # (isc_entropy_createfilesource failed for random-device); isc_entropy was removed in
        # 9.13.0 (commit 3a4f820), so 9.16/9.18 never print it. Case-sensitive: Rust's
        # getrandom users panic with "Could not open entropy source!".
        r"(?-i:could not open entropy source) \S+: ",
        "named up to BIND 9.12 opens `random-device` (default /dev/random) when it loads its "
        "config, which with `-t` happens after chroot: the path is resolved inside the jail, "
        'which has no dev/random. It then uses a device it opened before chroot ("using '
        'pre-chroot entropy source") where it has one; without it, what needs random data '
        '(DNSSEC signing, TKEY) can fail "out of entropy". BIND 9.13 and later (9.16, 9.18) '
        "take random numbers from the crypto library and no longer print this line.",
        "Fix: `jailshim prepare --chroot JAIL --user bind` (or `jailshim run -- named -t JAIL "
        "…`) makes dev/random and dev/urandom in the jail; then `rndc reload`. On 9.13 and "
        "later this line does not occur: look for the crypto library's error instead.",
    ),
    _sig(
        "OpenSSL 1.0.x/1.1.0: PRNG not seeded",
        # OpenSSL 1.0.x crypto/rand/md_rand.c ssleay_rand_bytes:
        # RANDerr(RAND_F_SSLEAY_RAND_BYTES, RAND_R_PRNG_NOT_SEEDED) ("SSLEAY_RAND_BYTES",
        # "PRNG not seeded", rand_err.c; error:24064064); 1.1.0 the same as RAND_bytes
        r"PRNG not seeded",
        "OpenSSL before 1.1.1 (md_rand.c) polls the system once, at its first RAND_bytes() "
        "(RAND_poll: /dev/urandom, /dev/random, /dev/srandom, EGD sockets; no getrandom()). "
        "A daemon that first asks for random bytes after chroot finds none of them in the "
        "jail, and the pool stays unseeded: every later call fails, because it never polls "
        "again.",
        "Fix: run `jailshim prepare --chroot JAIL --user USER` (or `jailshim run -- DAEMON …` "
        "as the entrypoint) so dev/urandom and dev/random exist in the jail, then restart the "
        "daemon: this OpenSSL never polls again by itself. `jailshim doctor --pid PID` checks "
        "a running one.",
    ),
    _sig(
        "glibc: libgcc_s.so.1 loaded after chroot, missing in the jail",
        # glibc 2.34+ nptl/pthread_exit.c __pthread_exit and nptl/pthread_cancel.c:
        # __libc_fatal(LIBGCC_S_SO " must be installed for pthread_exit to work\n") / "… for
        # pthread_cancel to work", when misc/unwind-link.c __libc_unwind_link_get's
        # __libc_dlopen(LIBGCC_S_SO) fails; up to 2.33 sysdeps/nptl/unwind-forcedunwind.c
        # pthread_cancel_init said "pthread_cancel" for pthread_exit too; since 2.27
        # unwind-resume.c (_Unwind_Resume) "… for unwinding to work". Then abort().
        r"libgcc_s\.so\.\d+ must be installed for (pthread_exit|pthread_cancel|unwinding) to work",
        "glibc loads libgcc_s.so.1 (the unwinder) lazily, with dlopen(), the first time a thread "
        "ends with pthread_exit(), is cancelled, or unwinds — not at start. A daemon that has "
        "chrooted by then (ntpd's DNS thread, any threaded daemon) looks for it inside the "
        "jail, where there is no etc/ld.so.cache and the loader searches only its own "
        "directories (Debian: lib/x86_64-linux-gnu, usr/lib/x86_64-linux-gnu, lib, usr/lib — "
        "not lib64); it is in none of them, so glibc prints this and aborts the whole "
        'process. glibc up to 2.33 says "pthread_cancel" for pthread_exit() too.',
        "Fix: put the host's library at the same path in the jail: `jailshim run -- ntpd …` "
        "does it for ntpd by itself; for another daemon add `--file "
        "/lib/x86_64-linux-gnu/libgcc_s.so.1` to `jailshim run` or `jailshim prepare` (the "
        "loader's first directory in the jail; `jailshim teardown` takes it back). A copy in "
        "lib64 is never found.",
    ),
    _sig(
        "ntpsec: NTS certificate or key could not be loaded after the chroot",
        # ntpsec 1.2.2 ntpd/nts.c nts_init2 (after sandbox(): chroot and setuid):
        # msyslog(LOG_ERR, "NTS: troubles during init2.  Bailing."); exit(1) — only when
        # nts_server_init2 → nts.c nts_load_certificate fails ("NTSs: can't stat certificate
        # (chain) from …", "can't load certificate (chain) from …", "can't load private key
        # from …", "Private Key doesn't work"); nts_cookie_init2 always succeeds. nts_init
        # (before the chroot) says "troubles during init." instead.
        r"NTS: troubles during init2\.",
        "ntpd with `nts enable` loads its NTS certificate and key (`nts cert`/`nts key`, "
        "Debian's /etc/ntpsec/cert-chain.pem and /etc/ntpsec/key.pem) after it has chrooted "
        "(-i) and dropped to its user (-u): so from inside the jail, as that user. The "
        '"NTSs:" line just before says which failed: can\'t stat (the file is not in the '
        "jail at that path), can't load the private key (not readable by ntpd's user — a key "
        "only root may read — or not PEM), or the key does not match the certificate. ntpd "
        "exits.",
        "Fix: copy the certificate and key to the same paths inside the jail, the key readable "
        "by ntpd's user (`chown ntpsec` or group ntpsec, mode 0640), and check they belong "
        "together (`openssl x509 -noout -pubkey -in CERT` equals `openssl pkey -pubout -in "
        "KEY`). `jailshim run -- ntpd … -i JAIL` refuses (78) a jail without them, naming the "
        "file, before ntpd starts.",
    ),
    _sig(
        "unbound container image: cp cannot create the jail's device nodes",
        # MatthewVance/unbound-docker data/unbound.sh: `mkdir -p /opt/unbound/etc/unbound/dev &&
        # cp -a /dev/random /dev/urandom /dev/null /opt/unbound/etc/unbound/dev/` (no set -e,
        # so unbound starts anyway); GNU cp: "cannot create special file %s"
        r"cannot create special file [^\n]*dev/[^\n]*Operation not permitted",
        "The image's entrypoint copies /dev/random, /dev/urandom and /dev/null into unbound's "
        "chroot with `cp -a`, which makes new device nodes with mknod(); the kernel refuses "
        "(EPERM) without CAP_MKNOD — the runtime dropped it, or rootless podman/a user "
        "namespace, where mknod is never allowed. The script goes on and unbound starts with "
        "an empty dev/ in its jail: harmless while getrandom() works; where a filter denies "
        "it, a library that falls back to the device finds none.",
        "Fix: replace the cp line with `jailshim prepare --chroot /opt/unbound/etc/unbound "
        "--user _unbound`: where mknod is refused it bind-mounts the host's nodes (needs "
        "CAP_SYS_ADMIN over its mount namespace: `--cap-add=SYS_ADMIN`, rootless podman too), "
        "and exits 77 naming the missing capability when neither works. Or allow mknod "
        "(`--cap-add=MKNOD`, rootful only).",
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
            "no known signature: jailshim recognises entropy failures (OpenSSL 1.0-3, GnuTLS, "
            "Python, PowerDNS, BIND up to 9.12, postfix's TLS seed), syslog sockets missing in "
            "a jail, haproxy bind failures, a chrooted postfix without its resolver files, "
            "sshd's and vsftpd's chroot refusals (ownership, a writable root, a missing "
            "secure_chroot_dir), device nodes cp could not create (unbound's image), "
            "libgcc_s.so.1 missing in a jail (pthread_exit) and ntpd's NTS certificate or "
            "key after its chroot.\n"
        )
        return 1
    for sig, line in matches:
        out.write(f"* {sig.name}\n  seen:  {line[:300]}\n  cause: {sig.cause}\n  {sig.fix}\n\n")
    return 0
