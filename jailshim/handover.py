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

__all__ = ["clean_environment", "default_signals", "exec_command", "other_init", "supervise"]

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


def clean_environment() -> dict[str, str]:
    """The environment for the daemon: everything but jailshim's own JAILSHIM_* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JAILSHIM_")}


def default_signals() -> None:
    """Every signal to its default disposition and an empty signal mask, as tini and dumb-init
    leave them for their child.

    execve() resets caught signals but keeps ignored ones and the mask: the daemon would
    inherit Python's SIG_IGN for SIGPIPE and SIGXFSZ (a shell under it prints "Broken pipe"
    instead of dying quietly), and whatever the runtime ignored or blocked.
    """
    import signal

    for sig in range(1, signal.NSIG):
        # SIGKILL, SIGSTOP and glibc's reserved real-time signals refuse: nothing to reset
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def exec_command(binary: str, argv: list[str], log: Any) -> NoReturn:
    """Replace jailshim with the daemon (same PID, argv and environment less JAILSHIM_*)."""
    log.info("handover", mode="exec", command=argv)
    _flush()
    environment = clean_environment()
    default_signals()  # last: from here a stop signal has its default effect, as for the daemon
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


def supervise(
    argv: list[str], *, kill_group: bool, log: Any, stop: StopOptions | None = None
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
    if os.getpid() != 1:
        # Orphans of the daemon are re-parented to us, not to the real PID 1, so we can reap
        # them. The attribute survives the exec below.
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    from jailshim import supervisor

    stop = stop or StopOptions()
    flags = ["--kill-group"] if kill_group else []
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
    os.execve(sys.executable, lean, environment)
