"""Find a daemon's crypto libraries: ask the dynamic loader about COMMAND, read /proc/PID/maps
for a running daemon, or take the paths given with --crypto-lib. cryptolib.py decides; this
module only gathers the facts (a subprocess, /proc reads, bounded file reads).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import subprocess

from jailshim.verify.cryptolib import (
    CryptoLib,
    classify,
    from_loader_list,
    from_maps,
    missing_in_loader_list,
    version_in,
)

__all__ = ["for_command", "for_paths", "for_pid", "load", "open_regular", "read_bounded"]

_LIMIT = 32 << 20
_DEFAULT_LOADER = "/lib64/ld-linux-x86-64.so.2"
_PT_INTERP = 3


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
        chunks, left = [], limit
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return b""
    finally:
        os.close(fd)


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


def for_command(binary: str) -> tuple[list[CryptoLib], str]:
    """The crypto libraries ``binary`` will load, as its dynamic loader resolves them (RPATH,
    RUNPATH, LD_LIBRARY_PATH and the cache, exactly as at exec), with a note when none is found.

    `ld.so --list` maps the libraries without running any of their code, unlike running the
    binary with LD_TRACE_LOADED_OBJECTS (old ldd). A static binary's OpenSSL is found from its
    version string and returned with static=True (not probeable).
    """
    loader = _interpreter(read_bounded(binary, 65536))
    listed: list[CryptoLib] = []
    missing: list[str] = []
    if loader:
        try:
            proc = subprocess.run(
                [loader, "--list", binary],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=10,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            listed = from_loader_list(proc.stdout)
            missing = missing_in_loader_list(proc.stdout + proc.stderr)
        except (OSError, subprocess.SubprocessError):
            loader = ""
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
    """dlopen ``lib`` (its constructors run here, as root). A library a running daemon named
    is opened first and loaded through /proc/self/fd, so the file checked is the file loaded,
    and only if it is root's and writable by no one else: a daemon's user that could write it
    could otherwise make doctor run its code as root. OSError with the reason when refused."""
    if not lib.untrusted:
        return ctypes.CDLL(lib.path)
    fd = open_regular(lib.path)
    try:
        st = os.fstat(fd)
        if lib.inode and st.st_ino != lib.inode:
            raise OSError(
                f"it is not the file the daemon has mapped (inode {st.st_ino}, not "
                f"{lib.inode}): it was replaced since it was found; run doctor again"
            )
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise OSError(
                f"it is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: "
                "jailshim loads (runs as root) only a library owned by root and writable by no "
                "one else; give a trusted copy with --crypto-lib"
            )
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


def for_pid(pid: int) -> list[CryptoLib]:
    """The crypto libraries process ``pid`` has mapped. Each is loaded for the probe from the
    path the maps show when that path is still the very file mapped (same inode), else from
    /proc/PID/map_files/RANGE, the mapped file itself (a daemon in another mount namespace, a
    library upgraded on disk since the daemon started)."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        return []
    libs = []
    for lib, mapped in from_maps(text):
        path = lib.path
        try:
            same = os.stat(path).st_ino == mapped.inode
        except OSError:
            same = False
        if not same:
            path = f"/proc/{pid}/map_files/{mapped.range}"
        libs.append(lib._replace(path=path, version=version_in(read_bounded(path))))
    # nothing mapped: a static OpenSSL is found by its version string; the daemon's loader is
    # not asked (its PT_INTERP is the daemon's choice, and would run as root)
    return libs or static_in(f"/proc/{pid}/exe")
