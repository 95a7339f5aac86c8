"""Which crypto libraries a daemon uses, and what a failed reseed means for each: pure decisions.

Facts come in as text (the dynamic loader's `--list` output, /proc/PID/maps lines, a
library's bytes); out come CryptoLib records, the probe each needs, and whether the daemon
recovers by itself once the jail is fixed. No syscalls here: libfind.py gathers the facts,
openssl.py and gnutls.py probe, and every verdict below is testable without a daemon.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "CryptoLib",
    "Recovery",
    "classify",
    "family_of_version",
    "from_loader_list",
    "from_maps",
    "missing_in_loader_list",
    "probe_kind",
    "recovery",
    "short_version",
    "version_in",
]

OPENSSL, GNUTLS, WOLFSSL, MBEDTLS = "OpenSSL", "GnuTLS", "wolfSSL", "Mbed TLS"

# Library file names (as linked, vendored with a hash as auditwheel and PyInstaller do, or
# versioned) -> family. libssl (vendored libssl-<hash>.so.1.1 too) needs its libcrypto, which
# the loader and the maps list as well: the DRBG lives there, so libcrypto is what is probed.
_NAMES = (
    (re.compile(r"^libcrypto(-[0-9a-f]+)?\.so(\.[0-9.]+)?$"), OPENSSL),
    (re.compile(r"^libgnutls(-[0-9a-f]+)?\.so(\.[0-9.]+)?$"), GNUTLS),
    (re.compile(r"^libwolfssl(-[0-9a-f]+)?\.so(\.[0-9.]+)?$"), WOLFSSL),
    (re.compile(r"^libmbedcrypto(-[0-9a-f]+)?\.so(\.[0-9.]+)?$"), MBEDTLS),
)

# The version string each library carries in its .rodata ("OpenSSL 1.1.1r  8 Feb 2022",
# "GnuTLS 3.7.9" is not there: GnuTLS stores "3.7.9" alone, so its version comes from the
# probe's gnutls_check_version(NULL)).
_VERSION = re.compile(
    rb"(OpenSSL \d+\.\d+\.\d+[a-z]{0,2}(?: [ -~]{0,20}\d{4})?|GnuTLS \d+\.\d+\.\d+)"
)


class CryptoLib(NamedTuple):
    """One crypto library a daemon loads (or carries statically)."""

    family: str  # OPENSSL, GNUTLS, WOLFSSL, MBEDTLS
    name: str  # the file name: libcrypto-2ade47cd.so.1.1
    path: str  # where the probe loads it from; "" when linked statically
    version: str = ""  # "OpenSSL 1.1.1r  8 Feb 2022" when known before loading
    static: bool = False
    # Named by a running daemon (its maps), not by the operator: loaded only if its user could
    # not have written it (libfind.load), since loading runs the library's code as root.
    untrusted: bool = False
    # The inode the daemon has mapped (from its maps): what is loaded must be that very file,
    # not whatever its user has put under the name since.
    inode: int = 0

    @property
    def label(self) -> str:
        """How the report names it: `libcrypto-2ade47cd.so.1.1 (OpenSSL 1.1.1r)`."""
        version = short_version(self.version) or self.family
        where = "statically linked" if self.static else self.name
        return f"{where} ({version})"


def classify(name: str) -> str:
    """The family of a library file name, "" when it is no crypto library jailshim knows."""
    for pattern, family in _NAMES:
        if pattern.match(name):
            return family
    return ""


def version_in(data: bytes) -> str:
    """The first library version string in ``data`` (a library or a static binary), or "".

    bytes.find walks the megabytes (memchr-fast) to the first name; the regex starts there: a
    plain regex search over libcrypto.so.3 takes ~10 ms, this well under 1, and a hostile
    file of nothing but "OpenSSL " 32 MB long ~0.3 s (a Python loop over its markers: 1.2)."""
    starts = [at for marker in (b"OpenSSL ", b"GnuTLS ") if (at := data.find(marker)) >= 0]
    hit = _VERSION.search(data, min(starts)) if starts else None
    return hit.group(1).decode("ascii", "replace") if hit else ""


def short_version(version: str) -> str:
    """ "OpenSSL 1.1.1r  8 Feb 2022" -> "OpenSSL 1.1.1r"; "GnuTLS 3.7.9" stays."""
    return " ".join(version.split()[:2])


def family_of_version(version: str) -> str:
    return version.split(" ", 1)[0] if version.startswith((OPENSSL, GNUTLS)) else ""


def _libs(paths: list[str]) -> list[CryptoLib]:
    found: dict[str, CryptoLib] = {}
    for path in paths:
        name = path.rsplit("/", 1)[-1]
        family = classify(name)
        if family and path not in found:
            found[path] = CryptoLib(family, name, path)
    return list(found.values())


def from_loader_list(text: str) -> list[CryptoLib]:
    """The crypto libraries in `ld.so --list BINARY` output, in load order.

    Lines look like ``libcrypto-2ade47cd.so.1.1 => /opt/x/libcrypto-2ade47cd.so.1.1 (0x7f…)``;
    a library the loader could not find (``=> not found``) cannot be probed and is skipped.
    """
    paths = []
    for line in text.splitlines():
        if "=>" not in line:
            continue
        target = line.split("=>", 1)[1].strip()
        if target.startswith("/"):
            paths.append(target.rsplit(" (0x", 1)[0])
    return _libs(paths)


def missing_in_loader_list(text: str) -> list[str]:
    """The crypto libraries `ld.so --list` could not find: ``name => not found`` (ldd's way)
    or, from the loader itself, ``…: error while loading shared libraries: name: cannot open
    shared object file…`` on stderr (it stops at the first)."""
    names = []
    for line in text.splitlines():
        name, arrow, target = line.strip().partition(" => ")
        if arrow and target.strip() == "not found" and classify(name):
            names.append(name)
        _, marker, rest = line.partition("error while loading shared libraries: ")
        name = rest.split(":", 1)[0].strip()
        if marker and classify(name):
            names.append(name)
    return names


# A process maps a few crypto libraries (libcrypto, GnuTLS, a vendored copy or two); more is
# a hostile daemon making doctor read and load files by the thousand.
MAX_MAPPED = 16


class MappedLib(NamedTuple):
    path: str
    inode: int
    range: str  # "7f12a000-7f12b000", the name of its /proc/PID/map_files link


def from_maps(text: str) -> list[tuple[CryptoLib, MappedLib]]:
    """The crypto libraries a process has mapped, from /proc/PID/maps, with where they are
    mapped (the path is the host's view; a file replaced since is ``(deleted)``)."""
    found: dict[tuple[str, int], tuple[CryptoLib, MappedLib]] = {}
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue
        path = fields[5].removesuffix(" (deleted)")
        name = path.rsplit("/", 1)[-1]
        family = classify(name)
        try:
            inode = int(fields[4])
        except ValueError:
            continue
        # One file is one library, whatever its names (hard links): a hostile daemon could
        # map one file under thousands of names, and each is read and scanned as root.
        if not family or (fields[3], inode) in found or path in (m.path for _, m in found.values()):
            continue
        if len(found) == MAX_MAPPED:
            break
        found[fields[3], inode] = (
            CryptoLib(family, name, path, untrusted=True, inode=inode),
            MappedLib(path, inode, fields[0]),
        )
    return list(found.values())


def probe_kind(lib: CryptoLib) -> str:
    """Which probe a library gets: "openssl" or "gnutls", or "" with the reason in
    ``unprobeable`` (a static copy cannot be loaded on its own)."""
    if lib.static or not lib.path:
        return ""
    if lib.family == OPENSSL:
        return "openssl"
    if lib.family == GNUTLS:
        return "gnutls"
    return ""


def unprobeable(lib: CryptoLib) -> str:
    """Why ``lib`` is not probed (for a warning), "" when it is."""
    if lib.static:
        return (
            f"{lib.version or lib.family} is linked statically into the daemon: jailshim cannot "
            "load it to probe it; the dev/ checks above are what it depends on"
        )
    if probe_kind(lib):
        return ""
    return (
        f"{lib.name}: jailshim has no reseed probe for {lib.family} yet; the dev/ checks above "
        "are what it depends on"
    )


class Recovery(NamedTuple):
    """What a daemon using this library needs once `prepare` has fixed its jail."""

    restart: bool
    why: str


def _numbers(version: str) -> tuple[int, ...]:
    """ "OpenSSL 1.1.1r" -> (1, 1, 1); "OpenSSL 3" -> (3, 0, 0); no number -> ()."""
    found = re.search(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    return tuple(int(n or 0) for n in found.groups()) if found else ()


def recovery(family: str, version: str) -> Recovery:
    """Does a daemon whose reseed failed recover once the jail has its nodes, or must it be
    restarted? Measured (tests/test_cryptolib.py), not guessed; unmeasured cases say restart."""
    numbers = _numbers(version)
    if family == OPENSSL and numbers >= (1, 1, 1):
        # 1.1.1 (drbg_lib.c) and 3.x (providers/implementations/rands/drbg.c): a DRBG in error
        # state is uninstantiated and instantiated afresh at its next generate
        # (rand_drbg_restart), reading the source again.
        return Recovery(
            False,
            f"{short_version(version) or 'OpenSSL'} recovers by itself: its DRBG re-instantiates "
            "from the system source at its next generate",
        )
    if family == GNUTLS:
        # lib/nettle/sysrng-linux.c opens /dev/urandom at every reseed and keeps no error state
        # (only the FIPS state, which outside FIPS mode blocks nothing).
        return Recovery(
            False,
            f"{short_version(version) or 'GnuTLS'} recovers by itself: it reopens the system "
            "source at every reseed and keeps no error state",
        )
    what = short_version(version) or family or "this library"
    return Recovery(True, f"{what} is not known to recover by itself (not measured)")
