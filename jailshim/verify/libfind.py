"""Find a daemon's crypto libraries: ask the dynamic loader about COMMAND, read /proc/PID/maps
for a running daemon, or take the paths given with --crypto-lib. cryptolib.py decides; this
module only gathers the facts (the loader run with posix_spawn, /proc reads, bounded file reads).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import select
import signal
import stat
import struct
import time
from collections.abc import Callable
from typing import NamedTuple

from jailshim.verify.cryptolib import (
    MAX_MAPPED,
    CryptoLib,
    MappedFile,
    classify,
    from_loader_list,
    load_refusal,
    mapped_files,
    missing_in_loader_list,
    server_owned,
    soname_of,
    version_in,
)

__all__ = [
    "CommandLibraries",
    "cached_type",
    "for_command",
    "for_paths",
    "for_pid",
    "inherited_fds",
    "load",
    "open_regular",
    "read_bounded",
    "same_mount_namespace",
]

_LIMIT = 32 << 20
_DEFAULT_LOADER = "/lib64/ld-linux-x86-64.so.2"
_PT_INTERP = 3
_LIST_TIMEOUT = 10.0  # seconds for `ld.so --list`: a loader that hangs is killed
_LIST_LIMIT = 1 << 20  # bytes read of each of its outputs: a real list is a few KiB


def open_regular(path: str) -> int:
    """A read-only fd on ``path`` if it is a regular file; OSError otherwise, without ever
    opening anything else. The path may come from a hostile process, which could have swapped
    it for a link to a device (opening /dev/watchdog arms a reboot, a tape rewinds) or a FIFO
    (would hang): the file is looked at through O_PATH first, which opens nothing, and that
    very inode is then opened through /proc/self/fd."""
    handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        return os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(handle)


def read_bounded(path: str, limit: int = _LIMIT) -> bytes:
    """A file's bytes, read only if the path is a regular file (open_regular), never more
    than ``limit`` (a huge file)."""
    try:
        fd = open_regular(path)
    except OSError:
        return b""
    try:
        return _read_fd(fd, limit)
    finally:
        os.close(fd)


def _read_fd(fd: int, limit: int = _LIMIT) -> bytes:
    """At most ``limit`` bytes from ``fd``'s start (b"" when it cannot be read)."""
    chunks, at = [], 0
    try:
        while at < limit and (chunk := os.pread(fd, min(limit - at, 1 << 20), at)):
            chunks.append(chunk)
            at += len(chunk)
    except OSError:
        return b""
    return b"".join(chunks)


def _read_at(fd: int) -> Callable[[int, int], bytes]:
    """pread for soname_of: b"" for an offset no file has (a garbled ELF header)."""

    def read(offset: int, size: int) -> bytes:
        try:
            return os.pread(fd, size, offset)
        except (OSError, OverflowError, ValueError):
            return b""

    return read


def _interpreter(head: bytes) -> str:
    """The PT_INTERP of a 64-bit little-endian ELF (the loader the kernel would run), or ""."""
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return ""
    (phoff,) = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 56 > len(head):
            return ""
        kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", head, at)
        if kind == _PT_INTERP and offset + size <= len(head):
            return head[offset : offset + size].split(b"\0", 1)[0].decode(errors="replace")
    return ""


