"""Command line: parse flags and JAILSHIM_* variables, run one command, map failures to codes.

``main(argv) -> int`` is the only place that turns an exception into an exit code (through
errors.EXIT_CODES). Command modules are imported only when their command runs: start-up time is
part of the product.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from jailshim import __version__
from jailshim.errors import JailshimError, UsageError, exit_code_for

if TYPE_CHECKING:  # type names only: the modules load when a command needs them
    from jailshim.spec import Spec
    from jailshim.verify.network import WaitTarget

__all__ = ["ENV_PREFIX", "main", "parse_args"]

ENV_PREFIX = "JAILSHIM_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class _Opt(NamedTuple):
    flag: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    repeat: bool = False  # repeatable flag; the variable is comma-separated
    switch: bool = False  # takes no value; the variable is 1/0, true/false, yes/no
    number: bool = False

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


_OPTIONS = (
    _Opt("--chroot", "the jail directory (default: from the daemon's config)", "DIR"),
    _Opt("--user", "the daemon's user; checks run as this user", "NAME|UID"),
    _Opt("--group", "the daemon's group (default: the user's primary group)", "NAME|GID"),
    _Opt(
        "--device",
        "a device to provide: null zero full random urandom tty "
        "(repeatable; default: urandom random null)",
        "NAME",
        repeat=True,
    ),
    _Opt(
        "--strategy",
        "how to make nodes (default: auto)",
        choices=("auto", "mknod", "bind", "tmpfs"),
    ),
    _Opt(
        "--log-socket", "a host log socket to bring into the jail (repeatable)", "PATH", repeat=True
    ),
    _Opt("--haproxy-config", "haproxy's configuration file (default: from -f)", "FILE"),
    _Opt(
        "--wait-addr",
        "an address the daemon binds; wait until it is usable (repeatable)",
        "ADDR",
        repeat=True,
    ),
    _Opt("--timeout", "retry budget in seconds for checks (default: 30)", "SECONDS", number=True),
    _Opt("--dry-run", "print the plan and change nothing", switch=True),
    _Opt(
        "--log-format",
        "log format on stderr (default: auto, JSON unless a TTY)",
        choices=("auto", "json", "console"),
    ),
    _Opt(
        "--log-level",
        "least severe level logged (default: info)",
        choices=("debug", "info", "warning", "error"),
    ),
    _Opt("--init", "stay as PID 1: forward signals, reap zombies", switch=True),
    _Opt("--allow-writable-jail", "accept a jail writable by non-root users (warns)", switch=True),
    _Opt("--no-repair", "fail instead of replacing a wrong entry at a device's name", switch=True),
    _Opt("--no-verify", "prepare only; skip the in-jail checks", switch=True),
    _Opt("--no-config-check", "run: skip the daemon's own config check (haproxy -c)", switch=True),
    _Opt("--kill-group", "with --init, forward signals to the daemon's process group", switch=True),
    _Opt("--ensure-loopback", "bring lo up when it is down (fresh network namespace)", switch=True),
)

_COMMANDS = {
    "run": "prepare, verify, then exec COMMAND (after --)",
    "prepare": "make the jail right and exit (systemd ExecStartPre=)",
    "check": "verify only, change nothing",
    "teardown": "undo what prepare mounted or created",
    "doctor": "inspect a running daemon (--pid) or a jail (--chroot)",
    "explain": "explain error lines from a file or stdin",
}


class _Formatter(argparse.HelpFormatter):
    # argparse makes a formatter for every add_argument call; given no width it imports shutil
    # (which imports bz2 and lzma) and asks the terminal, each time, on every start.
    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            try:
                width = os.get_terminal_size(sys.stdout.fileno()).columns - 2
            except (OSError, ValueError):
                width = 98
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message[0].upper()}{message[1:]}; see `jailshim --help`.")


def _build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's subparser (the common case, and ~100
    fewer add_argument calls on every container start)."""
    common = _Parser(add_help=False)
    for opt in _OPTIONS:
        help_text = f"{opt.help} [{opt.env}]"
        if opt.switch:
            common.add_argument(
                opt.flag, action="store_const", const=True, default=None, help=help_text
            )
        else:
            common.add_argument(
                opt.flag,
                action="append" if opt.repeat else "store",
                choices=opt.choices,
                metavar=opt.metavar,
                default=None,
                help=help_text,
            )
    parser = _Parser(
        prog="jailshim",
        description="Start chrooted daemons safely: prepare the jail's dev/, prove entropy can "
        "be read inside it, then hand over to the daemon.",
        epilog="Exit codes: 0 ok, 64 usage, 69 a check still failing when the retry budget ran "
        "out, 71 OS error while preparing, 77 not permitted (names the missing power), "
        "78 configuration error (daemon config, unsafe jail), 126/127 COMMAND not executable / "
        "not found; with --init, the daemon's status or 128+signal.",
    )
    parser.add_argument("--version", action="version", version=f"jailshim {__version__}")
    # prog given: otherwise argparse builds a HelpFormatter, importing shutil (and bz2, lzma)
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser, prog="jailshim"
    )
    for name, summary in _COMMANDS.items():
        if only is not None and name != only:
            continue
        p = sub.add_parser(name, parents=[common], help=summary, description=summary)
        if name == "run":
            p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]")
        elif name == "doctor":
            p.add_argument("--pid", type=int, help="the daemon's PID")
        elif name == "explain":
            p.add_argument("file", nargs="?", metavar="FILE", help="error lines (default: stdin)")
    return parser


