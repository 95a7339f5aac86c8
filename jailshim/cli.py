"""Command line: parse flags and JAILSHIM_* variables, run one command, map failures to codes.

``main(argv) -> int`` is the only place that turns an exception into an exit code (through
errors.EXIT_CODES). Command modules are imported only when their command runs: start-up time is
part of the product. Each command takes only its own options; a JAILSHIM_* variable for an
option the command does not take is ignored (a container sets them for every command).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TextIO, cast

from jailshim import __version__, stopsignals
from jailshim.errors import (
    ConfigError,
    JailshimError,
    NoInput,
    PrepareOSError,
    UsageError,
    exit_code_for,
    said,
)

if TYPE_CHECKING:  # type names only: the modules load when a command needs them
    from jailshim.devices import Device
    from jailshim.spec import Identity, Spec
    from jailshim.verify.network import WaitTarget

__all__ = ["ENV_PREFIX", "MAX_TIMEOUT", "main", "parse_args"]

ENV_PREFIX = "JAILSHIM_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# The stop signals that came ignored: jailshim catches them until the hand-over, which gives
# them back ignored with --inherited-signals keep.
IGNORED_AT_START: set[int] = set()
# Who started us, read before the jail is prepared: --pdeath-signal is set only at the hand-over,
# and a starter that died meanwhile must still be noticed (getppid() then names the reaper).
PARENT_AT_START = os.getppid()
MAX_TIMEOUT = 86400.0  # a day: a larger retry budget is a typo, not a plan
_PATH_MAX = 4096  # the kernel's limit on a path, the terminating NUL included
_NAME_MAX = 255  # and on one name in it

RUN, PREPARE, CHECK, TEARDOWN, DOCTOR, EXPLAIN = (
    "run",
    "prepare",
    "check",
    "teardown",
    "doctor",
    "explain",
)
_AS_USER = (RUN, PREPARE, CHECK, DOCTOR)  # the commands that look into a jail as a user
_LOGGING = (RUN, PREPARE, CHECK, TEARDOWN, DOCTOR)


class _Opt(NamedTuple):
    flag: str
    help: str
    commands: tuple[str, ...]  # the commands that take it
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    repeat: bool = False  # repeatable flag; the variable is comma-separated
    switch: bool = False  # takes no value; the variable is 1/0, true/false, yes/no
    several: bool = False  # one or more values after the flag (--pid $(pidof haproxy))

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


_OPTIONS = (
    _Opt(
        "--chroot",
        "the jail directory (run: default from the daemon's config)",
        (RUN, PREPARE, CHECK, TEARDOWN, DOCTOR),
        "DIR",
    ),
    _Opt(
        "--pid",
        "the running daemon(s) to inspect: one or more PIDs, e.g. $(pidof haproxy); a PID that "
        "is not chrooted but whose children are (a master) stands for those children",
        (DOCTOR,),
        "PID",
        several=True,
    ),
    _Opt(
        "--all",
        "every chrooted daemon on this host and in its containers, each judged as --pid judges "
        "it (a master and its workers: one daemon)",
        (DOCTOR,),
        switch=True,
    ),
    _Opt(
        "--name",
        "with --all: only daemons of this name (repeatable)",
        (DOCTOR,),
        "NAME",
        repeat=True,
    ),
    _Opt(
        "--format",
        "with --all: table (on a terminal), json (JSON lines, otherwise), prometheus "
        "(node_exporter's textfile collector), nagios (a plugin's status line and exit code)",
        (DOCTOR,),
        choices=("auto", "table", "json", "prometheus", "nagios"),
    ),
    _Opt(
        "--output",
        "with --all: write to FILE atomically (a .prom file in the textfile collector's directory)",
        (DOCTOR,),
        "FILE",
    ),
    _Opt(
        "--user",
        "the daemon's user; checks run as it (a user name wins over a UID; +UID is always a UID)",
        _AS_USER,
        "NAME|UID",
    ),
    _Opt(
        "--group",
        "the daemon's group (default: the user's primary group; +GID is always a GID)",
        _AS_USER,
        "NAME|GID",
    ),
    _Opt(
        "--device",
        "a device to provide as well as the defaults (urandom random null; doctor checks "
        "urandom random): null zero full random urandom tty (repeatable)",
        _AS_USER,
        "NAME",
        repeat=True,
    ),
    _Opt(
        "--only-devices",
        "exactly the --device names, without the defaults",
        _AS_USER,
        switch=True,
    ),
    _Opt(
        "--crypto-lib",
        "the crypto library to probe instead of COMMAND's (or, for doctor, the daemon's mapped) "
        "ones: a libcrypto, libgnutls ... file (repeatable)",
        (RUN, CHECK, DOCTOR),
        "PATH",
        repeat=True,
    ),
    _Opt(
        "--read-filter",
        "read each daemon's seccomp filters to learn what getrandom() does for it: a ptrace "
        "stop of microseconds (needs CAP_SYS_ADMIN); without it a daemon with a filter is "
        '"cannot tell" where that matters',
        (DOCTOR,),
        switch=True,
    ),
    _Opt(
        "--strategy",
        "how to make nodes (default: auto)",
        (RUN, PREPARE),
        choices=("auto", "mknod", "bind", "tmpfs"),
    ),
    _Opt(
        "--log-socket",
        "a host log socket to bring into the jail (repeatable)",
        (RUN, PREPARE),
        "PATH",
        repeat=True,
    ),
    _Opt(
        "--file",
        "a host file to place at the same path in the jail, such as /etc/hosts (repeatable)",
        (RUN, PREPARE),
        "PATH",
        repeat=True,
    ),
    _Opt(
        "--files",
        "a named set of host files the daemon needs in its jail (repeatable): time "
        "(etc/localtime), resolver (etc/resolv.conf, hosts, host.conf, nsswitch.conf, gai.conf), "
        "services (etc/services, protocols); check proves each one from inside",
        (RUN, PREPARE, CHECK),
        "SET",
        choices=("time", "resolver", "services"),
        repeat=True,
    ),
    _Opt(
        "--file-mode",
        "how --file/--files are placed (default: copy; bind: read-only bind, sees host changes)",
        (RUN, PREPARE),
        choices=("copy", "bind"),
    ),
    _Opt(
        "--resolve",
        "a name getaddrinfo() must resolve inside the jail as the daemon's user, retried within "
        "--timeout (repeatable)",
        (RUN, PREPARE, CHECK),
        "NAME",
        repeat=True,
    ),
    _Opt("--haproxy-config", "haproxy's configuration file (default: from -f)", (RUN,), "FILE"),
    _Opt(
        "--daemon",
        "read COMMAND's config with this daemon's adapter (default: COMMAND's name): "
        "haproxy named nsd postfix stunnel unbound",
        (RUN,),
        "NAME",
    ),
    _Opt(
        "--wait-addr",
        "an address the daemon binds; wait until it is usable (repeatable)",
        (RUN, PREPARE, CHECK),
        "ADDR",
        repeat=True,
    ),
    _Opt(
        "--ensure-loopback",
        "bring lo up when it is down (fresh network namespace)",
        (RUN, PREPARE, CHECK),
        switch=True,
    ),
    _Opt(
        "--timeout",
        "retry budget in seconds for checks, and the longest wait for the jail's lock "
        "(default: 30; at most 86400)",
        (RUN, PREPARE, CHECK, TEARDOWN),
        "SECONDS",
    ),
    _Opt("--dry-run", "print the plan and change nothing", (RUN, PREPARE, TEARDOWN), switch=True),
    _Opt("--no-verify", "prepare only; skip the in-jail checks", (RUN, PREPARE), switch=True),
    _Opt(
        "--no-repair",
        "fail instead of replacing a wrong entry at a device's name",
        (RUN, PREPARE),
        switch=True,
    ),
    _Opt(
        "--allow-writable-jail",
        "accept a jail writable by non-root users (warns)",
        (RUN, PREPARE),
        switch=True,
    ),
    _Opt(
        "--no-config-check",
        "skip the daemon's own config check (haproxy -c, unbound-checkconf, nsd-checkconf, "
        "named-checkconf, postfix check)",
        (RUN,),
        switch=True,
    ),
    _Opt(
        "--init",
        "stay as PID 1: forward signals, reap zombies, stop every descendant at the end",
        (RUN,),
        switch=True,
    ),
    _Opt(
        "--kill-group",
        "with --init, forward signals to the daemon's process group",
        (RUN,),
        switch=True,
    ),
    _Opt(
        "--grace",
        "with --init, seconds from the stop signal (or COMMAND's exit) to SIGKILL for whatever "
        "is left of the process tree (default: 10; 0 to 86400)",
        (RUN,),
        "SECONDS",
    ),
    _Opt(
        "--rewrite-signal",
        "with --init, forward signal FROM as TO, such as TERM:QUIT; TO 0 drops FROM (repeatable)",
        (RUN,),
        "FROM:TO",
        repeat=True,
    ),
    _Opt(
        "--map-exit",
        "with --init, exit with CODE2 when COMMAND's status is CODE1, such as 143:0 (repeatable)",
        (RUN,),
        "CODE1:CODE2",
        repeat=True,
    ),
    _Opt(
        "--stop-delay",
        "with --init, seconds to hold a stop signal (TERM, INT, QUIT) before forwarding it, so "
        "a load balancer can drain first; a second one goes at once (default: 0)",
        (RUN,),
        "SECONDS",
    ),
    _Opt(
        "--pdeath-signal",
        "with --init, the signal the supervisor gets (and forwards) when the process that "
        "started jailshim ends, such as TERM (as tini -p)",
        (RUN,),
        "SIG",
    ),
    _Opt(
        "--inherited-signals",
        "the daemon's signal settings: reset (default: every signal at its default, none "
        "blocked) or keep the ignored set and mask jailshim was started with",
        (RUN,),
        choices=("reset", "keep"),
    ),
    _Opt(
        "--log-format",
        "log format on stderr (default: auto, JSON unless a TTY)",
        _LOGGING,
        choices=("auto", "json", "console"),
    ),
    _Opt(
        "--log-level",
        "least severe level logged (default: info)",
        _LOGGING,
        choices=("debug", "info", "warning", "error"),
    ),
)

_COMMANDS = {
    RUN: "prepare, verify, then exec COMMAND (after --)",
    PREPARE: "make the jail right and exit (systemd ExecStartPre=)",
    CHECK: "verify only, change nothing",
    TEARDOWN: "undo what prepare mounted or created",
    DOCTOR: "inspect a running daemon (--pid) or a jail (--chroot)",
    EXPLAIN: "explain error lines from a file or stdin",
}

# Each command's exit codes, in its --help (scripts branch on them); the numbers are
# errors.EXIT_CODES'.
_FAILURES = (
    "64 usage, 71 OS error, 77 not permitted (names the missing power), 78 the jail is missing "
    "or unsafe"
)
_EXITS = {
    RUN: "Exit codes: 64 usage, 69 a check failed (still failing when the retry budget ran out), "
    "71 OS error, 77 not permitted (names the missing power), 78 configuration error (daemon "
    "config, unsafe jail), 126/127 COMMAND not executable / not found; on success jailshim "
    "becomes COMMAND, so its status is COMMAND's (with --init: COMMAND's status or "
    "128+signal).",
    PREPARE: f"Exit codes: 0 prepared (and verified), 69 a check failed, {_FAILURES}.",
    CHECK: "Exit codes: 0 verified, 69 a check failed (still failing when the retry budget ran "
    f"out), {_FAILURES}.",
    TEARDOWN: f"Exit codes: 0 undone (or nothing to undo), {_FAILURES}.",
    # errors.VERDICT_ERRORS in words
    DOCTOR: "Exit codes: 0 safe (no action needed); 69 will fail, or safe now but fragile "
    "(action needed: the remedy is printed); 75 cannot tell (rerun with --read-filter, "
    "--crypto-lib, or more powers, as the verdict says); 64 usage (also: the PID is gone or a "
    "zombie), 71 OS error, 77 not permitted (cannot read the daemon's /proc entries: the "
    "sentence says why), 78 no such jail.",
    EXPLAIN: "Exit codes: 0 something recognised, 1 nothing recognised, 64 usage, 66 FILE "
    "cannot be read.",
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
            except (AttributeError, OSError, ValueError):  # no stdout, not a terminal, closed
                width = 98
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message[0].upper()}{message[1:]}; see `{self.prog} --help`.")


def _closest(word: str, known: Sequence[str]) -> str:
    """`` (did you mean X?)`` for a mistyped ``word``, or nothing when none is close."""
    import difflib

    found = difflib.get_close_matches(word, known, n=1, cutoff=0.75)
    return f" (did you mean {found[0]}?)" if found else ""


def _not_taken(command: str, extra: Sequence[str]) -> UsageError:
    """The words ``command`` does not take, named one by one: an unknown option without the
    value that followed it (`--chrot /x` was reported as "--chrot /x", glued), the option it
    resembles, or the commands that do take it."""
    own = ["--help", *(o.flag for o in _OPTIONS if command in o.commands)]
    named: list[str] = []
    after_option = False
    for word in extra:
        if word.startswith("-") and word != "-":
            flag = word.split("=", 1)[0]
            others = [c for c in _COMMANDS for o in _OPTIONS if o.flag == flag and c in o.commands]
            if others:
                hint = f" (an option of jailshim {' and '.join(others)})"
            else:
                hint = _closest(flag, own)
            named.append(f"{flag}{hint}")
            after_option = True
        elif after_option:  # the unknown option's value, most likely: not a word of its own
            after_option = False
        else:
            named.append(repr(word))
    return UsageError(
        f"jailshim {command} does not take {', '.join(named)}; see "
        f"`jailshim {command} --help` for its options."
    )


def _build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's subparser (the common case, and ~100
    fewer add_argument calls on every container start)."""
    parser = _Parser(
        prog="jailshim",
        description="Start chrooted daemons safely: prepare the jail's dev/, prove entropy can "
        "be read inside it, then hand over to the daemon.",
        epilog="`jailshim COMMAND --help` lists a command's options and their JAILSHIM_* "
        "variables. Exit codes: 0 ok, 64 usage, 66 an input file cannot be read (explain "
        "FILE), 69 a check failed (or still failing when the retry budget ran out; doctor: "
        "action needed), 71 OS error, 75 doctor cannot tell (rerun as it says), 77 not "
        "permitted (names the missing power), 78 configuration error (daemon config, unsafe "
        "jail), 126/127 COMMAND not executable / "
        "not found; with --init, the daemon's status or 128+signal.",
    )
    # -V as well: most tools take it, and argparse read it as a missing COMMAND
    parser.add_argument("-V", "--version", action="version", version=f"jailshim {__version__}")
    # prog given: otherwise argparse builds a HelpFormatter, importing shutil (and bz2, lzma)
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser, prog="jailshim"
    )
    for name, summary in _COMMANDS.items():
        if only is not None and name != only:
            continue
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=(
                f"jailshim {name} reads no JAILSHIM_* variable."
                if name == EXPLAIN
                else "Every option is also a variable (shown in brackets); flags win. Variables "
                f"for options jailshim {name} does not take are ignored."
            )
            + " "
            + _EXITS[name],
        )
        for opt in _OPTIONS:
            if name not in opt.commands:
                continue
            help_text = f"{opt.help} [{opt.env}]"
            if opt.switch:
                p.add_argument(
                    opt.flag, action="store_const", const=True, default=None, help=help_text
                )
            elif opt.several:
                p.add_argument(
                    opt.flag, action="extend", nargs="+", metavar=opt.metavar, help=help_text
                )
            else:
                p.add_argument(
                    opt.flag,
                    action="append" if opt.repeat else "store",
                    choices=opt.choices,
                    metavar=opt.metavar,
                    default=None,
                    help=help_text,
                )
        if name == RUN:
            p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]")
        elif name == CHECK:
            p.add_argument(
                "argv",
                nargs=argparse.REMAINDER,
                metavar="-- COMMAND [ARG...]",
                help="the daemon: its own crypto libraries are probed (not run)",
            )
        elif name == EXPLAIN:
            # not dest "file": that is --file's (jail files), which explain does not take
            p.add_argument(
                "log_file", nargs="?", metavar="FILE", help="error lines (default: stdin)"
            )
    return parser


