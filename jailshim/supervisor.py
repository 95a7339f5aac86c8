"""The lean PID 1 (`jailshim run --init`): forward signals, reap zombies, stop the whole tree.

Run as a script by a fresh interpreter (`python -S -E supervisor.py [FLAGS] -- CMD...`) after
jailshim has prepared and verified the jail, so that while the daemon runs, this process holds
only what a bare interpreter holds. It imports os, sys, time and the C halves of signal and json
(_signal, _json): the Python `signal` and `json` modules pull in enum and re, which cost 1.6 MB
of resident memory for every container, for nothing we use.

Why: a daemon that is not written to be PID 1 ignores SIGTERM (no default action for PID 1)
and never reaps the orphans re-parented to it, which pile up as zombies (the reasons tini and
dumb-init exist). And at the end, tini and dumb-init exit as soon as their first child does,
leaving re-parented descendants running; this supervisor stops every descendant first:

    stop signal forwarded, or COMMAND exited
      -> the stop signal (and SIGCONT, so a stopped process can act on it) to every descendant
      -> --grace seconds (one period, from the first of the two) -> SIGKILL what is left
      -> reap everything -> exit with COMMAND's status, or 128+n.

Every signal it can catch but SIGCHLD is forwarded to COMMAND; a job stop (TSTP, TTIN, TTOU)
sent with kill then stops the supervisor too, as dumb-init does. --stop-delay holds a stop
signal before forwarding it.

Flags (from jailshim's handover, already checked): --kill-group, --grace SECONDS,
--stop-delay SECONDS, --rewrite FROM:TO (signal numbers; TO 0 drops FROM), --map-exit
CODE:CODE, --ignored N,N… and --blocked N,N… (COMMAND's signal settings; none: all default),
--log-level LEVEL, --log-format json|console.
"""

from __future__ import annotations

import _json
import _signal as signal  # the C module: no enum import
import os
import sys
import time

# Every signal a process can catch, but SIGCHLD, is forwarded (after --rewrite), as tini and
# dumb-init do: one left at its default would end the supervisor and leave COMMAND running
# unsupervised (ALRM, PWR, IO, PROF, VTALRM, XCPU, STKFLT, SIGRTMIN…), and as PID 1 the kernel
# would drop it. valid_signals() leaves out SIGKILL and SIGSTOP only by our filter, and glibc's
# own two real-time signals (32, 33: no program can block, wait for or send them as such).
FORWARDED = tuple(
    s
    for s in sorted(signal.valid_signals())
    if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)
)
# The signals that ask for a stop: forwarding one starts the grace period.
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# What a terminal's job control stops a process with (Ctrl-Z; reading or writing it from behind).
JOB_STOPS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
# What the kernel sends us for our own failed write (a closed stderr pipe, a file-size limit):
# not the operator's, so not forwarded.
_OWN_WRITE = (signal.SIGPIPE, signal.SIGXFSZ)
# Blocked for the supervisor's whole life and taken with sigwaitinfo: a signal that arrives at
# any moment (during fork, during a stop) stays pending, so none is lost; only the same signal
# twice before it is taken becomes one, as the kernel does for every process. Blocked, not
# ignored: a blocked signal is queued even for PID 1, and a blocked SIGTTOU/SIGTTIN lets us
# write to (and hand over) a terminal from the background as an ignored one would.
WAITED = (*FORWARDED, signal.SIGCHLD)
SHOWN = 10  # processes named in the stop event; the counts say how many more
KILL_EVERY = 0.05  # seconds between SIGKILL rounds, for what forked while the last round ran


LEVELS = ("debug", "info", "warning", "error")
_logging = {"least": 1, "console": False}  # set from --log-level and --log-format in main()


def _json_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_json_value(v) for v in value) + "]"
    return str(_json.encode_basestring_ascii(str(value)))


def _logs(level: str) -> bool:
    return LEVELS.index(level) >= _logging["least"]


def _log(level: str, event: str, **facts: object) -> None:
    """One line on stderr, in the shape of jailshim's structlog events: JSON, or (console) the
    same facts as key=value after the event name, without colours. Below --log-level: nothing."""
    if not _logs(level):
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if _logging["console"]:
        pairs = " ".join(f"{k}={_json_value(v)}" for k, v in facts.items())
        text = f"{stamp} [{level:<9}] {event:<20} {pairs}\n"
    else:
        line = {"timestamp": stamp, "level": level, "event": event, **facts}
        body = ", ".join(f"{_json_value(k)}: {_json_value(v)}" for k, v in line.items())
        text = "{" + body + "}\n"
    try:
        os.write(2, text.encode())
    except OSError:  # stderr gone (a closed terminal): the stop goes on without its log line
        pass


