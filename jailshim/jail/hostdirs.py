"""The host's own directories, which are never a daemon's jail: judged by what a directory is
(its device and inode), not by how a path spells it.

Preparing such a directory puts nodes, mounts and records into the system itself (seen:
`--chroot /dev` made /dev/dev; haproxy's `chroot /var/lib` made /var/lib/dev/null, postfix's
`queue_directory = /var/lib` put resolv.conf in /var/lib/etc). A directory is the host's when
it is one of these, compared by (st_dev, st_ino):

1. / and the directories the Filesystem Hierarchy Standard 3.0 requires of every system
   (/bin … /var and the shared parts of /usr and /var: /usr/lib, /var/lib, /var/spool …);
2. every directory the package manager ships as the system's skeleton — on Debian the ones
   dpkg lists for base-files (/var/lib/dpkg/info/base-files.list: /etc/default, /var/backups,
   /usr/share …) — and every parent of one;
3. anything on the filesystem of /proc, /sys or /dev, or below those paths.

A package's own directory (/var/lib/haproxy, /var/spool/postfix, /var/lib/unbound,
/etc/unbound, /var/lib/nsd) is listed by that package alone, not by base-files, so it stays a
jail. Names are stat()ed following symlinks (/bin -> usr/bin on a merged /usr), so
/var/../var/lib, a symlink to /var/lib or a bind mount of it are the same directory. Reading
every package's list would say more but costs a read per package on every start; base-files'
one list (~4 KB) and ~80 stat calls are cached for the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["BASE_FILES_LIST", "FHS_DIRECTORIES", "host_directory", "skeleton"]

BASE_FILES_LIST = "/var/lib/dpkg/info/base-files.list"
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

# read once a run: (identity -> path, the devices of /proc, /sys and /dev)
_facts_read: list[tuple[dict[tuple[int, int], str], frozenset[int]]] = []


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


def _facts() -> tuple[dict[tuple[int, int], str], frozenset[int]]:
    if not _facts_read:
        try:
            with open(BASE_FILES_LIST, encoding="utf-8", errors="surrogateescape") as f:
                listing: str | None = f.read()
        except OSError:  # no dpkg: the FHS's directories alone
            listing = None
        devices = set()
        for path in _PSEUDO:
            try:
                devices.add(os.stat(path).st_dev)
            except OSError:
                continue
        root = os.stat("/").st_dev
        # an unmounted /proc is a directory of the root filesystem, not a filesystem of its own
        _facts_read.append((_identities(skeleton(listing)), frozenset(devices - {root})))
    return _facts_read[0]


def host_directory(st: os.stat_result, real: str) -> str | None:
    """The host's directory that ``st`` (a jail's fstat; ``real`` its kernel name) is, as a
    path to name in a sentence, or None: it may be a jail."""
    known, pseudo = _facts()
    name = known.get((st.st_dev, st.st_ino))
    if name is not None:
        return name
    if st.st_dev in pseudo or real.startswith(tuple(f"{p}/" for p in _PSEUDO)):
        return real
    return None
