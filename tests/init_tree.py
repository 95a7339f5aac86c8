"""A daemon stand-in that leaves a daemonised grandchild behind, for --init's stop sequence.

    python init_tree.py OUT ignore|obey

Double-forks a grandchild in its own session (as a daemon does) that names itself
"grandchild", writes "grandchild PID" to OUT and then appends "TERM" when SIGTERM comes:
with `ignore` it carries on (only SIGKILL ends it), with `obey` it exits. Once the grandchild
is there, the main process writes "exiting MONOTONIC" and exits 0.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def _grandchild(out: str, obey: bool) -> None:
    def on_term(_signum: int, _frame: object) -> None:
        with open(out, "a", encoding="ascii") as f:
            f.write("TERM\n")
        if obey:
            os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    with open("/proc/self/comm", "w", encoding="ascii") as f:
        f.write("grandchild")
    with open(out, "a", encoding="ascii") as f:
        f.write(f"grandchild {os.getpid()}\n")
    while True:
        time.sleep(0.1)


def main(out: str, mode: str) -> int:
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            _grandchild(out, mode == "obey")
        os._exit(0)
    os.wait()
    while "grandchild" not in Path(out).read_text(encoding="ascii"):
        time.sleep(0.01)
    with open(out, "a", encoding="ascii") as f:
        f.write(f"exiting {time.monotonic()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