# The process tree, from /proc --------------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _stat(pid: int) -> tuple[bytes, int]:
    """(state, ppid) from /proc/PID/stat; (b"", 0) when it is gone. The name before them is
    in parentheses and may hold anything, so split after the last ')'."""
    data = _read(f"/proc/{pid}/stat")
    fields = data[data.rfind(b")") + 2 :].split()
    return (fields[0], int(fields[1])) if len(fields) > 1 else (b"", 0)


def _children(pid: int) -> list[int]:
    """PID's children: the kernel's per-thread lists, or (a kernel without
    CONFIG_PROC_CHILDREN) every process in /proc whose parent it is."""
    if _CHILDREN_LISTS:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []
        data = b" ".join(_read(f"/proc/{pid}/task/{tid}/children") for tid in tids)
        return [int(word) for word in data.split()]
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and _stat(int(e))[1] == pid]


def _proc_pid() -> int:
    """Our PID as /proc numbers it: not getpid() when /proc belongs to another PID namespace
    (`unshare --pid --fork` without --mount-proc). Every PID the tree walk reads is in that
    numbering, so the walk starts from it and signals through /proc, never by number."""
    try:
        return int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        return os.getpid()


_CHILDREN_LISTS = os.path.exists(f"/proc/self/task/{_proc_pid()}/children")


def _pidfd(pid: int) -> int | None:
    """/proc/PID opened, which pidfd_send_signal takes as a pidfd (Linux 5.1): it signals that
    very process or fails, even if the PID is reused meanwhile, and it is /proc's numbering.
    ProcessLookupError when it is gone; None where there is no /proc/PID to open."""
    try:
        return os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    except OSError:
        return None


def _send(pid: int, fd: int | None, sig: int) -> bool:
    try:
        if fd is not None:
            try:
                signal.pidfd_send_signal(fd, sig)
                return True
            except (ProcessLookupError, PermissionError):  # gone, or not ours to signal
                return False
            except OSError:  # no pidfd_send_signal (before 5.1, gVisor): by number, below
                if _proc_pid() != os.getpid():
                    return False  # /proc's numbers are not ours to kill() with
        os.kill(pid, sig)
    except OSError:  # gone, or (a supervisor without root) no longer ours to signal
        return False
    return True


def signal_descendants(sig: int) -> list[str]:
    """Send SIG to every living descendant, deepest first (a parent that dies of it cannot
    orphan a child before the child got it too), then SIGCONT unless SIG is SIGKILL; return
    "name[pid]" for each. A subreaper's or PID 1's descendants are its whole subtree: orphans
    come back to it. A child forked while we walk may be missed; the caller's next round (or
    SIGKILL round) finds it.

    Only descendants: a PID read from a children list may have been reaped and reused by
    anyone before we signal it. So each is pinned with a pidfd and kept only if, read through
    /proc after that, its parent is the process above it, and that parent (pinned likewise)
    is still alive then: a living process's PID is not reused, so what we read was ours.
    Iterative, with only the current path's pidfds open: no recursion limit, no fd limit.
    """
    reached: list[str] = []
    me = _proc_pid()
    # (pid, its pidfd, a zombie?, its children not yet visited), from us down to the current
    path: list[tuple[int, int | None, bool, list[int]]] = [(me, _pidfd(me), False, _children(me))]
    try:
        while path:
            parent, parent_fd, _, todo = path[-1]
            if todo:
                pid = todo.pop()
                try:
                    fd = _pidfd(pid)
                except ProcessLookupError:
                    continue
                state, ppid = _stat(pid)
                if ppid != parent or not _send(parent, parent_fd, 0):
                    if fd is not None:  # not (or no longer provably) below us
                        os.close(fd)
                    continue
                path.append((pid, fd, state == b"Z", _children(pid)))
                continue
            # every child below it has been signalled: now the process itself
            _, fd, zombie, _ = path.pop()
            if not path:
                if fd is not None:
                    os.close(fd)
                break  # that was us
            try:
                if zombie:
                    continue  # dead already, waiting for its parent to reap it
                name = _read(f"/proc/{parent}/comm").strip().decode(errors="replace")
                if _send(parent, fd, sig):
                    if sig != signal.SIGKILL:
                        _send(parent, fd, signal.SIGCONT)
                    reached.append(f"{name}[{parent}]")
            finally:
                if fd is not None:
                    os.close(fd)
    finally:
        for _, fd, _, _ in path:
            if fd is not None:
                os.close(fd)
    return reached


