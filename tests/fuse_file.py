"""A one-file FUSE server on raw /dev/fuse (no libfuse): mounts MOUNTPOINT (as root, allow_other)
showing NAME with the bytes of SOURCE, claiming owner uid 0 and mode 0755, as any FUSE server
may. Prints "mounted" when serving; logs each request's opcode name to LOG (one per line), so
a test sees whether anyone read the file. Ends when the mount goes (umount) or on SIGTERM.

SOURCE "link:TARGET" shows NAME as a symlink to TARGET instead (owner uid 0, as any server may
claim).

Usage: fuse_file.py MOUNTPOINT NAME SOURCE LOG [JAIL]   (JAIL: chroot there once mounted, so
that no process of a test's mount namespace shows its mounts outside a jail)
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

LOOKUP, FORGET, GETATTR, OPEN, READ, RELEASE, INIT, FLUSH, DESTROY = 1, 2, 3, 14, 15, 18, 26, 25, 38
OPENDIR, READDIR, RELEASEDIR, BATCH_FORGET, INTERRUPT, READLINK = 27, 28, 29, 42, 36, 5
NAMES = {LOOKUP: "LOOKUP", GETATTR: "GETATTR", OPEN: "OPEN", READ: "READ", RELEASE: "RELEASE",
         INIT: "INIT", FLUSH: "FLUSH"}  # fmt: skip
ROOT, FILE = 1, 2


LINK = False  # FILE is a symlink (SOURCE "link:TARGET")


def attr(node: int, size: int) -> bytes:
    mode = 0o040755 if node == ROOT else 0o120777 if LINK else 0o100755
    # ino size blocks atime mtime ctime (ns x3) mode nlink uid gid rdev blksize flags
    return struct.pack("<QQQQQQIIIIIIIIII", node, size, (size + 511) // 512, 0, 0, 0, 0, 0, 0,
                       mode, 1, 0, 0, 0, 4096, 0)  # fmt: skip


def main() -> int:
    global LINK
    mountpoint, name, source, log = sys.argv[1:5]
    if source.startswith("link:"):
        LINK, data = True, source[5:].encode()
    else:
        with open(source, "rb") as f:
            data = f.read()
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    if libc.mount(b"fusefile", mountpoint.encode(), b"fuse", 6, options) != 0:  # nosuid nodev
        raise OSError(ctypes.get_errno(), "mount fuse")
    os.set_inheritable(fd, False)
    with open(log, "a", buffering=1) as journal:
        if len(sys.argv) > 5:
            os.chroot(sys.argv[5])
        print("mounted", flush=True)
        while True:
            try:
                request = os.read(fd, 1 << 20 | 4096)
            except OSError as exc:
                if exc.errno == errno.ENODEV:  # unmounted
                    return 0
                if exc.errno in (errno.EINTR, errno.ENOENT):
                    continue
                raise
            _, opcode, unique, node = struct.unpack_from("<IIQQ", request)
            body = request[40:]
            if opcode in NAMES:
                journal.write(NAMES[opcode] + "\n")
            reply, error = b"", 0
            if opcode == INIT:
                reply = struct.pack("<IIIIHHIIHHII", 7, 31, 0, 0, 16, 12, 4096, 1, 0, 0, 0, 0)
                reply += b"\0" * (64 - len(reply))
            elif opcode == LOOKUP:
                if node == ROOT and body.split(b"\0", 1)[0] == name.encode():
                    reply = struct.pack("<QQQQII", FILE, 0, 1, 1, 0, 0) + attr(FILE, len(data))
                else:
                    error = -errno.ENOENT
            elif opcode == GETATTR:
                reply = struct.pack("<QII", 1, 0, 0) + attr(node, len(data))
            elif opcode == READLINK and node == FILE and LINK:
                reply = data
            elif opcode in (OPEN, OPENDIR):
                reply = struct.pack("<QII", 0, 0, 0)
            elif opcode == READ:
                _, offset, size = struct.unpack_from("<QQI", body)
                reply = data[offset : offset + size] if node == FILE else b""
            elif opcode in (RELEASE, RELEASEDIR, FLUSH):
                pass
            elif opcode in (FORGET, BATCH_FORGET, INTERRUPT):
                continue  # no reply
            elif opcode == DESTROY:
                return 0
            else:
                error = -errno.ENOSYS
            os.write(fd, struct.pack("<IiQ", 16 + len(reply), error, unique) + reply)


if __name__ == "__main__":
    sys.exit(main())
