"""Will a chrooted daemon's crypto library find entropy? One pure table, from facts to verdict.

The jail's dev/urandom is not what decides it alone (issue 23): Debian's haproxy on OpenSSL 3
reseeds from getrandom() and never opens the device, so an empty jail is safe; under a seccomp
filter that denies getrandom(), OpenSSL >= 1.1.1d on a kernel >= 4.8 reads the devices only
when the SysV shm key 114 exists in its IPC namespace (wait_random_seeded(), rand_unix.c), so
a prepared jail does not save it and the fix is the filter. The verdict is a function of the
library, the kernel release as the library sees it, getrandom() as the daemon sees it, the
marker, the device fds it keeps, and the jail's nodes. doctor, check and run all ask
``decide``; docs/entropy-matrix.md has the measured truth the table is tested against.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

__all__ = [
    "Decision",
    "EntropyFacts",
    "Getrandom",
    "Library",
    "Remedy",
    "Verdict",
    "decide",
    "library_of",
]


class Library(StrEnum):
    OPENSSL_OLD = "OpenSSL < 1.1.1d"  # getrandom(), else the devices, with no marker test
    OPENSSL_111 = "OpenSSL 1.1.1d-1.1.1w"  # + wait_random_seeded(): marker or kernel < 4.8
    OPENSSL_3 = "OpenSSL 3"  # the same seeding code (providers/.../seeding/rand_unix.c)
    GNUTLS = "GnuTLS"
    LIBSODIUM = "libsodium"
    UNKNOWN = "an unknown library"  # statically linked, or none found


class Getrandom(StrEnum):
    """getrandom() as the daemon sees it (its seccomp filter), not as jailshim does."""

    WORKS = "works"
    ENOSYS = "ENOSYS"  # a filter answering ENOSYS (the usual), or a kernel < 3.17
    EPERM = "EPERM"
    OTHER = "another error"
    UNKNOWN = "unknown"  # a filter jailshim did not evaluate


class Verdict(StrEnum):
    SAFE = "safe"
    FRAGILE = "safe now, fragile"
    WILL_FAIL = "will fail"
    CANNOT_TELL = "cannot tell"


class Remedy(StrEnum):
    NONE = "none needed"
    PREPARE = "prepare the jail"
    PREPARE_AND_RESTART = "prepare the jail, then restart the daemon"
    ALLOW_GETRANDOM = "allow getrandom() in the seccomp filter"


class EntropyFacts(NamedTuple):
    """What is known where the daemon runs; None is "not known"."""

    library: Library
    getrandom: Getrandom
    kernel: tuple[int, int] | None = None  # the release the library reads from uname()
    marker: bool | None = None  # SysV shm key 114 in the daemon's IPC namespace
    kept_fd: bool | None = None  # a device fd opened before chroot and still open
    nodes: bool | None = None  # the jail's dev/urandom and dev/random work for its user
    running: bool = False  # doctor (a live daemon) rather than check/run (before it starts)


class Decision(NamedTuple):
    verdict: Verdict
    remedy: Remedy
    why: str  # one clause: the fact the verdict rests on
    when: str = ""  # WILL_FAIL: "at start" or "at its next reseed"
    breaks_if: str = ""  # FRAGILE: exactly what would break it


# Which getrandom() failures make a library turn to the devices; any other failure is final.
# Measured (docs/entropy-matrix.md): ENOSYS and EPERM alike for every library here. OpenSSL's
# syscall_random() (rand_unix.c) and libsodium's randombytes_sysrandom_init() take any error;
# GnuTLS 3.7.9's have_getrandom() (lib/nettle/sysrng-linux.c) any error but EAGAIN.
_FALLS_BACK_ON: dict[Library, frozenset[Getrandom]] = {
    library: frozenset({Getrandom.ENOSYS, Getrandom.EPERM, Getrandom.OTHER})
    for library in Library
    if library is not Library.UNKNOWN
}
# Libraries that reseed through a device fd kept from before chroot, and reopen the device
# when it is gone or replaced: a kept fd carries them only until then. GnuTLS opens and closes
# /dev/urandom at every read (_rnd_get_system_entropy_urandom), so no fd ever carries it.
# libsodium opens it once, in sodium_init(), and reads that fd until randombytes_close().
_REOPENS = frozenset({Library.OPENSSL_OLD, Library.OPENSSL_111, Library.OPENSSL_3})
_KEEPS_FD = _REOPENS | {Library.LIBSODIUM}
# Measured (tests/test_cryptolib.py): a DRBG in error state re-instantiates at its next
# generate (OpenSSL >= 1.1.1); GnuTLS keeps no error state. libsodium aborts the process.
_RECOVERS = frozenset({Library.OPENSSL_111, Library.OPENSSL_3, Library.GNUTLS})
_MODERN_KERNEL = (4, 8)  # DEVRANDOM_SAFE_KERNEL: from here on OpenSSL wants the marker


_ROWS = {"GnuTLS": Library.GNUTLS, "libsodium": Library.LIBSODIUM}  # families but OpenSSL


def library_of(family: str, version: str) -> Library:
    """The table's row for a crypto library found by cryptolib ("OpenSSL", "OpenSSL 1.1.1r")."""
    if family != "OpenSSL":
        return _ROWS.get(family, Library.UNKNOWN)
    import re

    found = re.search(r"(\d+)\.(\d+)\.(\d+)([a-z]*)", version)
    if not found:
        return Library.UNKNOWN
    numbers = tuple(int(n) for n in found.groups()[:3])
    letter = found.group(4)
    if numbers >= (3, 0, 0):
        return Library.OPENSSL_3
    if numbers == (1, 1, 1) and letter >= "d" and len(letter) == 1:
        return Library.OPENSSL_111
    return Library.OPENSSL_OLD