def _env_value(opt: _Opt, raw: str) -> Any:
    if opt.switch:
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return None
        raise UsageError(f"{opt.env}={raw!r} is not a yes/no value; use 1 or 0.")
    if opt.repeat:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if opt.choices and raw not in opt.choices:
        raise UsageError(f"{opt.env}={raw!r} is not one of {', '.join(opt.choices)}.")
    return raw


def parse_args(argv: Sequence[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    """Flags first; a JAILSHIM_<NAME> variable fills each option the flags left unset."""
    environ = dict(os.environ) if environ is None else environ
    argv = list(argv)
    only = argv[0] if argv and argv[0] in _COMMANDS else None
    args = _build_parser(only).parse_args(argv)
    for opt in _OPTIONS:
        if getattr(args, opt.dest) is None and opt.env in environ:
            setattr(args, opt.dest, _env_value(opt, environ[opt.env]))
    if args.timeout is not None:
        try:
            args.timeout = float(args.timeout)
        except ValueError:
            args.timeout = -1.0
        if not args.timeout > 0:
            raise UsageError("--timeout must be a positive number of seconds, such as 30.")
    if getattr(args, "argv", None) and args.argv[0] == "--":
        args.argv = args.argv[1:]
    return args


def _spec_from(args: argparse.Namespace, **overrides: Any) -> Spec:
    """The Spec for this run; ``overrides`` (from a daemon's config) fill unset flags."""
    from jailshim.devices import DEFAULT_DEVICES, select
    from jailshim.plan import Strategy
    from jailshim.spec import Spec, resolve_identity

    chroot = args.chroot if args.chroot is not None else overrides.get("chroot")
    if chroot is None:
        raise UsageError(f"jailshim {args.command} needs --chroot DIR (or JAILSHIM_CHROOT).")
    sockets = tuple(dict.fromkeys([*(args.log_socket or []), *overrides.get("sockets", ())]))
    targets = _targets(args, overrides.get("targets", ()))
    for path in sockets:
        if not path.startswith("/"):
            raise UsageError(f"--log-socket {path!r} must be an absolute path, such as /dev/log.")
    return Spec(
        chroot=chroot,
        devices=select(args.device or DEFAULT_DEVICES),
        identity=resolve_identity(
            args.user if args.user is not None else overrides.get("user"),
            args.group if args.group is not None else overrides.get("group"),
        ),
        strategy=Strategy(args.strategy or "auto"),
        dry_run=bool(args.dry_run),
        allow_writable_jail=bool(args.allow_writable_jail),
        repair=not args.no_repair,
        verify=not args.no_verify,
        timeout=args.timeout or 30.0,
        sockets=sockets,
        wait_targets=targets,
        ensure_loopback=bool(args.ensure_loopback),
    )


def _targets(
    args: argparse.Namespace, from_config: Sequence[WaitTarget] = ()
) -> tuple[WaitTarget, ...]:
    """--wait-addr values, then the daemon's own bind addresses, without repeats."""
    if not args.wait_addr and not from_config:
        return ()
    from jailshim.verify.network import parse_wait_addr

    targets: dict[str, WaitTarget] = {}
    for target in [*(parse_wait_addr(a) for a in args.wait_addr or []), *from_config]:
        targets.setdefault(target.ip, target)
    return tuple(targets.values())


def _dispatch(args: argparse.Namespace, log: Any) -> int:
    if args.command == "prepare":
        from jailshim.check import prepare_and_verify

        spec = _spec_from(args)
        log.bind_context(chroot=spec.chroot)
        prepare_and_verify(spec, log.get_logger())
        return 0
    if args.command == "check":
        from jailshim.check import check

        if args.chroot is None and args.wait_addr:  # network readiness only
            check(
                None,
                log.get_logger(),
                targets=_targets(args),
                ensure_loopback=bool(args.ensure_loopback),
                timeout=args.timeout or 30.0,
            )
            return 0
        spec = _spec_from(args)
        log.bind_context(chroot=spec.chroot)
        check(spec, log.get_logger())
        return 0
    if args.command == "run":
        from jailshim.run import run

        return run(args, log)
    if args.command == "doctor":
        from jailshim.doctor import doctor

        return doctor(args, log.get_logger())
    if args.command == "explain":
        from jailshim.explain import explain

        if args.file in (None, "-"):
            return explain(sys.stdin)
        try:
            with open(args.file, encoding="utf-8", errors="replace") as f:
                return explain(f)
        except OSError as exc:
            raise UsageError(
                f"{args.file} cannot be read ({exc.strerror}); give a log file."
            ) from None
    if args.command == "teardown":
        from jailshim.jail.safepath import Jail
        from jailshim.teardown import teardown

        spec = _spec_from(args)
        log.bind_context(chroot=spec.chroot)
        with Jail(spec.chroot) as jail:
            teardown(jail, log.get_logger())
        return 0
    raise UsageError(
        f"jailshim {args.command} is not implemented yet; see the README for what works."
    )


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived while jailshim worked (before any hand-over)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, _frame: object) -> None:
    # Unwinding lets apply's undo stack run: a container stopped during prepare leaves no
    # half-made jail. exec() resets these handlers for the daemon.
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    from jailshim import log

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
    except UsageError as exc:
        log.setup(os.environ.get(ENV_PREFIX + "LOG_FORMAT", "auto"))
        return _report(exc, log)
    log.setup(args.log_format or "auto", args.log_level or "info")
    log.bind_context(command=args.command)
    try:
        return _dispatch(args, log)
    except JailshimError as exc:
        return _report(exc, log)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        log.get_logger().warning(
            "interrupted", signal=signal.Signals(signum).name, detail="stopped before hand-over"
        )
        return 128 + signum
    except Exception as exc:  # a bug: still one sentence; the traceback only when asked for
        logger = log.get_logger()
        logger.error(
            "failed",
            error=f"jailshim hit an internal error ({exc!r}); please report it with the output "
            "of the same command run with --log-level debug.",
            exit_code=70,
        )
        logger.debug("traceback", exc_info=True)
        return 70


def _report(exc: JailshimError, log: Any) -> int:
    code = exit_code_for(exc)
    log.get_logger().error("failed", error=exc.sentence, exit_code=code, **exc.facts)
    return code
