"""`jailshim run -- COMMAND`: read the daemon's config, prepare, verify, check it, hand over."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from jailshim import daemons
from jailshim.errors import (
    CommandNotExecutable,
    CommandNotFound,
    ConfigError,
    JailshimError,
    UsageError,
)

if TYPE_CHECKING:
    from jailshim.daemons import DaemonAdapter, DaemonPlan, PendingCheck
    from jailshim.init_options import StopOptions
    from jailshim.logs import Logger, LogModule
    from jailshim.options import RunOptions
    from jailshim.spec import Identity, Spec
    from jailshim.verify.probe import Probe

__all__ = ["interpreter", "resolve_command", "run", "vet_jail"]


def _which(name: str) -> str | None:
    # shutil.which would import shutil, which imports bz2 and lzma: ~1 ms on every start.
    for directory in os.get_exec_path():
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def resolve_command(argv: list[str]) -> str:
    """The executable COMMAND names; fails before anything is prepared if it cannot run,
    including a script whose #! interpreter is missing or not executable."""
    name = argv[0]
    path = name if "/" in name else _which(name)
    if path is None or not os.path.exists(path):
        raise CommandNotFound(f"{name}: command not found; install it or give its full path.")
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise CommandNotExecutable(
            f"{path} is not executable; check its mode and the mount's noexec."
        )
    _check_interpreter(path)
    return path


_BINPRM_BUF = 256  # what the kernel reads of a file to find its #! line
_MAX_NESTING = 4  # Linux follows an interpreter that is itself a script this deep


def interpreter(path: str) -> str | None:
    """The interpreter a #! line names ('' when the line names none); None when ``path``
    does not start with #! or cannot be read (execute-only: the kernel can, we cannot)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        head = os.read(fd, _BINPRM_BUF)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not head.startswith(b"#!"):
        return None
    # As binfmt_script reads it: spaces and tabs before the name, which ends at a space, a tab,
    # the end of the line or a NUL ("/bin/sh\r" from a DOS line end is its own, missing name).
    line = head[2:].split(b"\n", 1)[0].split(b"\0", 1)[0].lstrip(b" \t")
    end = min((i for i in (line.find(b" "), line.find(b"\t")) if i >= 0), default=len(line))
    return os.fsdecode(line[:end])


def _check_interpreter(path: str) -> None:
    script = path
    for _ in range(_MAX_NESTING):
        interp = interpreter(script)
        if interp is None:
            return
        if not interp:
            raise CommandNotExecutable(
                f"{script} starts with #! but names no interpreter; fix its first line."
            )
        if not os.path.exists(interp):
            raise CommandNotFound(
                f"{script}: its interpreter {interp!r} (from its #! line) is not found; "
                "install it or fix the #! line."
            )
        if os.path.isdir(interp) or not os.access(interp, os.X_OK):
            raise CommandNotExecutable(
                f"{script}: its interpreter {interp} (from its #! line) is not executable; "
                "check its mode and the mount's noexec, or fix the #! line."
            )
        script = interp


def vet_jail(chroot: str, *, allow_writable: bool, identity: Identity | None) -> None:
    """The jail as prepare will judge it (jail/safepath.Jail: no symlink, not one of the host's
    own directories; swappable_path: no one but root can change where its path leads;
    jail/survey.check_ownership: who may write it), before anything acts on
    it; nothing is changed here. Without the daemon's identity (its user could not be
    resolved) a jail a non-root user can write is refused, as for anyone else's."""
    from jailshim.jail.safepath import Jail, swappable_path
    from jailshim.jail.survey import check_ownership

    with Jail(chroot) as jail:
        # the checker and the daemon act on the path by name, after this look
        swappable = jail.root_movable() or swappable_path(chroot, "the daemon's checker")
        if swappable:
            raise ConfigError(swappable, chroot=chroot)
        dev_fd = jail.open_dir("dev")
        try:
            check_ownership(jail, dev_fd, allow_writable=allow_writable, daemon=identity)
        finally:
            if dev_fd is not None:
                os.close(dev_fd)


def _check_notify_socket(path: str) -> None:
    """$NOTIFY_SOCKET that can never be the service manager's socket is refused (78) before
    anything is prepared; a missing one is left to the check in the jail."""
    from jailshim.verify.findings import notify_refusal

    try:
        mode: int | None = os.stat(path).st_mode
    except OSError:
        mode = None
    refusal = notify_refusal(path, mode)
    if refusal:
        raise ConfigError(refusal)


def _stop_options(options: RunOptions) -> StopOptions:
    """The supervisor's stop options (--init) from the run's record."""
    from jailshim.init_options import DEFAULT_GRACE, StopOptions

    return StopOptions(
        grace=DEFAULT_GRACE if options.grace is None else options.grace,
        rewrites=options.rewrite_signal,
        exit_map=options.map_exit,
        stop_delay=options.stop_delay,
        pdeath_signal=options.pdeath_signal,
    )


def run(options: RunOptions, log: LogModule) -> int:
    from jailshim import handover

    argv = _command_of(options)
    binary = resolve_command(argv)
    logger = log.get_logger()
    # the registry is a table of names: only a daemon with an adapter imports one
    chosen = daemons.choose(options, argv, binary)
    adapter, plan, notify = _daemon_plan(chosen, logger)
    spec, chroot, spec_error = _spec_for(options, plan, binary, notify)
    pending = None
    if adapter is not None and plan is not None:
        pending = _config_check(
            options, adapter, plan, spec=spec, chroot=chroot, spec_error=spec_error, logger=logger
        )
    first = _fork_probe(spec, pending) if spec is not None else None
    if spec_error is not None:
        raise spec_error
    if spec is None:
        _without_jail(options, plan, pending, logger)
    else:
        from jailshim.ready import prepare_and_verify

        log.bind_context(chroot=spec.chroot)
        prepare_and_verify(spec, logger, then_exec=True, config_check=pending, first=first)
    if options.dry_run:
        return 0
    keep = handover.inherited_signals() if options.inherited_signals == "keep" else None
    if options.init:
        handover.supervise(
            argv,
            kill_group=options.kill_group,
            log=logger,
            stop=_stop_options(options),
            keep=keep,
            log_level=options.log_level,
            log_format=options.log_format,
        )
    handover.exec_command(binary, argv, logger, keep)
    return 0  # not reached: exec replaced this process


