"""Run a command under a seccomp filter on getrandom(2). Needs Debian's python3-seccomp.

    /usr/bin/python3 seccomp_run.py deny ENOSYS|EPERM -- CMD...   getrandom always fails
    /usr/bin/python3 seccomp_run.py not-ready N -- CMD...    getrandom(GRND_NONBLOCK) called
        in a chroot (jailshim's probe, once per attempt) answers EAGAIN the first N times, as on
        a kernel whose RNG is not initialised yet, then works ("forever": never works)
    /usr/bin/python3 seccomp_run.py hold SYSCALL DIR -- CMD...    CMD's first SYSCALL waits:
        DIR/held is written when it is made, and it goes on once DIR/go exists (a test changes
        things between a look and the act, at the very call, however slow the machine)
    /usr/bin/python3 seccomp_run.py ... --shm-marker -- CMD...     also create OpenSSL's
        "random is seeded" marker (SysV shm key 114); run it inside `unshare --ipc`

The not-ready mode uses SECCOMP_RET_USER_NOTIF: this process stays as supervisor, answering
each getrandom call of the command (and its children) with EAGAIN or "continue". It counts
the probe's calls, not seconds: a delay counted from the start was spent by a slow start on a
loaded machine, and the check's first attempt then found the RNG ready (issue 32).
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


def _chrooted(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/root") != "/"
    except OSError:
        return False  # gone: its answer does not matter


def _hold(syscall: str, where: str, cmd: list[str]) -> int:
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    f.add_rule(seccomp.NOTIFY, syscall)
    f.load()
    pid = os.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    notify_fd = f.get_notify_fd()
    held = False
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
            continue
        if not held:
            held = True
            with open(os.path.join(where, "held"), "w", encoding="ascii") as out:
                out.write(f"{n.pid}\n")
            while not os.path.exists(os.path.join(where, "go")):
                time.sleep(0.005)
        try:
            f.respond_notify(
                seccomp.NotificationResponse(n, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            )
        except (OSError, RuntimeError):
            continue


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
    if mode == "hold":
        return _hold(value, flags[0], cmd)
    refusals = float("inf") if value == "forever" else int(value)
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    f.add_rule(seccomp.NOTIFY, "getrandom")
    f.load()
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
        # the interpreters' own start-up calls (hash seeds) are not the probe's: only a call
        # from a chrooted process counts
        not_ready = refusals > 0 and n.syscall_args[2] & GRND_NONBLOCK and _chrooted(n.pid)
        if not_ready:
            refusals -= 1
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