def inherited_fds() -> list[int]:
    """This process's fds above 2 that an exec would pass on (not close-on-exec): one given to
    jailshim by its starter (a socket, a pipe) is not the loader's to hold."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    fds = []
    for name in names:
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                fds.append(fd)
        except OSError:  # the listing's own fd, closed by now
            continue
    return fds


class _Listing(NamedTuple):
    """A running `LOADER --list BINARY`: its PID, the read ends of its stdout and stderr."""

    pid: int
    out: int
    err: int
    deadline: float  # monotonic: killed when it is still running then


def _spawn_list(loader: str, binary: str) -> _Listing | None:
    """Start `LOADER --list BINARY` (None when it cannot be started).

    posix_spawn, not subprocess: subprocess and what it imports (selectors, threading,
    signal's enums) cost the probe child ~1.5 ms before it may chroot, on every run. The
    same safety as subprocess.run gave: no shell, stdin /dev/null, no inherited fd but the
    two pipes, a time-out (_collect_list); each output read to at most _LIST_LIMIT bytes."""
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out_write, 1),  # dup2 clears close-on-exec on 1 and 2 only
        (os.POSIX_SPAWN_DUP2, err_write, 2),
        *((os.POSIX_SPAWN_CLOSE, fd) for fd in inherited_fds()),
    ]
    try:
        pid = os.posix_spawn(loader, [loader, "--list", binary], os.environ, file_actions=actions)
    except OSError:
        os.close(out_read)
        os.close(err_read)
        return None
    finally:
        os.close(out_write)
        os.close(err_write)
    return _Listing(pid, out_read, err_read, time.monotonic() + _LIST_TIMEOUT)


def _collect_list(listing: _Listing, *, cancel: bool = False) -> tuple[str, str] | None:
    """(stdout, stderr) of a started list, or None when it did not end by its deadline (it
    is then killed) or ``cancel`` (killed at once); reaped either way."""
    pid, out_read, err_read = listing.pid, listing.out, listing.err
    chunks: dict[int, list[bytes]] = {out_read: [], err_read: []}
    sizes = dict.fromkeys(chunks, 0)
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    open_fds, finished = set(chunks), not cancel
    try:
        while open_fds and finished:
            left = listing.deadline - time.monotonic()
            events = poller.poll(max(0, int(left * 1000)) + 1) if left > 0 else []
            if not events:
                finished = False
                break
            for fd, _ in events:
                chunk = os.read(fd, 65536)
                if chunk and sizes[fd] < _LIST_LIMIT:  # more than the limit: drained, dropped
                    chunks[fd].append(chunk[: _LIST_LIMIT - sizes[fd]])
                    sizes[fd] += len(chunks[fd][-1])
                elif not chunk:
                    poller.unregister(fd)
                    open_fds.discard(fd)
    finally:
        if not finished or open_fds:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(out_read)
        os.close(err_read)
    if not finished:
        return None
    stdout, stderr = (b"".join(chunks[fd]).decode("utf-8", "replace") for fd in chunks)
    return stdout, stderr


def _loader_list(loader: str, binary: str) -> tuple[str, str] | None:
    """(stdout, stderr) of `LOADER --list BINARY`, or None when it could not run or did not
    end within _LIST_TIMEOUT (it is then killed and reaped)."""
    listing = _spawn_list(loader, binary)
    return None if listing is None else _collect_list(listing)


class CommandLibraries:
    """for_command in two halves: the loader is started here and read in ``result``, so the
    probe child does its other work before chroot while `ld.so --list` runs (its biggest
    step there, 3-10 ms). ``cancel`` kills and reaps a loader whose answer is not wanted."""

    def __init__(self, binary: str, program: str = "") -> None:
        # ``program``: for a shared object (a daemon's module, with no PT_INTERP of its own),
        # the program that will dlopen it, whose loader then lists it
        self.binary = binary
        self.loader = _interpreter(read_bounded(program or binary, 65536))
        self._listing = _spawn_list(self.loader, binary) if self.loader else None
        if self._listing is None:
            self.loader = ""  # could not run: as a binary without a loader (below)

    def cancel(self) -> None:
        if self._listing is not None:
            listing, self._listing = self._listing, None
            _collect_list(listing, cancel=True)

    def result(self) -> tuple[list[CryptoLib], str]:
        """The crypto libraries ``binary`` will load, as its dynamic loader resolves them
        (RPATH, RUNPATH, LD_LIBRARY_PATH and the cache, exactly as at exec), with a note
        when none is found.

        `ld.so --list` maps the libraries without running any of their code, unlike running
        the binary with LD_TRACE_LOADED_OBJECTS (old ldd). A static binary's OpenSSL is found
        from its version string and returned with static=True (not probeable).
        """
        binary, loader = self.binary, self.loader
        listed: list[CryptoLib] = []
        missing: list[str] = []
        if self._listing is not None:
            listing, self._listing = self._listing, None
            answer = _collect_list(listing)
            if answer is None:
                loader = ""
            else:
                stdout, stderr = answer
                listed = from_loader_list(stdout)
                missing = missing_in_loader_list(stdout + stderr)
        if listed:  # their versions: from the libraries themselves, once the probe loads them
            return listed, ""
        if missing:
            return [], (
                f"the loader finds no {', '.join(missing)} for {binary} (its RPATH/RUNPATH, "
                "LD_LIBRARY_PATH and the cache as jailshim runs), so the daemon would not start"
            )
        static = static_in(binary)
        if static:
            return static, ""
        if read_bounded(binary, 4) != b"\x7fELF":
            return [], f"{binary} is not an ELF executable (a script?): its interpreter's libraries"
        if not loader:
            return [], f"{binary} is linked statically and carries no OpenSSL version string"
        return (
            [],
            f"{binary} links no crypto library jailshim knows (OpenSSL, GnuTLS, wolfSSL, Mbed TLS)",
        )


def for_command(binary: str) -> tuple[list[CryptoLib], str]:
    """The crypto libraries ``binary`` will load (CommandLibraries.result), asked at once."""
    return CommandLibraries(binary).result()


def for_paths(paths: tuple[str, ...]) -> list[CryptoLib]:
    """--crypto-lib: each path as given, its family from its name (OpenSSL when unknown)."""
    libs = []
    for path in paths:
        name = os.path.basename(path)
        libs.append(
            CryptoLib(classify(name) or "OpenSSL", name, path, version_in(read_bounded(path)))
        )
    return libs


def load(lib: CryptoLib) -> ctypes.CDLL:
    """dlopen ``lib`` (its constructors run here, as root). The operator's (COMMAND's,
    --crypto-lib) as named. A daemon's only when for_pid found no reason against it
    (cryptolib.load_refusal) and through /proc/PID/map_files, the mapped file itself, opened
    and loaded through /proc/self/fd: the file loaded is the file judged, by device and inode,
    whatever now has its name. OSError with the reason when refused."""
    if not lib.untrusted:
        return ctypes.CDLL(lib.path)
    if lib.refusal:
        raise OSError(lib.refusal)
    fd = open_regular(lib.path)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (lib.dev, lib.inode) or not lib.inode:
            raise OSError(
                f"it is not the file the daemon had mapped when doctor looked (device "
                f"{os.major(st.st_dev)}:{os.minor(st.st_dev)} inode {st.st_ino}, not "
                f"{os.major(lib.dev)}:{os.minor(lib.dev)} inode {lib.inode}): it was unmapped "
                "or replaced since; run doctor again"
            )
        if st.st_uid != 0 or st.st_mode & 0o022:  # only root could have changed that since
            raise OSError(f"{lib.name} is no longer root's alone; run doctor again")
        loaded = ctypes.CDLL(f"/proc/self/fd/{fd}")
    except BaseException:
        os.close(fd)
        raise
    # The fd stays open (the probe child is short-lived): closed, its number would be the next
    # library's name too, and the dynamic loader answers a name it has loaded with that library.
    return loaded


def static_in(binary: str) -> list[CryptoLib]:
    """A statically linked OpenSSL in ``binary``, from its version string (never run)."""
    version = version_in(read_bounded(binary))
    if version.startswith("OpenSSL"):
        return [CryptoLib("OpenSSL", os.path.basename(binary), "", version, static=True)]
    return []


_AT_EMPTY_PATH, _AT_STATX_DONT_SYNC, _STATX_TYPE = 0x1000, 0x4000, 0x1


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def cached_type(path: str = "", fd: int = -100) -> tuple[int, int, int]:
    """(st_mode, st_rdev, st_dev) of ``path`` (or of ``fd`` itself) from the attributes the
    kernel has cached (statx AT_STATX_DONT_SYNC): a plain stat of a FUSE file asks its server,
    which may never answer. (0, 0, 0) when it cannot be told."""
    buf = ctypes.create_string_buffer(256)  # struct statx
    flags = _AT_STATX_DONT_SYNC | (0 if path else _AT_EMPTY_PATH)
    if _libc().statx(fd, path.encode(), flags, _STATX_TYPE, buf) != 0:
        return 0, 0, 0
    (mode,) = struct.unpack_from("<H", buf.raw, 0x1C)
    rdev_major, rdev_minor, dev_major, dev_minor = struct.unpack_from("<IIII", buf.raw, 0x80)
    return mode, os.makedev(rdev_major, rdev_minor), os.makedev(dev_major, dev_minor)


def same_mount_namespace(pid: int) -> bool:
    """Is ``pid`` in this process's mount namespace? Compared by device and inode of the nsfs
    files (an inode number is unique only on its own filesystem); False when unknown."""
    try:
        theirs, ours = os.stat(f"/proc/{pid}/ns/mnt"), os.stat("/proc/self/ns/mnt")
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _unchrooted_peer(pid: int) -> str:
    """A process in ``pid``'s mount namespace that is not chrooted ("self" when that is
    doctor's own), or "": a chrooted process's mountinfo hides the mounts outside its root,
    its libraries' among them."""
    if same_mount_namespace(pid):
        return "self"
    try:
        want = os.stat(f"/proc/{pid}/ns/mnt")
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return ""
    for name in entries:  # a container's init, its shell: found in a few ms
        try:
            ns = os.stat(f"/proc/{name}/ns/mnt")
            same = (ns.st_dev, ns.st_ino) == (want.st_dev, want.st_ino)
            if same and os.readlink(f"/proc/{name}/root") == "/":
                return name
        except OSError:
            continue
    return ""