def _command_of(options: RunOptions) -> list[str]:
    """The daemon's command line, given after --."""
    if not options.argv:
        raise UsageError(
            "jailshim run needs the daemon's command after --, such as "
            "`jailshim run -- /usr/sbin/DAEMON -c /etc/DAEMON.conf`."
        )
    return list(options.argv)


def _daemon_plan(
    chosen: tuple[DaemonAdapter, list[str]] | None, logger: Logger
) -> tuple[DaemonAdapter | None, DaemonPlan | None, str]:
    """The adapter chosen (if any), what it read of the daemon's config (logged), and the
    notify socket to bring into the jail ('' for none)."""
    if chosen is None:
        return None, None, ""
    adapter, daemon_argv = chosen
    plan = daemons.plan_for(adapter, daemon_argv, os.environ)
    daemons.log_read(logger, adapter, plan)
    notify = os.environ.get("NOTIFY_SOCKET", "")
    if not (plan.notify and notify.startswith("/")):
        return adapter, plan, ""
    # it sends READY=1 from inside its jail: the socket must be there, at the same
    # path, like a log socket (an abstract @socket is reachable from any root)
    _check_notify_socket(notify)
    logger.info("notify_socket", path=notify, detail="brought into the jail")
    return adapter, plan, notify


def _spec_for(
    options: RunOptions, plan: DaemonPlan | None, binary: str, notify: str
) -> tuple[Spec | None, str | None, JailshimError | None]:
    """The run's spec and jail (None, None: no jail), or the error building it (kept: the
    daemon's checker, if any, is the more basic news and is heard first)."""
    if options.chroot is None and (plan is None or plan.chroot is None):
        return None, None, None
    from jailshim.specs import build_spec, chroot_of

    chroot = chroot_of(options, "run", plan)
    try:
        # the notify socket is checked from inside the jail as the daemon's user
        spec = build_spec(options, "run", plan, executable=binary, notify_socket=notify)
    except JailshimError as exc:  # its checker's verdict, if any, is the more basic news
        return None, chroot, exc
    if spec.identity is not None and plan is not None:
        # check as exactly the uid, gid and groups the daemon will have, or it proves the
        # wrong thing (a daemon that keeps its starting gid checks with gid 0)
        group_given = options.group is not None or plan.group is not None
        spec = spec._replace(identity=plan.identity_rule(spec.identity, group_given))
    return spec, chroot, None


def _config_check(
    options: RunOptions,
    adapter: DaemonAdapter,
    plan: DaemonPlan,
    *,
    spec: Spec | None,
    chroot: str | None,
    spec_error: JailshimError | None,
    logger: Logger,
) -> PendingCheck | None:
    """The daemon's own checker, started (None: skipped). With ``spec_error`` its verdict is
    awaited here: a rejection, in the daemon's words, wins over the spec's error."""
    if options.no_config_check:
        return None
    if options.dry_run and adapter.check_writes:
        logger.info(
            "config_check",
            outcome="skipped",
            detail=f"{adapter.name}'s checker changes files; --dry-run changes nothing",
        )
        return None
    # The jail is judged before the checker runs, as prepare judges it: `postfix
    # check` with queue_directory = / made /active, /bounce … in the real / and then
    # the refusal came (issue 25). The checker runs while the jail is prepared; its
    # verdict is awaited before hand-over, and a rejection takes the prepare back.
    if chroot is not None:
        vet_jail(
            chroot,
            allow_writable=options.allow_writable_jail,
            identity=spec.identity if spec is not None else None,
        )
    for path in plan.checker_dirs:
        daemons.refuse_host_directory(path, f"{adapter.name}'s checker")
    pending = plan.start_check()
    if spec_error is not None:
        pending.finish()  # its rejection, in the daemon's words, wins
    return pending


def _fork_probe(spec: Spec, pending: PendingCheck | None) -> Probe | None:
    """The first probe child, forked now: it was the run's critical path (issue 28), and
    forked before check and the prepare modules are imported its loader and OpenSSL set-up
    overlap them. After the daemon's checker is started, not before: where there is one it is
    the longer path (`haproxy -c` ~20 ms); started after the fork, the run took ~5 ms more."""
    from jailshim.verify.probe import start_probe

    try:
        return start_probe(spec)
    except BaseException:
        if pending is not None:
            pending.cancel()
        raise


def _without_jail(
    options: RunOptions, plan: DaemonPlan | None, pending: PendingCheck | None, logger: Logger
) -> None:
    """No jail to prepare: the checker's verdict, then the addresses to wait for, if any."""
    if pending is not None:
        pending.finish()
    logger.warning(
        "no_jail",
        detail="no --chroot and no chroot in the daemon's config: nothing to prepare",
    )
    from jailshim.specs import wait_targets_of

    targets = wait_targets_of(options, plan.wait_targets if plan is not None else ())
    if targets and not options.no_verify and not options.dry_run:
        from jailshim.check import check_network

        check_network(options, logger, targets)
