"""Hand the process over to the daemon: exec it, or exec the lean supervisor (--init)."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from jailshim.errors import CommandNotExecutable, CommandNotFound

if TYPE_CHECKING:
    from jailshim.init_options import StopOptions
    from jailshim.logs import Logger

__all__ = [
    "clean_environment",
    "default_signals",
    "exec_command",
    "inherited_signals",
    "other_init",
    "supervise",
]

# PID-1 programs that already reap zombies: running `--init` under them doubles the init.
_REAPING_INITS = {
    "tini",
    "dumb-init",
    "docker-init",
    "catatonit",
    "s6-svscan",
    "runit",
    "systemd",
    "init",
    "podman-init",
}
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1


def clean_environment() -> dict[str, str]:
    """The environment for the daemon: everything but jailshim's own JAILSHIM_* variables."""
    from jailshim.options import ENV_PREFIX

    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


def default_signals(keep: tuple[list[int], list[int]] | None = None) -> None:
    """Every signal to its default disposition and an empty signal mask, as dumb-init leaves
    them for its child; with ``keep`` (ignored, blocked: --inherited-signals keep, as tini
    does), those ignored again and that mask.

    execve() resets caught signals but keeps ignored ones and the mask: the daemon would
    inherit Python's SIG_IGN for SIGPIPE and SIGXFSZ (a shell under it prints "Broken pipe"
    instead of dying quietly), and whatever the runtime ignored or blocked.
    """
    import signal

    ignored, blocked = keep or ([], [])
    for sig in range(1, signal.NSIG):
        # SIGKILL, SIGSTOP and glibc's reserved real-time signals refuse: nothing to reset
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def inherited_signals() -> tuple[list[int], list[int]]:
    """(ignored, blocked): the signal settings jailshim was started with, for --inherited-signals
    keep. Not SIGPIPE and SIGXFSZ: the interpreter ignores both before any of our code runs, so
    whether they came ignored cannot be known; they are given back at their default."""
    import signal

    from jailshim.stopsignals import IGNORED_AT_START

    ignored = {
        sig
        for sig in range(1, signal.NSIG)
        if sig not in (signal.SIGPIPE, signal.SIGXFSZ)
        and _quiet_getsignal(sig) is signal.Handlers.SIG_IGN
    }
    ignored |= IGNORED_AT_START  # jailshim catches these itself until the hand-over
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    return sorted(ignored), sorted(int(s) for s in blocked)


def _quiet_getsignal(sig: int) -> object:
    import signal

    try:
        return signal.getsignal(sig)
    except ValueError:  # glibc's reserved real-time signals
        return None


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def exec_command(
    binary: str, argv: list[str], log: Logger, keep: tuple[list[int], list[int]] | None = None
) -> NoReturn:
    """Replace jailshim with the daemon (same PID, argv and environment less JAILSHIM_*)."""
    log.info("handover", mode="exec", command=argv)
    _flush()
    environment = clean_environment()
    default_signals(keep)  # last: from here a stop signal has its default effect, as for the daemon
    try:
        os.execve(binary, argv, environment)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise CommandNotFound(
                f"{argv[0]}: command not found at exec time ({binary})."
            ) from None
        raise CommandNotExecutable(
            f"{binary} could not be executed ({exc.strerror}); check its mode, its interpreter "
            "line and the mount's noexec."
        ) from None


def other_init() -> str | None:
    """The name of a reaping init that is PID 1 when we are not (None otherwise)."""
    if os.getpid() == 1:
        return None
    try:
        with open("/proc/1/comm", encoding="utf-8") as f:
            name = f.read().strip()
    except OSError:
        return None
    return name if name in _REAPING_INITS else None


def _supervisor_logging(level: str | None, log_format: str | None) -> list[str]:
    """The supervisor's --log-level and --log-format: jailshim's own, with `auto` decided here
    (console on a terminal, JSON otherwise). On a terminal the screen is COMMAND's: unless a
    level was asked for, the supervisor says only warnings and errors there."""
    fmt = log_format or "auto"
    if fmt == "auto":
        try:
            on_terminal = os.isatty(2)
        except OSError:
            on_terminal = False
        fmt = "console" if on_terminal else "json"
        if on_terminal and level is None:
            level = "warning"
    return ["--log-level", level or "info", "--log-format", fmt]


def supervise(
    argv: list[str],
    *,
    kill_group: bool,
    log: Logger,
    stop: StopOptions | None = None,
    keep: tuple[list[int], list[int]] | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
) -> NoReturn:
    """Become the lean supervisor: a fresh interpreter that imports nothing heavy."""
    from jailshim.init_options import StopOptions

    if (name := other_init()) is not None:
        log.warning(
            "init.double",
            pid1=name,
            detail=f"PID 1 is {name}, which already reaps zombies; --init adds a second init. "
            "Drop --init (or the other init) unless you need jailshim's signal forwarding.",
        )
    stop = stop or StopOptions()
    libc: Any = None
    if os.getpid() != 1 or stop.pdeath_signal:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    if os.getpid() != 1:
        # Orphans of the daemon are re-parented to us, not to the real PID 1, so we can reap
        # them. The attribute survives the exec below.
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    from jailshim import supervisor

    flags = ["--kill-group"] if kill_group else []
    if keep is not None:
        ignored, blocked = keep
        flags += [
            "--ignored",
            ",".join(map(str, ignored)),
            "--blocked",
            ",".join(map(str, blocked)),
        ]
    flags += _supervisor_logging(log_level, log_format)
    # Imported, not run as a script: a script is compiled from source on every start, and
    # the compiler's peak (~0.8 MB) stays resident; an import loads the cached bytecode.
    root = os.path.dirname(os.path.dirname(supervisor.__file__))
    stub = (
        f"import sys; sys.path[0] = {root!r}; from jailshim.supervisor import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    lean = [sys.executable, "-S", "-E", "-c", stub, *flags, *stop.argv(), "--", *argv]
    log.info("handover", mode="init", command=argv, kill_group=kill_group, grace=stop.grace)
    _flush()
    environment = clean_environment()
    default_signals()
    # Blocked across the exec (the mask survives it) and taken by the supervisor's first
    # sigwaitinfo: a stop signal during the interpreter's start-up is kept, not lost or fatal.
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, supervisor.WAITED)
    if stop.pdeath_signal:
        # --pdeath-signal, as tini -p: the kernel sends it when the process that started us
        # ends (it survives the exec), and the supervisor forwards it like any other. Set
        # while blocked, then checked: a starter gone since jailshim started (while the jail
        # was prepared) is told at once, not never.
        from jailshim.stopsignals import parent_at_start

        libc.prctl(PR_SET_PDEATHSIG, stop.pdeath_signal, 0, 0, 0)
        if os.getppid() != parent_at_start():
            os.kill(os.getpid(), stop.pdeath_signal)
    os.execve(sys.executable, lean, environment)