def _reads_devices(facts: EntropyFacts) -> bool | None:
    """Whether the library turns to the devices now that getrandom() fails for it."""
    if facts.getrandom not in _FALLS_BACK_ON[facts.library]:
        return False
    if facts.library in (Library.OPENSSL_111, Library.OPENSSL_3):
        # wait_random_seeded(): the marker, or a kernel older than 4.8, or nothing at all
        if facts.marker:
            return True
        if facts.kernel is not None and facts.kernel < _MODERN_KERNEL:
            return True
        if facts.marker is False and facts.kernel is not None:
            return False
        return None
    return True


def _unknown(what: str) -> Decision:
    return Decision(Verdict.CANNOT_TELL, Remedy.NONE, f"{what} is not known")


def decide(facts: EntropyFacts) -> Decision:
    """The verdict and the remedy that really fixes it (PURE)."""
    lib = facts.library
    if lib is Library.UNKNOWN:
        return _unknown_library(facts)
    if facts.getrandom is Getrandom.WORKS:
        return Decision(Verdict.SAFE, Remedy.NONE, f"{lib} reads getrandom(), which works")
    if facts.getrandom is Getrandom.UNKNOWN:
        return _under_unknown_filter(facts)
    denied = f"getrandom() fails with {facts.getrandom} for it"
    devices = _reads_devices(facts)
    if devices is False:
        return _no_fallback(facts, denied)
    if devices is None:
        return _unknown(
            f"{denied}; whether {lib} then reads the devices (the shm marker in its IPC "
            "namespace, the kernel release it sees)"
        )
    return _through_devices(facts, f"{denied}, so {lib} reads dev/urandom")


def _unknown_library(facts: EntropyFacts) -> Decision:
    """Which library the daemon uses is not known: safe only when every source works."""
    if facts.getrandom is Getrandom.WORKS and facts.nodes:
        return Decision(Verdict.SAFE, Remedy.NONE, "getrandom() works and the jail has its devices")
    return _unknown("which crypto library the daemon uses, and so which source it reads,")


def _under_unknown_filter(facts: EntropyFacts) -> Decision:
    """What getrandom() does for the daemon is not known: safe only when the library falls
    back to devices the jail has."""
    if facts.nodes and _reads_devices(facts._replace(getrandom=Getrandom.ENOSYS)) is True:
        return Decision(
            Verdict.SAFE, Remedy.NONE, f"{facts.library} has getrandom() or else the jail's devices"
        )
    return _unknown("what getrandom() does under the daemon's seccomp filter")


def _no_fallback(facts: EntropyFacts, denied: str) -> Decision:
    """getrandom() fails and the library does not turn to the devices: it will fail."""
    lib = facts.library
    if lib in (Library.OPENSSL_111, Library.OPENSSL_3) and facts.getrandom in (_FALLS_BACK_ON[lib]):
        why = (
            f"{denied}, and on a kernel >= 4.8 without the shm marker (key 114) {lib} "
            "never reads the devices"
        )
    else:
        why = f"{denied}, and {lib} does not turn to the devices on that error"
    when = "at its next reseed" if facts.running else "at start"
    return Decision(Verdict.WILL_FAIL, Remedy.ALLOW_GETRANDOM, why, when)


def _through_devices(facts: EntropyFacts, reads: str) -> Decision:
    """getrandom() fails and the library reads dev/urandom (``reads`` says so): the jail's
    node, or a device fd the library kept, decides."""
    lib = facts.library
    if facts.nodes:
        return Decision(Verdict.SAFE, Remedy.NONE, f"{reads}, and the jail has it")
    if facts.nodes is None:
        return _unknown(f"{reads}; whether the jail has it")
    remedy = Remedy.PREPARE if lib in _RECOVERS else Remedy.PREPARE_AND_RESTART
    failing = f"{reads} and the jail has none"
    if lib not in _KEEPS_FD or facts.kept_fd is False:
        return Decision(Verdict.WILL_FAIL, remedy, failing, "at its next reseed")
    if facts.kept_fd is None and facts.running:
        return _unknown(f"{failing}; whether it keeps a device fd")
    if facts.kept_fd and lib not in _REOPENS:
        return Decision(
            Verdict.SAFE, Remedy.NONE, f"{reads} through the fd it opened before chroot"
        )
    # A kept fd (seen in a live daemon, or the best case before it starts: the library seeded
    # before chroot, as haproxy's does) carries it only until the device is opened again; an
    # open fd is no proof either: OpenSSL 3.0.19 and 1.1.1b forget a device fd opened before
    # their RAND init, and leave it open (docs/entropy-matrix.md).
    kept = "through the fd it kept" if facts.kept_fd else "only through a device fd it opens"
    return Decision(
        Verdict.FRAGILE,
        remedy,
        f"{reads} {kept} before chroot, and the jail has none",
        breaks_if="the library opens the device inside the jail: seeded after chroot, a worker "
        "that closes its fds, RAND_keep_random_devices_open(0), randombytes_close(), a "
        "replaced device",
    )