class _Filesystems(NamedTuple):
    by_mount: dict[int, str]  # mount id -> type
    by_device: dict[int, str]  # st_dev -> type
    servers: tuple[str, ...] = ()  # FUSE mount points (a path below one is never walked)


def _mount_table(path: str) -> _Filesystems:
    """A mountinfo's filesystem types by mount id and by device (its major:minor field)."""
    from jailshim.jail.mounts import parse_mountinfo

    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        return _Filesystems({}, {})
    entries = parse_mountinfo(text)
    by_device: dict[int, str] = {}
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            major, minor = fields[2].split(":")
            fstype = fields[fields.index("-", 6) + 1]
            by_device.setdefault(os.makedev(int(major), int(minor)), fstype)
        except (ValueError, IndexError):
            continue
    return _Filesystems(
        {e.mount_id: e.fstype for e in entries},
        by_device,
        tuple(e.mount_point for e in entries if server_owned(e.fstype)),
    )


def _filesystems(pid: int) -> _Filesystems:
    """The filesystem types of ``pid``'s mount namespace, from a process there that is not
    chrooted; with doctor's own by device as well: a container's libraries usually live on
    a host filesystem (overlayfs maps the lower or upper layer's file), while a FUSE mount
    made in the container is not doctor's. What is in neither is unknown, and not read.
    doctor itself in a container sharing the host's PIDs (doctor --all's DaemonSet) adds the
    host's, from PID 1: another container's overlay is mounted there, not in doctor's own
    namespace, and a container whose only process chroots (haproxy as its PID 1) has no peer."""
    peer = _unchrooted_peer(pid)
    theirs = _mount_table(f"/proc/{peer}/mountinfo") if peer else _Filesystems({}, {})
    ours = theirs if peer == "self" else _mount_table("/proc/self/mountinfo")
    host = _Filesystems({}, {})
    if peer != "self" and not same_mount_namespace(1):  # (False also when it cannot tell)
        host = _mount_table("/proc/1/mountinfo")
    by_device = {**host.by_device, **ours.by_device, **theirs.by_device}
    return _Filesystems(theirs.by_mount, by_device, theirs.servers)


