"""A daemon stand-in for the --init tests: makes orphans, records the signals it receives.

    python init_child.py OUT ORPHANS [all]

Forks ORPHANS processes that each fork a grandchild and exit at once, so the grandchildren are
re-parented to the nearest subreaper or PID 1 (jailshim's supervisor) and must be reaped there.
Writes "ready" to OUT, then appends the name of every forwarded signal; exits 42 on SIGTERM and
3 on SIGQUIT, and carries on after SIGINT (an interactive program's Ctrl-C). With `all`, it
catches and records every signal a process can catch but SIGCHLD (a real-time one as SIG<n>),
the job stops and the faults sent with kill included, so none of them stops or ends it; with
`stay`, the same, and TERM and QUIT do not end it either (dumb-init's print_signals).
"""

from __future__ import annotations

import os
import signal
import sys
import time

RECORDED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGTERM,
)


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def main(out: str, orphans: int, every: bool = False, stay: bool = False) -> int:
    def record(signum: int, _frame: object) -> None:
        with open(out, "a", encoding="ascii") as f:
            f.write(name(signum) + "\n")
        if stay:
            return
        if signum == signal.SIGTERM:
            sys.exit(42)
        if signum == signal.SIGQUIT:
            sys.exit(3)

    uncaught = (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)
    for sig in [s for s in signal.valid_signals() if s not in uncaught] if every else RECORDED:
        signal.signal(sig, record)
    for _ in range(orphans):
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                time.sleep(0.5)
            os._exit(0)
        os.waitpid(pid, 0)
    with open(out, "a", encoding="ascii") as f:
        f.write("ready\n")
    while True:
        time.sleep(0.1)


if __name__ == "__main__":
    mode = sys.argv[3:4]
    sys.exit(main(sys.argv[1], int(sys.argv[2]), mode in (["all"], ["stay"]), mode == ["stay"]))
