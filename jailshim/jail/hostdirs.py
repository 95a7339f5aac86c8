"""The host's own directories, which are never a daemon's jail: judged by what a directory is
(its device and inode), not by how a path spells it.

Preparing such a directory puts nodes, mounts and records into the system itself (seen:
`--chroot /dev` made /dev/dev; haproxy's `chroot /var/lib` made /var/lib/dev/null, postfix's
`queue_directory = /var/lib` put resolv.conf in /var/lib/etc). A directory is the host's when
it is one of these, compared by (st_dev, st_ino):

1. / and the directories the Filesystem Hierarchy Standard 3.0 requires of every system
   (/bin … /var and the shared parts of /usr and /var: /usr/lib, /var/lib, /var/spool …);
2. every directory the package manager ships for the system rather than for one daemon — on
   Debian one that the dpkg .list files of several installed packages name (/etc/ssl,
   /usr/lib/x86_64-linux-gnu, /etc/systemd), or that a package of the system itself names
   (Essential, or Priority required or important: dpkg's /var/lib/dpkg/info, apt's /etc/apt,
   base-files' /etc/default) — and every parent of one;
3. anything on the filesystem of /proc, /sys or /dev, or below those paths, and jailshim's
   own /run/jailshim.

A daemon's own directory (/var/lib/haproxy, /var/spool/postfix, /var/lib/unbound, /etc/unbound,
/var/lib/nsd, /var/cache/bind) is named by its one optional package alone, so it stays a jail
(review1 R5 found /etc/ssl, /var/lib/dpkg/info … accepted while base-files' list was the only
one read). Names are stat()ed following symlinks (/bin -> usr/bin on a merged /usr), so
/var/../var/lib, a symlink to /var/lib or a bind mount of it are the same directory.

Reading every .list (~770 files, 7 MB here) takes ~90 ms: too much for every start. The verdict —
the identities of those directories — is kept in /run/jailshim/hostdirs (root's, 0600, gone at
boot, when device numbers may change) with the identity of / and the modification times of
dpkg's info directory and status file (dpkg replaces a .list by rename, so installing, removing
or upgrading a package changes them); a start reads that one file and looks its identity up in
the text: ~0.1 ms, where base-files' list and ~80 stat calls took ~0.3 ms.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable

__all__ = [
    "FHS_DIRECTORIES",
    "host_directory",
    "packaged_host_paths",
    "skeleton",
    "system_packages",
]

# FHS 3.0, chapters 3-5: required in / ("3.4 Requirements"), and the shared parts of /usr and
# /var ("4.2", "5.2") — present on any Linux, with or without dpkg.
FHS_DIRECTORIES = (
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/include",
    "/usr/lib",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local",
    # FHS 3.0 4.9.2: required in /usr/local
    "/usr/local/bin",
    "/usr/local/etc",
    "/usr/local/games",
    "/usr/local/include",
    "/usr/local/lib",
    "/usr/local/man",
    "/usr/local/sbin",
    "/usr/local/share",
    "/usr/local/src",
    "/usr/sbin",
    "/usr/share",
    "/usr/src",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/local",
    "/var/lock",
    "/var/log",
    "/var/mail",
    "/var/opt",
    "/var/run",
    "/var/spool",
    "/var/tmp",
)
_PSEUDO = ("/proc", "/sys", "/dev")  # their filesystems and everything below them
_OWN = "/run/jailshim"  # jailshim's locks and cache, and everything below
DPKG_INFO = "/var/lib/dpkg/info"
DPKG_STATUS = "/var/lib/dpkg/status"
CACHE = f"{_OWN}/hostdirs"
_CACHE_FORMAT = "jailshim-hostdirs 2"

# read once a run: (the cache's text: "DEV:INO\tPATH" lines, the devices of /proc, /sys, /dev)
_facts_read: list[tuple[str, frozenset[int]]] = []


def skeleton(listing: str | None) -> list[str]:
    """PURE: the paths judged the host's: the FHS ones, every absolute path of ``listing``
    (a dpkg .list file's text, or None) and every parent of each, without duplicates."""
    paths: dict[str, None] = dict.fromkeys(FHS_DIRECTORIES)
    for line in (listing or "").splitlines():
        path = os.path.normpath(line.strip()) if line.startswith("/") else ""
        while path not in ("", "/") and path not in paths:
            paths[path] = None
            path = os.path.dirname(path)
    return list(paths)


def system_packages(status: str) -> set[str]:
    """PURE: the packages of the system itself in dpkg's status file's text: Essential, or of
    Priority required or important (dpkg, apt, base-files, systemd), never a daemon's own."""
    found = set()
    for stanza in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in stanza.splitlines()
            if ": " in line[:40] and line[0] != " "
        )
        if fields.get("Essential") == "yes" or fields.get("Priority") in ("required", "important"):
            found.add(fields.get("Package", ""))
    found.discard("")
    return found


