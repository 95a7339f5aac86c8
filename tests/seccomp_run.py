"""Run a command under a seccomp filter on getrandom(2). Needs Debian's python3-seccomp.

    /usr/bin/python3 seccomp_run.py deny ENOSYS|EPERM -- CMD...   getrandom always fails
    /usr/bin/python3 seccomp_run.py not-ready SECONDS -- CMD...    getrandom(GRND_NONBLOCK)
        answers EAGAIN for SECONDS, as on a kernel whose RNG is not initialised yet, then works
    /usr/bin/python3 seccomp_run.py ... --shm-marker -- CMD...     also create OpenSSL's
        "random is seeded" marker (SysV shm key 114); run it inside `unshare --ipc`

The not-ready mode uses SECCOMP_RET_USER_NOTIF: this process stays as supervisor, answering
each getrandom call of the command (and its children) with EAGAIN or "continue".
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import sys
import time

import seccomp

GRND_NONBLOCK = 1
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
IPC_CREAT = 0o1000


def main(argv: list[str]) -> int:
    sep = argv.index("--")
    mode, value, *flags = argv[:sep]
    cmd = argv[sep + 1 :]
    if "--shm-marker" in flags:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.shmget(114, 1, IPC_CREAT | 0o644) < 0:
            return 125
    if mode == "deny":
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        f.add_rule(seccomp.ERRNO(getattr(errno, value)), "getrandom")
        f.load()
        os.execvp(cmd[0], cmd)
    delay = float(value)
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    f.add_rule(seccomp.NOTIFY, "getrandom")
    f.load()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    notify_fd = f.get_notify_fd()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        ready, _, _ = select.select([notify_fd], [], [], 0.05)
        if not ready:
            continue
        try:
            n = f.receive_notify()
        except (OSError, RuntimeError):
            continue  # the caller went away
        not_ready = time.monotonic() - start < delay and n.syscall_args[2] & GRND_NONBLOCK
        response = (
            seccomp.NotificationResponse(n, 0, -errno.EAGAIN, 0)
            if not_ready
            else seccomp.NotificationResponse(n, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        )
        try:
            f.respond_notify(response)
        except (OSError, RuntimeError):
            continue


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