def _env_value(opt: _Opt, raw: str) -> Any:
    if opt.switch:
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return None
        raise UsageError(f"{opt.env}={raw!r} is not a yes/no value; use 1 or 0.")
    if opt.repeat:
        parts = [part.strip() for part in raw.split(",") if part.strip()]
        wrong = [p for p in parts if opt.choices and p not in opt.choices]
        if wrong:
            raise UsageError(
                f"{opt.env}={raw!r}: {wrong[0]!r} is not one of {', '.join(opt.choices or ())}."
            )
        return parts
    if opt.several:
        return [raw]  # split like the flag's values, below
    if opt.choices and raw not in opt.choices:
        raise UsageError(f"{opt.env}={raw!r} is not one of {', '.join(opt.choices)}.")
    return raw


def origin(args: argparse.Namespace, dest: str, default: str = "") -> str:
    """Where an option's value came from: its flag, its JAILSHIM_ variable, or ``default``."""
    found: dict[str, str] = getattr(args, "origin", {})
    return found.get(dest, default or "--" + dest.replace("_", "-"))


def _seconds(raw: str, source: str) -> float:
    from jailshim.numbers import plain_seconds

    value = plain_seconds(raw)
    if not 0 < value <= MAX_TIMEOUT:  # NaN fails every comparison
        raise UsageError(
            f"{said(source, raw)} must be a positive number of seconds, at most "
            f"{MAX_TIMEOUT:.0f} (a day), such as 30."
        )
    return value