# The child ---------------------------------------------------------------------------------


def _foreground_terminal() -> int | None:
    """fd 0 when it is our controlling terminal and we are its foreground process group
    (podman run -it, an interactive shell); None otherwise. From the background we must not
    take the terminal from whoever has it."""
    try:
        return 0 if os.tcgetpgrp(0) == os.getpgrp() else None
    except OSError:  # not a terminal, or not ours
        return None


def _spawn(cmd: list[str], tty: int | None, ignored: list[int], blocked: list[int]) -> int:
    # Signals stay blocked across fork so none is lost or delivered to the wrong handler
    # between fork and exec (dumb-init does the same).
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)  # its own group, so --kill-group reaches its children too
        if tty is not None:
            # The terminal's foreground goes to the child's group, so Ctrl-C and Ctrl-Z reach
            # it (and a shell gets job control), as tini does. In the child, before exec: a
            # shell exec'd here may hand the terminal on to a job at once, and a late call
            # from the parent would take it back. SIGTTOU is still blocked here.
            try:
                os.tcsetpgrp(tty, os.getpid())
            except OSError:
                pass
        # Every disposition to default and the mask emptied (--inherited-signals reset, as
        # dumb-init does), or the ignored set and mask jailshim was started with (keep, as
        # tini does): the interpreter ignores SIGPIPE and SIGXFSZ, and we block everything,
        # and execvp keeps what is ignored and blocked.
        for sig in WAITED:
            signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
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


def _stop_self(sig: int) -> None:
    """Stop as a job stop SIG would: sent to ourselves while blocked, then let through. Returns
    when we are continued, or at once where the kernel discards it (PID 1, whose default
    actions it drops; an orphaned process group, which nothing could continue). Not SIGSTOP,
    which dumb-init sends itself: that one the kernel does not discard, and an orphaned
    supervisor would stay stopped for good."""
    os.kill(os.getpid(), sig)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    signal.pthread_sigmask(signal.SIG_BLOCK, [sig])


def _follow_job_stop(child: int, tty: int, stopped_by: int) -> None:
    """COMMAND was stopped from the terminal we gave it. Stop as a job ourselves, so that the
    shell that started us gets its terminal back and `fg` continues us; then give the terminal
    back to COMMAND and continue it. Where no job control is above us (PID 1 in a container,
    any orphaned process group) the kernel discards our SIGTSTP, and Ctrl-Z is undone at once:
    nothing could ever continue COMMAND."""
    _stop_self(signal.SIGTSTP)
    try:
        if os.tcgetpgrp(tty) == os.getpgrp():  # `fg`: we hold the terminal again
            os.tcsetpgrp(tty, child)
        in_front = os.tcgetpgrp(tty) == child
    except OSError:
        in_front = False
    # After SIGTTIN/SIGTTOU, continue it only in front: from behind it would stop again.
    if stopped_by == signal.SIGTSTP or in_front:
        try:
            os.killpg(child, signal.SIGCONT)
        except OSError:
            pass


# The loop ----------------------------------------------------------------------------------


class _Options:
    def __init__(self, argv: list[str]) -> None:
        split = argv.index("--")
        self.command = argv[split + 1 :]
        self.kill_group = False
        self.grace = 10.0
        self.stop_delay = 0.0
        self.rewrite: dict[int, int] = {}
        self.exit_map: dict[int, int] = {}
        self.ignored: list[int] = []  # the child's ignored signals and mask (--inherited-signals)
        self.blocked: list[int] = []
        words = iter(argv[:split])
        for flag in words:
            if flag == "--kill-group":
                self.kill_group = True
            elif flag in ("--grace", "--stop-delay"):
                setattr(self, flag[2:].replace("-", "_"), float(next(words)))
            elif flag in ("--rewrite", "--map-exit"):
                old, new = next(words).split(":")
                pairs = self.rewrite if flag == "--rewrite" else self.exit_map
                pairs[int(old)] = int(new)
            elif flag in ("--ignored", "--blocked"):
                numbers = [int(n) for n in next(words).split(",") if n]
                setattr(self, flag[2:], numbers)
            elif flag == "--log-level":
                _logging["least"] = LEVELS.index(next(words))
            elif flag == "--log-format":
                _logging["console"] = next(words) == "console"
            else:
                raise SystemExit(f"supervisor.py: unknown flag {flag}")


