"""tests/pids.py: a signal through a pin never reaches a process that took the pinned number.

The reuse is made real, not assumed: in a PID namespace of its own (root may write its
ns_last_pid), a process is recorded, ended and reaped, and the next process is given its number.
A kill by the recorded number reaches that newcomer (the hazard, shown as a control); the pin
does not, and a pin taken afterwards with a check of who the process is is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import TESTS

_REUSE = """
import json, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from tests import pids

def sleeper(marker):
    pid = os.fork()
    if pid == 0:
        os.execvp("sleep", ["sleep", "60", marker])  # GNU sleep sums its arguments: "0" adds 0
    return pid

def alive(pid):
    return os.waitpid(pid, os.WNOHANG) == (0, 0)

def reuse(number):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(number - 1))
    newcomer = sleeper("0")
    assert newcomer == number, (newcomer, number)
    return newcomer

facts = {}
recorded = sleeper("0.0")  # the argv marker tells the two sleeps apart
time.sleep(0.2)  # exec'd: /proc shows sleep's argv
pinned = pids.pin(recorded, pids.cmdline_has(b"0.0"))
facts["pinned"] = pinned is not None
os.kill(recorded, signal.SIGKILL)
os.waitpid(recorded, 0)  # reaped: the number is free

newcomer = reuse(recorded)
pids.kill([pinned])
time.sleep(0.2)
facts["newcomer_survives_the_pin"] = alive(newcomer)
facts["late_pin_refused"] = pids.pin(recorded, pids.cmdline_has(b"0.0")) is None
os.kill(recorded, signal.SIGKILL)  # the control: by the recorded number, the newcomer is hit
_, status = os.waitpid(newcomer, 0)
facts["number_reaches_newcomer"] = os.WIFSIGNALED(status)
print(json.dumps(facts))
"""


def test_a_pinned_kill_never_reaches_the_process_that_took_the_number() -> None:
    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _REUSE]
    done = subprocess.run(
        [*argv, str(TESTS.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["pinned"]
    assert facts["number_reaches_newcomer"], "the number was not reused: the test shows nothing"
    assert facts["newcomer_survives_the_pin"], "the pin's SIGKILL reached the new process"
    assert facts["late_pin_refused"], "a pin taken after the reuse passed the check of who it is"