def packaged_host_paths(lists: Iterable[tuple[str, str]], system: set[str]) -> list[str]:
    """PURE: the paths judged the host's from (package, .list text) pairs: the FHS ones, each
    path named by two packages or more or by one of ``system``, and every parent of each."""
    named_by: dict[str, str] = {}
    host: list[str] = []
    for package, listing in lists:
        for line in listing.splitlines():
            if not line.startswith("/"):
                continue
            other = named_by.setdefault(line, package)
            if other != package or package in system:
                host.append(line)
    return skeleton("\n".join(host))


def _identities(paths: Iterable[str]) -> dict[tuple[int, int], str]:
    found: dict[tuple[int, int], str] = {}
    for path in paths:
        try:
            st = os.stat(path)  # follows symlinks: /bin is /usr/bin on a merged /usr
        except OSError:
            continue
        if (st.st_mode & 0o170000) != 0o040000:  # a file of the list: no jail anyway
            continue
        key = (st.st_dev, st.st_ino)
        # named by the path that is no symlink (/usr/lib, not /lib -> usr/lib)
        if key not in found or os.path.islink(found[key]):
            found[key] = path
    return found


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def _dpkg_key() -> str | None:
    """What the cache is valid for: the identity of / (an overlay root, a container's, has
    other device numbers: a cache made outside named the wrong inodes and data_directory = /
    passed in a scratch root), and of dpkg's info directory and status file with their
    modification times; None without dpkg."""
    try:
        return " ".join(
            f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"
            for st in (os.stat("/"), os.stat(DPKG_INFO), os.stat(DPKG_STATUS))
        )
    except OSError:
        return None


def _build(key: str | None) -> str:
    """The cache's text: a header line, then one "DEV:INO\tPATH" line per host directory."""
    lists: list[tuple[str, str]] = []
    system: set[str] = set()
    if key is not None:
        with contextlib.suppress(OSError):
            system = system_packages(_read(DPKG_STATUS))
            for name in os.listdir(DPKG_INFO):
                if name.endswith(".list"):
                    with contextlib.suppress(OSError):
                        lists.append((name[:-5].split(":")[0], _read(f"{DPKG_INFO}/{name}")))
    paths = packaged_host_paths(lists, system) if lists else skeleton(None)
    lines = [f"{dev}:{ino}\t{path}" for (dev, ino), path in _identities(paths).items()]
    body = "\n" + "\n".join(lines) + "\n"
    return f"{_CACHE_FORMAT} {key} {_mounts_on(body)}{body}"


def _mounts_on(body: str) -> str:
    """The mounts on the directories the cache's ``body`` names ("\tPATH\n" lines), as one
    word: mount id and device of each. A filesystem mounted on one of them after the cache
    was made changes its identity, which the cache would not know: a tmpfs on /mnt (a disk
    on /srv, an automounted /home) was taken for a jail, as the host's /mnt, and prepared
    (review3). Reading the mount table costs ~20 us; dpkg's key alone did not change."""
    from jailshim.jail.mounts import parse_mountinfo

    try:
        text = _read("/proc/self/mountinfo")
    except OSError:
        return "unknown"
    on = [f"{e.mount_id}.{e.dev}" for e in parse_mountinfo(text) if f"\t{e.mount_point}\n" in body]
    return ",".join(on) or "none"


def _cached(key: str | None) -> str | None:
    """The cache's text when it is root's alone (in root's /run/jailshim) and made for
    ``key``; None otherwise."""
    try:
        fd = os.open(CACHE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8", errors="surrogateescape") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            return None
        text = f.read()
    header, newline, body = text.partition("\n")
    if not newline or header != f"{_CACHE_FORMAT} {key} {_mounts_on(newline + body)}":
        return None
    return text


def _store(text: str) -> None:
    """Keep the cache for the next start, in root's /run/jailshim (0700 when made here);
    silently not where that cannot be done (a read-only /run, a directory not root's)."""
    with contextlib.suppress(OSError):
        with contextlib.suppress(FileExistsError):
            os.mkdir(_OWN, 0o700)
        st = os.stat(_OWN, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            return
        temporary = f"{CACHE}.{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
            os.rename(temporary, CACHE)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _facts() -> tuple[str, frozenset[int]]:
    if not _facts_read:
        key = _dpkg_key()
        text = _cached(key)
        if text is None:
            text = _build(key)
            if key is not None:
                _store(text)
        devices = set()
        for path in _PSEUDO:
            try:
                devices.add(os.stat(path).st_dev)
            except OSError:
                continue
        root = os.stat("/").st_dev
        # an unmounted /proc is a directory of the root filesystem, not a filesystem of its own
        _facts_read.append((text, frozenset(devices - {root})))
    return _facts_read[0]


def host_directory(st: os.stat_result, real: str) -> str | None:
    """The host's directory that ``st`` (a jail's fstat; ``real`` its kernel name) is, as a
    path to name in a sentence, or None: it may be a jail."""
    known, pseudo = _facts()
    at = known.find(f"\n{st.st_dev}:{st.st_ino}\t")
    if at >= 0:
        start = known.index("\t", at) + 1
        return known[start : known.index("\n", start)]
    if (
        st.st_dev in pseudo
        or real == _OWN
        or real.startswith((*(f"{p}/" for p in _PSEUDO), f"{_OWN}/"))
    ):
        return real
    return None
