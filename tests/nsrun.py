"""Run a command in a new user namespace (and optionally mount namespace) with a 0-65535 map.

`unshare --map-root-user` maps only root, so `nobody` cannot exist inside; newuidmap refuses
wider maps without /etc/subuid entries. As real root we can write the map ourselves: the
child unshares, the parent writes uid_map/gid_map, the child execs. Used only by tests.

    python nsrun.py [--mount] -- COMMAND [ARG...]
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 16384
MS_PRIVATE = 1 << 18


def main(argv: list[str]) -> int:
    mount = argv[0] == "--mount"
    cmd = argv[argv.index("--") + 1 :]
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        flags = CLONE_NEWUSER | (CLONE_NEWNS if mount else 0)
        if libc.unshare(flags) != 0:
            os._exit(125)
        os.write(ready_w, b"1")
        os.read(go_r, 1)
        os.setgid(0)
        os.setuid(0)
        # Keep our mounts out of the parent namespace, as unshare(1) does by default.
        if mount and libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            os._exit(125)
        os.execvp(cmd[0], cmd)
    os.close(ready_w)
    os.close(go_r)
    os.read(ready_r, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w", encoding="ascii") as f:
            f.write("0 0 65536\n")
    os.write(go_w, b"1")
    # A signal can arrive after waitpid() below reaped the child: through a pidfd, taken while
    # it is our unreaped child, it can never reach a process that took its number since.
    pidfd = os.pidfd_open(pid)

    def forward(signum: int, _frame: object) -> None:
        # Tests stop the namespace by signalling us; the command inside must hear it too.
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
