"""Which crypto libraries a daemon uses, and what a failed reseed means for each: pure decisions.

Facts come in as text (the dynamic loader's `--list` output, /proc/PID/maps lines, a
library's bytes); out come CryptoLib records, the probe each needs, and whether the daemon
recovers by itself once the jail is fixed. No syscalls here: libfind.py gathers the facts,
openssl.py and gnutls.py probe, and every verdict below is testable without a daemon.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "CryptoLib",
    "MappedFile",
    "Recovery",
    "classify",
    "from_loader_list",
    "load_refusal",
    "mapped_files",
    "missing_in_loader_list",
    "probe_kind",
    "recovery",
    "server_owned",
    "short_version",
    "soname_of",
    "version_in",
]

OPENSSL, GNUTLS, WOLFSSL, MBEDTLS = "OpenSSL", "GnuTLS", "wolfSSL", "Mbed TLS"
LIBSODIUM = "libsodium"  # no reseed probe; named so the entropy verdict knows its row

# Library file names (as linked, vendored with a hash as auditwheel and PyInstaller do, or
# versioned) -> family. libssl (vendored libssl-<hash>.so.1.1 too) needs its libcrypto, which
# the loader and the maps list as well: the DRBG lives there, so libcrypto is what is probed.
# Compiled when a name has the prefix (re's own cache keeps it): the probe child classifies
# COMMAND's libraries before chroot, on the run's critical path, and most are no crypto
# library at all; compiling all six at import cost ~0.6 ms there (issue 28).
_NAMES = (
    # a letter release in the name too: psycopg2-binary 2.8.3 vendors libcrypto-….so.1.1.1b
    ("libcrypto", r"^libcrypto(-[0-9a-f]+)?\.so(\.[0-9.]+[a-z]?)?$", OPENSSL),
    ("libgnutls", r"^libgnutls(-[0-9a-f]+)?\.so(\.[0-9.]+)?$", GNUTLS),
    ("libwolfssl", r"^libwolfssl(-[0-9a-f]+)?\.so(\.[0-9.]+)?$", WOLFSSL),
    ("libmbedcrypto", r"^libmbedcrypto(-[0-9a-f]+)?\.so(\.[0-9.]+)?$", MBEDTLS),
    ("libsodium", r"^libsodium(-[0-9a-f]+)?\.so(\.[0-9.]+)?$", LIBSODIUM),
)

# The version string each library carries in its .rodata ("OpenSSL 1.1.1r  8 Feb 2022",
# "GnuTLS 3.7.9" is not there: GnuTLS stores "3.7.9" alone, so its version comes from the
# probe's gnutls_check_version(NULL)). Compiled when first searched.
_VERSION = rb"(OpenSSL \d+\.\d+\.\d+[a-z]{0,2}(?: [ -~]{0,20}\d{4})?|GnuTLS \d+\.\d+\.\d+)"


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
    # The mapped file's identity (fstat through /proc/PID/map_files, the true st_dev even on
    # overlayfs or btrfs): what is loaded must be that very file, not whatever has been put
    # under its name since, nor a file of the same inode number on another filesystem.
    inode: int = 0
    dev: int = 0
    # Why a daemon's library is not loaded (load_refusal): reported as "cannot probe", and
    # never replaced by the host's library.
    refusal: str = ""

    @property
    def label(self) -> str:
        """How the report names it: `libcrypto-2ade47cd.so.1.1 (OpenSSL 1.1.1r)`."""
        version = short_version(self.version) or self.family
        where = "statically linked" if self.static else self.name
        return f"{where} ({version})"


def classify(name: str) -> str:
    """The family of a library file name, "" when it is no crypto library jailshim knows."""
    for prefix, pattern, family in _NAMES:
        if name.startswith(prefix) and re.match(pattern, name):
            return family
    return ""


def version_in(data: bytes) -> str:
    """The first library version string in ``data`` (a library or a static binary), or "".

    bytes.find walks the megabytes (memchr-fast) to the first name; the regex starts there: a
    plain regex search over libcrypto.so.3 takes ~10 ms, this well under 1, and a hostile
    file of nothing but "OpenSSL " 32 MB long ~0.3 s (a Python loop over its markers: 1.2)."""
    starts = [at for marker in (b"OpenSSL ", b"GnuTLS ") if (at := data.find(marker)) >= 0]
    hit = re.compile(_VERSION).search(data, min(starts)) if starts else None
    return hit.group(1).decode("ascii", "replace") if hit else ""


def short_version(version: str) -> str:
    """ "OpenSSL 1.1.1r  8 Feb 2022" -> "OpenSSL 1.1.1r"; "GnuTLS 3.7.9" stays."""
    return " ".join(version.split()[:2])


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
# Every distinct file a process maps is looked at (its ELF soname), not only the ones named
# like a crypto library: a daemon's user can rename its library. A real daemon maps tens of
# files; a hostile one up to vm.max_map_count (65530), each a few reads as root.
MAX_FILES = 512


class MappedFile(NamedTuple):
    path: str  # as /proc/PID/maps shows it: the daemon's mount namespace, renamed or deleted
    inode: int
    range: str  # "7f12a000-7f12b000", the name of its /proc/PID/map_files link
    dev: int = 0  # from the maps' major:minor (on overlayfs and btrfs not the path's st_dev)


def mapped_files(text: str) -> list[MappedFile]:
    """Each file a process has mapped, once (by device and inode, whatever its names: a
    hostile daemon could map one file under thousands of names), from /proc/PID/maps."""
    found: dict[tuple[int, int], MappedFile] = {}
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue
        try:
            inode = int(fields[4])
        except ValueError:
            continue
        major, _, minor = fields[3].partition(":")
        try:
            dev = os.makedev(int(major, 16), int(minor, 16))
        except ValueError:
            continue
        if inode == 0 or (dev, inode) in found:
            continue
        if len(found) == MAX_FILES:
            break
        path = fields[5].removesuffix(" (deleted)")
        found[dev, inode] = MappedFile(path, inode, fields[0], dev)
    return list(found.values())


_PT_LOAD, _PT_DYNAMIC, _DT_STRTAB, _DT_SONAME = 1, 2, 5, 14
_MAX_READ = 64 << 10


def soname_of(read_at: Callable[[int, int], bytes]) -> str:
    """The DT_SONAME of a 64-bit little-endian ELF shared object, read through
    ``read_at(offset, size)`` (a few small reads, never the whole file), or "".

    What a library is, unlike its file name, stays with the file when the daemon's user
    renames it: libcrypto.so.3 renamed to x.bin is still "libcrypto.so.3" inside."""
    head = read_at(0, 64)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return ""
    (phoff,) = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    if phentsize < 56 or phnum * phentsize > _MAX_READ:
        return ""
    table = read_at(phoff, phnum * phentsize)
    loads, dynamic = [], (0, 0)
    for at in range(0, len(table) - 55, phentsize):
        kind, _, offset, vaddr, _, size, _, _ = struct.unpack_from("<IIQQQQQQ", table, at)
        if kind == _PT_LOAD:
            loads.append((vaddr, offset, size))
        elif kind == _PT_DYNAMIC:
            dynamic = (offset, size)
    entries = read_at(dynamic[0], min(dynamic[1], _MAX_READ)) if dynamic[1] else b""
    strtab = name_at = -1
    for at in range(0, len(entries) - 15, 16):
        tag, value = struct.unpack_from("<qQ", entries, at)
        if tag == 0:
            break
        if tag == _DT_STRTAB:
            strtab = value
        elif tag == _DT_SONAME:
            name_at = value
    if strtab < 0 or name_at < 0:
        return ""
    for vaddr, offset, size in loads:  # DT_STRTAB is an address: the segment maps it
        if vaddr <= strtab < vaddr + size:
            name = read_at(offset + strtab - vaddr + name_at, 256).split(b"\0", 1)[0]
            return name.decode("ascii", "replace")
    return ""


def server_owned(fstype: str) -> bool:
    """A filesystem whose owners and contents a user-space server decides (FUSE): its files
    are neither trusted by owner nor read (a read can block for as long as the server likes)."""
    return fstype.split(".", 1)[0] in ("fuse", "fuseblk")


def load_refusal(
    *, same_mount_namespace: bool, fstype: str, uid: int, mode: int, pid: int, name: str
) -> str:
    """Why jailshim must not load (run as root) ``name``, a library the daemon ``pid`` has
    mapped, or "" when it may. Facts from the mapped file itself (map_files, fstat, its
    mount); loading runs the library's constructors as root in doctor's namespaces.

    "Owned by root" says who wrote a file only in doctor's own mount namespace: a rootful
    container's root is uid 0 too (issue 25: its libcrypto.so.3 constructor ran as host root).
    A FUSE server decides the owners and contents it shows."""
    if not same_mount_namespace:
        return (
            f"PID {pid} is in another mount namespace (a container?), where root-owned says "
            f"nothing about who wrote {name} (a rootful container's root is uid 0 too)"
        )
    if not fstype:
        return f"{name}'s filesystem is not in the mount table (unmounted since?)"
    if server_owned(fstype):
        return f"{name} is on a FUSE filesystem ({fstype}), whose server decides its owner"
    if uid != 0 or mode & 0o022:
        return (
            f"{name} is owned by uid {uid} with mode {stat.S_IMODE(mode):04o}: jailshim loads "
            "(runs as root) only a library owned by root and writable by no one else"
        )
    return ""


def probe_kind(lib: CryptoLib) -> str:
    """Which probe a library gets: "openssl" or "gnutls", or "" with the reason in
    ``unprobeable`` (a static copy cannot be loaded on its own)."""
    if lib.static or not lib.path or lib.refusal:
        return ""
    if lib.family == OPENSSL:
        return "openssl"
    if lib.family == GNUTLS:
        return "gnutls"
    return ""


def unprobeable(lib: CryptoLib) -> str:
    """Why ``lib`` is not probed (for a warning), "" when it is."""
    if lib.refusal:
        return (
            f"cannot probe {lib.name} ({short_version(lib.version) or 'version unknown'}): "
            f"{lib.refusal}, so jailshim does not load it and probes no other library in its "
            "place; --crypto-lib PATH names a library to load (its code runs as root)"
        )
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
