"""The lean PID 1 (`jailshim run --init`): forward signals, reap zombies, pass on the status.

Run as a script by a fresh interpreter (`python -S -E supervisor.py [--kill-group] -- CMD...`)
after jailshim has prepared and verified the jail, so that while the daemon runs, this process
holds only what a bare interpreter holds. It imports os, sys, time and the C halves of signal
and json (_signal, _json): the Python `signal` and `json` modules pull in enum and re, which
cost 1.6 MB of resident memory for every container, for nothing we use.

Why: a daemon that is not written to be PID 1 ignores SIGTERM (no default action for PID 1)
and never reaps the orphans re-parented to it, which pile up as zombies (the reasons tini and
dumb-init exist).
"""

from __future__ import annotations

import _json
import _signal as signal  # the C module: no enum import
import os
import sys
import time

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)


def _json_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_json_value(v) for v in value) + "]"
    return str(_json.encode_basestring_ascii(str(value)))


def _log(level: str, event: str, **facts: object) -> None:
    """One JSON line on stderr, in the same shape as jailshim's structlog events."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = {"timestamp": stamp, "level": level, "event": event, **facts}
    body = ", ".join(f"{_json_value(k)}: {_json_value(v)}" for k, v in line.items())
    os.write(2, ("{" + body + "}\n").encode())


def _spawn(cmd: list[str]) -> int:
    # Signals stay blocked across fork so none is lost or delivered to the wrong handler
    # between fork and exec (dumb-init does the same).
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)  # its own group, so --kill-group reaches its children too
        # Every disposition to default and an empty mask, as tini does: the interpreter ignores
        # SIGPIPE and SIGXFSZ, and execvp keeps what is ignored and blocked.
        for sig in range(1, signal.NSIG):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):  # SIGKILL, SIGSTOP, glibc's real-time signals
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        try:
            os.execvp(cmd[0], cmd)
        except OSError as exc:
            _log("error", "init.exec", command=cmd, error=exc.strerror)
            os._exit(127 if exc.errno == 2 else 126)
    try:
        os.setpgid(pid, pid)  # also from the parent: no race with the first kill
    except OSError:
        pass
    return pid


def main(argv: list[str]) -> int:
    kill_group = "--kill-group" in argv[: argv.index("--")]
    cmd = argv[argv.index("--") + 1 :]
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    child = _spawn(cmd)
    target = -child if kill_group else child

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(target, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    _log("info", "init.started", pid=os.getpid(), child=child, kill_group=kill_group)
    status, reaped = 0, 0
    while True:
        try:
            pid, status_now = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            status = status_now
            break
        reaped += 1  # an orphan re-parented to us: reaped, nothing else to do
    while True:  # the daemon is gone: collect any zombie left, without waiting
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped += 1
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    _log("info", "init.exited", child=child, exit_code=code, orphans_reaped=reaped)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
