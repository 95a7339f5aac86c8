"""A daemon stand-in for the --init tests: makes orphans, records the signals it receives.

    python init_child.py OUT ORPHANS

Forks ORPHANS processes that each fork a grandchild and exit at once, so the grandchildren are
re-parented to the nearest subreaper or PID 1 (jailshim's supervisor) and must be reaped there.
Writes "ready" to OUT, then appends the name of every forwarded signal; exits 42 on SIGTERM and
3 on SIGQUIT, and carries on after SIGINT (an interactive program's Ctrl-C).
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


def main(out: str, orphans: int) -> int:
    def record(signum: int, _frame: object) -> None:
        with open(out, "a", encoding="ascii") as f:
            f.write(signal.Signals(signum).name + "\n")
        if signum == signal.SIGTERM:
            sys.exit(42)
        if signum == signal.SIGQUIT:
            sys.exit(3)

    for sig in RECORDED:
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
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