def main(argv: list[str]) -> int:
    opts = _Options(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
    # The interpreter ignores these two at start; ignored, they would be discarded, not queued.
    for sig in _OWN_WRITE:
        signal.signal(sig, signal.SIG_DFL)
    tty = _foreground_terminal()
    child = _spawn(opts.command, tty, opts.ignored, opts.blocked)
    target = -child if opts.kill_group else child
    me = os.getpid()
    _log(
        "info",
        "init.started",
        pid=me,
        child=child,
        kill_group=opts.kill_group,
        grace=opts.grace,
        terminal=tty is not None,
    )
    status: int | None = None  # COMMAND's wait status, once it has exited
    stop_signal = signal.SIGTERM  # what the rest get: the stop signal as forwarded, or TERM
    began = deadline = 0.0  # the stop sequence: when it began, when SIGKILL is due (0: not yet)
    delayed = (0, 0)  # a stop signal held for --stop-delay (received, to send), due at `due`
    due = 0.0
    rest_asked = killing = False
    still_running: list[str] = []
    killed: list[str] = []
    reaped = 0

    def forward(received: int, sent: int) -> None:
        nonlocal stop_signal, began, deadline
        if not sent:
            return
        _send(target, None, sent)
        if received in STOPPING and not deadline:
            stop_signal, began = sent, time.monotonic()
            deadline = began + opts.grace
            _send(target, None, signal.SIGCONT)  # a stopped COMMAND must hear it
        elif received in JOB_STOPS:
            # dumb-init's answer to a job stop sent with kill: COMMAND first, then ourselves,
            # so the shell or runtime above sees its job stop; SIGCONT to us is forwarded too
            _stop_self(received)

    while True:
        if killing:
            info = signal.sigtimedwait(WAITED, KILL_EVERY)
        elif deadline or due:
            wake = min(t for t in (deadline, due) if t)
            info = signal.sigtimedwait(WAITED, max(0.0, wake - time.monotonic()))
        else:
            info = signal.sigwaitinfo(WAITED)
        if info is not None and info.si_signo != signal.SIGCHLD and status is None:
            received = info.si_signo
            sent = opts.rewrite.get(received, received)
            if received in _OWN_WRITE and info.si_pid == me:
                pass  # our own write failed (stderr closed): nobody asked for it
            elif received in STOPPING and due:
                due = 0.0  # a second stop signal while the first is held: no more waiting
                forward(received, sent)
            elif received in STOPPING and opts.stop_delay and not deadline and sent:
                delayed, due = (received, sent), time.monotonic() + opts.stop_delay
                _log("info", "init.stop_delay", signal=sent, seconds=opts.stop_delay)
            else:
                forward(received, sent)
        if due and time.monotonic() >= due:
            due = 0.0
            if status is None:
                forward(*delayed)
        no_children = False
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                no_children = True
                break
            if pid == 0:
                break
            if os.WIFSTOPPED(wait_status):
                if pid == child and tty is not None and os.WSTOPSIG(wait_status) in JOB_STOPS:
                    _follow_job_stop(child, tty, os.WSTOPSIG(wait_status))
            elif pid == child:
                status = wait_status
            else:
                reaped += 1  # an orphan re-parented to us, or what the stop ended
                if _logs("debug"):  # tini -w: each zombie reaped, when asked for
                    code = os.waitstatus_to_exitcode(wait_status)
                    _log(
                        "debug", "init.reaped", pid=pid, exit_code=128 - code if code < 0 else code
                    )
        if status is not None:
            if no_children:  # as subreaper or PID 1: no child left means no descendant left
                break
            if not rest_asked and not killing:
                rest_asked = True
                due = 0.0  # COMMAND is gone: a held stop signal goes to the rest below
                if delayed[0] and stop_signal == signal.SIGTERM:
                    stop_signal = delayed[1]
                still_running = signal_descendants(stop_signal)
                if not deadline:
                    began = time.monotonic()
                    deadline = began + opts.grace
        if deadline and time.monotonic() >= deadline:
            killing = True
            killed += [n for n in signal_descendants(signal.SIGKILL) if n not in killed]
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    if still_running or killed:
        _log(
            "warning" if killed else "info",
            "init.stop",
            grace=opts.grace,
            seconds=round(time.monotonic() - began, 3),
            stop_signal=stop_signal,
            still_running=still_running[:SHOWN],
            still_running_count=len(still_running),
            killed=killed[:SHOWN],
            killed_count=len(killed),
        )
    mapped = opts.exit_map.get(code, code)
    facts: dict[str, object] = {"child": child, "exit_code": mapped, "orphans_reaped": reaped}
    if mapped != code:
        facts["mapped_from"] = code
    _log("info", "init.exited", **facts)
    return mapped


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
