"""Run a command that must not change the host's clock: every syscall that sets or adjusts a
clock answers EPERM. Needs Debian's python3-seccomp (run it with /usr/bin/python3).

    /usr/bin/python3 clock_guard.py -- CMD...

The clock is not namespaced: an ntpd started by a test would write the host's kernel clock
state (ntpd.c main → loop_config(LOOP_DRIFTINIT) → start_kern_loop/set_freq call
ntp_adjtime(MOD_BITS|MOD_FREQUENCY) whatever `disable ntp` says). adjtimex and clock_adjtime
are refused whole, reads too (seccomp cannot look inside struct timex); ntpd logs
"ntp_adjtime: Operation not permitted" and serves on. Dropping CAP_SYS_TIME from the bounding
set instead makes `ntpd -u` exit ("cap_set_proc() failed to drop root privs": it asks to keep
cap_sys_time). The filter is inherited by every process CMD starts, across exec and unshare.
"""

from __future__ import annotations

import errno
import os
import sys

import seccomp

CLOCK_WRITERS = ("adjtimex", "clock_adjtime", "clock_settime", "settimeofday")


def main(argv: list[str]) -> int:
    cmd = argv[argv.index("--") + 1 :]
    guard = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in CLOCK_WRITERS:
        guard.add_rule(seccomp.ERRNO(errno.EPERM), name)
    guard.load()
    os.execvp(cmd[0], cmd)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