def _mount_id(handle: int) -> int:
    """The mount of the file open at ``handle``, from its fdinfo: asking the file itself
    (fstat, fstatfs) could call a FUSE server, which may never answer."""
    try:
        with open(f"/proc/self/fdinfo/{handle}", encoding="ascii") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


def _filesystem_of(handle: int, filesystems: _Filesystems) -> str:
    """The type of the filesystem ``handle`` is on, asking nothing of the file itself: by
    mount id in the namespace's mount table, else by device (cached) among doctor's own."""
    fstype = filesystems.by_mount.get(_mount_id(handle), "")
    if not fstype:  # outside a chrooted daemon's root: its mountinfo hides the mount
        fstype = filesystems.by_device.get(cached_type(fd=handle)[2], "")
    return fstype


def _readable(path: str, filesystems: _Filesystems) -> bool:
    """May doctor read ``path`` (a magic link): on a filesystem it can tell, not FUSE."""
    try:
        handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fstype = _filesystem_of(handle, filesystems)
    finally:
        os.close(handle)
    return bool(fstype) and not server_owned(fstype)


def _by_path(mapped: MappedFile, filesystems: _Filesystems) -> int:
    """An O_PATH fd on ``mapped.path`` if that is still the mapped file (the device and inode
    /proc/PID/maps gives: on overlayfs and btrfs they are not the path's, and nothing is
    proven), else -1. A path below a FUSE mount is not walked (a lookup asks the server)."""
    if any(mapped.path.startswith(point.rstrip("/") + "/") for point in filesystems.servers):
        return -1
    try:
        handle = os.open(mapped.path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        st = os.fstat(handle)
    except OSError:
        st = None
    if st is None or (st.st_dev, st.st_ino) != (mapped.dev, mapped.inode):
        os.close(handle)
        return -1
    return handle


def _identify(
    pid: int, mapped: MappedFile, same_namespace: bool, filesystems: _Filesystems
) -> CryptoLib | None:
    """What the file ``pid`` has mapped at ``mapped.range`` is: a crypto library (by its ELF
    soname, else by its name) or None. Read through /proc/PID/map_files, the mapped file
    itself whatever its name now (renamed, deleted, in another mount namespace)."""
    link = f"/proc/{pid}/map_files/{mapped.range}"
    shown = os.path.basename(mapped.path)
    by_name = classify(shown)
    try:
        handle = os.open(link, os.O_PATH | os.O_CLOEXEC)  # opens nothing, follows the link
    except OSError as exc:
        if not by_name:
            return None
        # Following map_files needs CAP_SYS_ADMIN (doctor in a container without it): the
        # path the maps show is then used only where it is provably the mapped file, in
        # doctor's own mount namespace, by the device and inode the maps give.
        handle = _by_path(mapped, filesystems) if same_namespace else -1
        if handle < 0:
            why = (
                f"{shown} could not be proven to be the file PID {pid} has mapped ({link}: "
                f"{exc.strerror}; following it needs CAP_SYS_ADMIN, and its path names "
                "another file now)"
            )
            if not same_namespace:
                why = load_refusal(
                    same_mount_namespace=False, fstype="", uid=-1, mode=0, pid=pid, name=shown
                )
            return CryptoLib(by_name, shown, link, untrusted=True, refusal=why)
        link = mapped.path
    try:
        fstype = _filesystem_of(handle, filesystems)
        # A FUSE file, or one on a filesystem that cannot be told, is never stat'ed or read:
        # a FUSE server may never answer. Only its name can say what it is.
        if server_owned(fstype) or not fstype:
            family, name, version, st = by_name, shown, "", None
        else:
            st = os.fstat(handle)
            if not stat.S_ISREG(st.st_mode):  # a mapped device is never opened
                return None
            family, name, version = _what_file(handle, st, by_name, shown)
        if not family:
            return None
        refusal = load_refusal(
            same_mount_namespace=same_namespace,
            fstype=fstype,
            uid=st.st_uid if st else -1,
            mode=st.st_mode if st else 0,
            pid=pid,
            name=name,
        )
        return CryptoLib(
            family,
            name,
            link,
            version,
            untrusted=True,
            inode=st.st_ino if st else 0,
            dev=st.st_dev if st else 0,
            refusal=refusal,
        )
    except OSError:
        return None  # unmapped meanwhile
    finally:
        os.close(handle)


# What a mapped file is, by its identity (device, inode, size, mtime): doctor --all meets the
# same libcrypto in many daemons, and reading its soname and version (~40 ms for 4 MB) once per
# daemon was most of a scan's time (bench/doctor_all.py). Bounded: a hostile host maps many.
_IDENTIFIED: dict[tuple[int, int, int, int], tuple[str, str | None]] = {}
_IDENTIFIED_MAX = 1024


def _what_file(handle: int, st: os.stat_result, by_name: str, shown: str) -> tuple[str, str, str]:
    """(family, name, version) of the regular file open at the O_PATH ``handle``."""
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    soname, version = _IDENTIFIED.get(key, ("", None))
    if key in _IDENTIFIED and (version is not None or not (classify(soname) or by_name)):
        family = classify(soname) or by_name
        return family, soname or shown, version or ""
    fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        soname = soname_of(_read_at(fd))
        family = classify(soname) or by_name
        version = version_in(_read_fd(fd)) if family else None
    finally:
        os.close(fd)
    if len(_IDENTIFIED) < _IDENTIFIED_MAX:
        _IDENTIFIED[key] = (soname, version)
    return family, soname or shown, version or ""


def for_pid(pid: int) -> tuple[list[CryptoLib], str]:
    """The crypto libraries process ``pid`` has mapped, each known by what the mapped file is
    (its soname), not by the name its path shows now, and each with the reason it must not be
    loaded, if any (another mount namespace, not root's, not provably the mapped file). With
    none, a note saying so: doctor then probes no library at all, never the host's in place
    of the daemon's."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as exc:
        return [], f"PID {pid}'s memory map could not be read ({exc.strerror})"
    files = mapped_files(text)
    same, filesystems = same_mount_namespace(pid), _filesystems(pid)
    libs = []
    for mapped in files:
        lib = _identify(pid, mapped, same, filesystems)
        if lib is not None:
            libs.append(lib)
            if len(libs) == MAX_MAPPED:
                break
    # nothing mapped: a static OpenSSL is found by its version string; the daemon's loader is
    # not asked (its PT_INTERP is the daemon's choice, and would run as root)
    exe = f"/proc/{pid}/exe"
    libs = libs or (static_in(f"/proc/{pid}/exe") if _readable(exe, filesystems) else [])
    if libs:
        return libs, ""
    return [], (
        f"none of the {len(files)} files PID {pid} has mapped is a crypto library jailshim "
        "knows (OpenSSL, GnuTLS, wolfSSL, Mbed TLS) by its ELF soname or its name, and its "
        "executable carries no OpenSSL version"
    )