def _pid(raw: str, source: str) -> int:
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 2**31:
        raise UsageError(f"{said(source, raw)} is not a process ID; give the daemon's PID.")
    return int(text)


def _pids(raws: list[str], source: str) -> tuple[int, ...]:
    """Every PID given, in order, without repeats; a value may hold several, separated by
    spaces or commas (a quoted "$(pidof haproxy)", JAILSHIM_PID=71,73)."""
    parts = [part for raw in raws for part in raw.replace(",", " ").split()] or [""]
    return tuple(dict.fromkeys(_pid(part, source) for part in parts))


def parse_args(argv: Sequence[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    """Flags first; a JAILSHIM_<NAME> variable fills each option the flags left unset.

    Options the command does not take are None, whatever the environment says.
    ``args.origin`` records, per option, the flag or variable its value came from.
    """
    environ = dict(os.environ) if environ is None else environ
    argv = list(argv)
    only = argv[0] if argv and argv[0] in _COMMANDS else None
    if argv and only is None and not argv[0].startswith("-"):
        raise UsageError(
            f"{argv[0]!r} is not a jailshim command{_closest(argv[0], list(_COMMANDS))}; the "
            f"commands are {', '.join(_COMMANDS)} (see `jailshim --help`)."
        )
    args, extra = _build_parser(only).parse_known_args(argv)
    if extra:
        raise _not_taken(args.command, extra)
    found: dict[str, str] = {}
    for opt in _OPTIONS:
        if args.command not in opt.commands:
            setattr(args, opt.dest, None)
        elif getattr(args, opt.dest) is not None:
            found[opt.dest] = opt.flag
        elif opt.env in environ:
            setattr(args, opt.dest, _env_value(opt, environ[opt.env]))
            found[opt.dest] = opt.env
    args.origin = found
    if args.timeout is not None:
        args.timeout = _seconds(args.timeout, found["timeout"])
    if args.grace is not None or args.rewrite_signal or args.map_exit or args.stop_delay:
        from jailshim import init_options

        if args.grace is not None:
            args.grace = init_options.grace(args.grace, found["grace"])
        if args.stop_delay is not None:
            args.stop_delay = init_options.stop_delay(args.stop_delay, found["stop_delay"])
        if args.rewrite_signal:
            args.rewrite_signal = init_options.rewrites(
                args.rewrite_signal, found["rewrite_signal"]
            )
        if args.map_exit:
            args.map_exit = init_options.exit_map(args.map_exit, found["map_exit"])
    if args.pdeath_signal is not None:
        from jailshim import init_options

        args.pdeath_signal = init_options.pdeath_signal(args.pdeath_signal, found["pdeath_signal"])
    _needs_init(args)
    args.pids = None
    if args.pid is not None:  # every PID given in args.pids; args.pid is the first
        args.pids = _pids(args.pid, found["pid"])
        args.pid = args.pids[0]
    if args.only_devices and not args.device:
        raise UsageError(
            f"{origin(args, 'only_devices')} needs at least one --device NAME "
            "(or JAILSHIM_DEVICE); without it no device would be provided."
        )
    if args.command == CHECK and args.argv and args.argv[0] != "--":
        # check only looks at COMMAND's libraries: a stray word is a typo, not a daemon
        raise UsageError(
            f"jailshim check does not take {' '.join(args.argv)}; give the daemon after --, "
            "such as `jailshim check --chroot DIR -- /usr/sbin/haproxy`."
        )
    if getattr(args, "argv", None) and args.argv[0] == "--":
        args.argv = args.argv[1:]
    return args


_INIT_ONLY = (
    "grace",
    "rewrite_signal",
    "map_exit",
    "kill_group",
    "stop_delay",
    "pdeath_signal",
)


def _needs_init(args: argparse.Namespace) -> None:
    """--grace, --rewrite-signal, --map-exit, --kill-group, --stop-delay and --pdeath-signal
    act only in the supervisor that --init starts: without it they were silently ignored (a
    daemon's exit status never mapped)."""
    if args.command != RUN or args.init:
        return
    given = [dest for dest in _INIT_ONLY if getattr(args, dest, None) not in (None, [])]
    if given:
        raise UsageError(
            f"{origin(args, given[0])} applies only with --init (jailshim staying as PID 1 to "
            "forward signals and stop the daemon); add --init, or drop it."
        )


def _path(path: str, source: str, *, config: bool = False) -> str:
    """``path`` if the kernel can take it; else one sentence naming where it came from."""
    if not path.strip():
        raise UsageError(f"{source} is empty; give the jail directory, such as /var/lib/haproxy.")
    raw = os.fsencode(path)
    longest = max(len(name) for name in raw.split(b"/"))
    if len(raw) < _PATH_MAX and longest <= _NAME_MAX:
        return path
    error = ConfigError if config else UsageError
    raise error(
        f"{said(source, short(path))} is too long for the kernel ({len(raw)} bytes, the longest "
        f"name {longest}; the limits are {_PATH_MAX - 1} and {_NAME_MAX}): give a shorter path."
    )


def short(text: str, keep: int = 60) -> str:
    """``text`` cut in the middle when longer than ``keep`` characters (for sentences)."""
    if len(text) <= keep:
        return text
    return f"{text[: keep // 2]}…{text[-keep // 2 :]}"


def devices_of(args: argparse.Namespace, default: Sequence[str]) -> tuple[Device, ...]:
    """--device names added to ``default``; with --only-devices, exactly the names."""
    from jailshim.devices import select

    names = list(args.device or ())
    return select(names if args.only_devices else [*default, *names], origin(args, "device"))


def identity_of(args: argparse.Namespace, **overrides: Any) -> Identity | None:
    """--user/--group resolved on the host; ``overrides`` (a daemon's config) fill unset flags."""
    from jailshim.spec import resolve_identity

    config = "the daemon's config ({})"
    user, group = args.user, args.group
    user_from, group_from = origin(args, "user"), origin(args, "group")
    if user is None and overrides.get("user") is not None:
        user, user_from = overrides["user"], config.format("user")
    if group is None and overrides.get("group") is not None:
        group, group_from = overrides["group"], config.format("group")
    return resolve_identity(user, group, user_from=user_from, group_from=group_from)


def chroot_of(args: argparse.Namespace, **overrides: Any) -> str:
    """The jail: --chroot, else the daemon's config; checked to be a path the kernel takes."""
    if args.chroot is not None:
        return _path(args.chroot, origin(args, "chroot"))
    if overrides.get("chroot") is not None:
        return _path(overrides["chroot"], "the daemon's config (chroot)", config=True)
    raise UsageError(f"jailshim {args.command} needs --chroot DIR (or JAILSHIM_CHROOT).")


def _spec_from(args: argparse.Namespace, **overrides: Any) -> Spec:
    """The Spec for this run; ``overrides`` (from a daemon's config) fill unset flags."""
    from jailshim.devices import DEFAULT_DEVICES
    from jailshim.files import refuse_reserved
    from jailshim.plan import Strategy
    from jailshim.spec import Spec

    chroot = chroot_of(args, **overrides)
    sockets = tuple(dict.fromkeys([*(args.log_socket or []), *overrides.get("sockets", ())]))
    targets = _targets(args, overrides.get("targets", ()))
    for path in sockets:
        source = origin(args, "log_socket") if path in (args.log_socket or []) else "log"
        if not path.startswith("/"):
            raise UsageError(f"{said(source, path)} must be an absolute path, such as /dev/log.")
        _path(path, source, config=source == "log")
        refuse_reserved(path, source, config=source == "log")
    return Spec(
        chroot=chroot,
        devices=devices_of(args, [*DEFAULT_DEVICES, *overrides.get("devices", ())]),
        identity=identity_of(args, **overrides),
        strategy=Strategy(args.strategy or "auto"),
        dry_run=bool(args.dry_run),
        allow_writable_jail=bool(args.allow_writable_jail),
        repair=not args.no_repair,
        verify=not args.no_verify,
        timeout=args.timeout or 30.0,
        sockets=sockets,
        wait_targets=targets,
        ensure_loopback=bool(args.ensure_loopback),
        **_files_of(args, overrides.get("file_sets", ())),
        notify_socket=overrides.get("notify_socket") or "",
        crypto_libs=_crypto_libs(args),
        command=overrides.get("command", ""),
    )


def _files_of(args: argparse.Namespace, from_config: Sequence[str] = ()) -> dict[str, Any]:
    """The jail files of this run: --file paths and the --files sets, with the sets the
    daemon's adapter needs (union); --file-mode says how they are placed."""
    from jailshim.files import FileMode, jail_files

    sets = tuple(dict.fromkeys([*(args.files or ()), *from_config]))
    names = tuple(dict.fromkeys(n.strip() for n in (args.resolve or ()) if n.strip()))
    for name in names:
        if len(name) > 253 or any(c.isspace() or c == "\0" for c in name):
            raise UsageError(
                f"{said(origin(args, 'resolve'), name)} is not a host name; give one such as "
                "mail.example.org."
            )
    return {
        "files": jail_files(tuple(args.file or ()), sets, source=origin(args, "file")),
        "file_mode": FileMode(args.file_mode or "copy"),
        "file_sets": sets,
        "resolve_names": names,
    }


def _crypto_libs(args: argparse.Namespace) -> tuple[str, ...]:
    """--crypto-lib paths, each checked to be a file jailshim can load."""
    paths = tuple(args.crypto_lib or ())
    for path in paths:
        source = origin(args, "crypto_lib")
        _path(path, source)
        if not os.path.isfile(path):
            raise UsageError(
                f"{said(source, path)} is not a file; give the library's path, such as "
                "/usr/lib/x86_64-linux-gnu/libcrypto.so.3."
            )
    return paths


def _targets(
    args: argparse.Namespace, from_config: Sequence[WaitTarget] = ()
) -> tuple[WaitTarget, ...]:
    """--wait-addr values, then the daemon's own bind addresses, without repeats."""
    if not args.wait_addr and not from_config:
        return ()
    from jailshim.verify.network import parse_wait_addr

    source = origin(args, "wait_addr")
    targets: dict[str, WaitTarget] = {}
    given: list[WaitTarget] = []
    for text in args.wait_addr or []:
        try:
            given.append(parse_wait_addr(text))
        except UsageError as exc:
            if source == "--wait-addr":
                raise
            # network.py words it for the flag; name the variable the value really came from
            raise UsageError(
                said(source, text) + exc.sentence.removeprefix(f"--wait-addr {text!r}")
            ) from None
    for target in [*given, *from_config]:
        targets.setdefault(target.ip, target)
    return tuple(targets.values())


def _dispatch(args: argparse.Namespace, log: Any) -> int:
    if args.command == PREPARE:
        from jailshim.check import prepare_and_verify

        spec = _spec_from(args)
        log.bind_context(chroot=spec.chroot)
        prepare_and_verify(spec, log.get_logger())
        return 0
    if args.command == CHECK:
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
        command = {}
        if args.argv:
            from jailshim.run import resolve_command

            command = {"command": resolve_command(args.argv)}
        spec = _spec_from(args, **command)
        log.bind_context(chroot=spec.chroot)
        check(spec, log.get_logger())
        return 0
    if args.command == RUN:
        from jailshim.run import run

        return run(args, log)
    if args.command == DOCTOR:
        return _doctor(args, log)
    if args.command == EXPLAIN:
        return _explain(args.log_file)
    if args.command == TEARDOWN:
        from jailshim.jail.safepath import Jail, swappable_path
        from jailshim.teardown import teardown

        chroot = chroot_of(args)
        log.bind_context(chroot=chroot)
        with Jail(chroot) as jail:
            # Which jail the path opened is the question: a user who can swap a name on the
            # way (its symlink, its directory) pointed it at another daemon's jail, and root's
            # teardown (a unit's ExecStopPost, run after prepare refused the same path)
            # removed that jail's dev/ and binds (review2). Said as prepare says it.
            swappable = swappable_path(chroot, "teardown, which opens the jail by its path,")
            if swappable:
                raise ConfigError(swappable, chroot=chroot)
            teardown(
                jail, log.get_logger(), dry_run=bool(args.dry_run), timeout=args.timeout or 30.0
            )
        return 0
    raise UsageError(
        f"jailshim {args.command} is not implemented yet; see the README for what works."
    )


def _doctor(args: argparse.Namespace, log: Any) -> int:
    from jailshim.doctor import DOCTOR_DEVICES, doctor

    devices = devices_of(args, DOCTOR_DEVICES)
    if args.all or args.name or args.format or args.output:  # doctor --all: jailshim/fleet.py
        from jailshim.fleet import doctor_all

        return doctor_all(
            scan_all=bool(args.all),
            names=tuple(args.name or ()),
            output_format=args.format,
            output=args.output,
            conflicting=tuple(
                f"--{d.replace('_', '-')}"
                for d in ("pid", "chroot", "user", "group", "crypto_lib")
                if args.origin.get(d) == f"--{d.replace('_', '-')}"
            ),
            devices=devices,
            log=log.get_logger(),
            read_filter=bool(args.read_filter),
            on_terminal=sys.stdout.isatty(),
        )
    if args.pid is not None:
        # A variable set for every command (a container's env) is ignored here; a flag is not.
        given = args.origin
        flags = [f"--{d}" for d in ("chroot", "user", "group") if given.get(d) == f"--{d}"]
        if flags:
            raise UsageError(
                "jailshim doctor --pid takes the jail and the user from the daemon itself; "
                f"drop {' and '.join(flags)}."
            )
        return doctor(
            args.pids,
            None,
            None,
            devices,
            log.get_logger(),
            crypto_libs=_crypto_libs(args),
            read_filter=bool(args.read_filter),
        )
    if args.chroot is None:
        raise UsageError("jailshim doctor needs --pid PID or --chroot DIR.")
    return doctor(
        None,
        chroot_of(args),
        identity_of(args),
        devices,
        log.get_logger(),
        crypto_libs=_crypto_libs(args),
    )


def _explain(file: str | None) -> int:
    import io

    from jailshim.explain import explain

    if file is None or file == "-":
        # Pasted logs are not always UTF-8: a stray byte must not stop the explanation.
        return explain(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"))
    try:
        with open(file, encoding="utf-8", errors="replace") as f:
            return explain(f)
    except OSError as exc:
        import errno

        # a path the kernel cannot take is a usage error, as for every command (64); else
        # the command line is right and its file is not there for us (66)
        error = UsageError if exc.errno == errno.ENAMETOOLONG else NoInput
        raise error(
            f"{short(file)} cannot be read ({exc.strerror}); give a log file jailshim can read, "
            "or pipe the lines in (`... | jailshim explain`)."
        ) from None


class _Stream:
    """A standard stream whose reader may go away: `jailshim … | head` is not a failure.

    On EPIPE the rest of the output is dropped (the fd is pointed at /dev/null) and jailshim
    goes on and exits as it would have. Any other write error on stdout (ENOSPC, EIO) is one
    sentence and exit 71; on stderr there is nowhere left to say it, so it is dropped too.
    """

    def __init__(self, stream: TextIO, fd: int) -> None:
        self._stream = stream
        self._fd = fd

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._failed(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        _devnull_on(self._fd)
        if isinstance(exc, BrokenPipeError) or self._fd != 1:
            return
        raise PrepareOSError(
            f"jailshim could not write to its standard output ({exc.strerror}); "
            "check where it goes (a full disk, a closed terminal)."
        ) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _devnull_on(fd: int) -> None:
    """/dev/null on ``fd``, inherited by the daemon as its standard stream."""
    null = os.open(os.devnull, os.O_RDWR)
    if null == fd:
        os.set_inheritable(fd, True)  # os.open makes close-on-exec fds
    else:
        os.dup2(null, fd)
        os.close(null)


def _standard_streams() -> None:
    """Closed fds 0-2 get /dev/null (else the next open() would take fd 1, and jailshim's or
    the daemon's output would go into that file); stdout and stderr survive a reader going away."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:  # Python found the fd closed at start-up
            _devnull_on(fd)
            stream = open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False)  # noqa: SIM115
            setattr(sys, name, stream)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        if not isinstance(stream, _Stream):
            setattr(sys, name, cast(TextIO, _Stream(stream, fd)))


def main(argv: Sequence[str] | None = None) -> int:
    _standard_streams()
    from jailshim import log

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if signal.signal(sig, stopsignals.interrupt) == signal.SIG_IGN:
            IGNORED_AT_START.add(sig)  # for --inherited-signals keep
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # as git does: the usage, on stderr
        sys.stderr.write(_build_parser().format_help())
        return 64
    try:
        code = _main(argv, log)
    except SystemExit as exc:  # argparse's --help and --version
        code = exc.code if isinstance(exc.code, int) else 0
    try:
        sys.stdout.flush()  # here, not at exit, where a failure could only be a traceback
    except JailshimError as exc:
        log.setup(os.environ.get(ENV_PREFIX + "LOG_FORMAT", "auto"))
        return _report(exc, log)
    return code


def _main(argv: Sequence[str], log: Any) -> int:
    try:
        args = parse_args(argv)
    except JailshimError as exc:  # a usage error, or --help's text could not be written
        log.setup(os.environ.get(ENV_PREFIX + "LOG_FORMAT", "auto"))
        return _report(exc, log)
    log.setup(args.log_format or "auto", args.log_level or "info")
    log.bind_context(command=args.command)
    try:
        return _dispatch(args, log)
    except JailshimError as exc:
        return _report(exc, log)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, stopsignals.Interrupted) else signal.SIGINT
        log.get_logger().warning(
            "interrupted", signal=signal.Signals(signum).name, detail="stopped before hand-over"
        )
        return 128 + signum
    except OSError as exc:  # the machine said no (a limit, a full disk): one sentence, 71/64
        log.get_logger().debug("traceback", exc_info=True)
        return _report(_os_failure(exc), log)
    except ImportError as exc:
        if (no_fd := _out_of_fds()) is None:
            return _internal(exc, log)
        log.get_logger().debug("traceback", exc_info=True)
        return _report(_os_failure(no_fd), log)
    except Exception as exc:  # a bug
        return _internal(exc, log)


def _internal(exc: Exception, log: Any) -> int:
    """A bug: still one sentence; the traceback only when asked for (--log-level debug)."""
    logger = log.get_logger()
    logger.error(
        "failed",
        error=f"jailshim hit an internal error ({exc!r}); please report it with the output "
        "of the same command run with --log-level debug.",
        exit_code=70,
    )
    logger.debug("traceback", exc_info=True)
    return 70


def _os_failure(exc: OSError) -> JailshimError:
    """One sentence for an OSError nothing else explained: a path too long is usage (64), the
    machine's limits are OS errors (71)."""
    import errno

    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    named = exc.filename
    where = f" at {short(os.fsdecode(named))}" if isinstance(named, str | bytes) else ""
    if code == errno.ENAMETOOLONG:
        return UsageError(
            f"A path is too long for the kernel ({name}{where}); paths must be under "
            f"{_PATH_MAX} bytes and each name at most {_NAME_MAX}: give a shorter one."
        )
    if code in (errno.EMFILE, errno.ENFILE):
        whose = "the system's file table is full" if code == errno.ENFILE else _fd_limit()
        return PrepareOSError(
            f"jailshim ran out of file descriptors ({name}: {whose}); raise the limit "
            "(ulimit -n, systemd LimitNOFILE=, podman --ulimit nofile=) to 64 or more."
        )
    if code in (errno.ENOMEM, errno.EAGAIN):
        return PrepareOSError(
            f"The system is out of memory or processes ({name}: {exc.strerror}{where}); free "
            "some, or raise the limits (ulimit -u, the container's pids and memory limits)."
        )
    return PrepareOSError(
        f"The system refused an operation ({name}: {exc.strerror}{where}); check the machine "
        "(disk space, mounts, limits) and run it again."
    )


def _fd_limit() -> str:
    try:
        import resource  # itself a shared object: with no fd left it may not load
    except ImportError:
        return "the open-file limit is reached"
    return f"the open-file limit is {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"


def _out_of_fds() -> OSError | None:
    """EMFILE/ENFILE when this process cannot open a file now (an import that failed for
    that reason says only ImportError)."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        return exc
    return None


def _report(exc: JailshimError, log: Any) -> int:
    code = exit_code_for(exc)
    log.get_logger().error("failed", error=exc.sentence, exit_code=code, **exc.facts)
    return code
