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
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TextIO, cast

from jailshim import __version__, daemon_registry, stopsignals
from jailshim.errors import (
    ConfigError,
    JailshimError,
    NoInput,
    SystemRefused,
    UsageError,
    exit_code_for,
    said,
)
from jailshim.options import (
    ENV_PREFIX,
    CheckOptions,
    DoctorOptions,
    ExplainOptions,
    Options,
    PrepareOptions,
    RunOptions,
    TeardownOptions,
)

if TYPE_CHECKING:
    from jailshim.logs import LogModule

__all__ = ["main", "parse_args"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

RUN, PREPARE, CHECK, TEARDOWN, DOCTOR, EXPLAIN = (
    "run",
    "prepare",
    "check",
    "teardown",
    "doctor",
    "explain",
)
_NAMES: dict[type[Options], str] = {
    RunOptions: RUN,
    PrepareOptions: PREPARE,
    CheckOptions: CHECK,
    TeardownOptions: TEARDOWN,
    DoctorOptions: DOCTOR,
    ExplainOptions: EXPLAIN,
}
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
    # each adapter's own option naming its config file, declared in its registry entry
    *(
        _Opt(entry.config_flag, entry.config_help, (RUN,), "FILE")
        for entry in daemon_registry.REGISTRY.values()
        if entry.config_flag
    ),
    _Opt(
        "--daemon",
        "read COMMAND's config with this daemon's adapter (default: COMMAND's name): "
        + " ".join(sorted(daemon_registry.REGISTRY)),
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


_COERCED_FIRST = ("timeout", "grace", "stop_delay", "rewrite_signal", "map_exit", "pdeath_signal")


def _coerce(dest: str, value: Any, source: str) -> Any:
    """An option's value as its record holds it: the one place where text becomes a number,
    a signal or a tuple (each refusal names ``source``, the flag or variable)."""
    if dest == "timeout":
        from jailshim.numbers import seconds

        return seconds(value, source, zero=False, example="30")
    if dest == "pid":
        return _pids(value, source)
    if isinstance(value, list) and not value:  # JAILSHIM_MAP_EXIT="": none given
        return ()
    if dest in _COERCED_FIRST:
        from jailshim import init_options  # only a run that gives one of them pays for it

        parsers: dict[str, Callable[[Any, str], Any]] = {
            "grace": init_options.grace,
            "stop_delay": init_options.stop_delay,
            "rewrite_signal": init_options.rewrites,
            "map_exit": init_options.exit_map,
            "pdeath_signal": init_options.pdeath_signal,
        }
        return parsers[dest](value, source)
    if isinstance(value, list):
        return tuple(value)
    return value


def parse_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Options:
    """The command's options record: flags first; a JAILSHIM_<NAME> variable fills each
    option the flags left unset; a variable for an option the command does not take is
    ignored. ``origins`` on the record names, per option given, its flag or variable."""
    environ = os.environ if environ is None else environ
    argv = list(argv)
    only = argv[0] if argv and argv[0] in _COMMANDS else None
    if argv and only is None and not argv[0].startswith("-"):
        raise UsageError(
            f"{argv[0]!r} is not a jailshim command{_closest(argv[0], list(_COMMANDS))}; the "
            f"commands are {', '.join(_COMMANDS)} (see `jailshim --help`)."
        )
    namespace, extra = _build_parser(only).parse_known_args(argv)
    command: str = namespace.command
    if extra:
        raise _not_taken(command, extra)
    raw: dict[str, Any] = {}
    found: dict[str, str] = {}
    for opt in _OPTIONS:
        if command not in opt.commands:
            continue
        value = getattr(namespace, opt.dest)
        if value is not None:
            found[opt.dest] = opt.flag
        elif opt.env in environ:
            value = _env_value(opt, environ[opt.env])
            if value is not None:
                found[opt.dest] = opt.env
        if value is not None:
            raw[opt.dest] = value
    # in this order, as the sentences always came: the numbers and signals, then --init
    values = {d: _coerce(d, raw[d], found[d]) for d in _COERCED_FIRST if d in raw}
    _needs_init(command, {**raw, **values}, found)
    values |= {d: _coerce(d, v, found[d]) for d, v in raw.items() if d not in values}
    if values.get("only_devices") and not values.get("device"):
        raise UsageError(
            f"{found['only_devices']} needs at least one --device NAME "
            "(or JAILSHIM_DEVICE); without it no device would be provided."
        )
    words = list(getattr(namespace, "argv", None) or ())
    if command == CHECK and words and words[0] != "--":
        # check only looks at COMMAND's libraries: a stray word is a typo, not a daemon
        raise UsageError(
            f"jailshim check does not take {' '.join(words)}; give the daemon after --, "
            "such as `jailshim check --chroot DIR -- /usr/sbin/haproxy`."
        )
    if words and words[0] == "--":
        words = words[1:]
    return _record(command, values, found, tuple(words), getattr(namespace, "log_file", None))


def _record(
    command: str,
    values: dict[str, Any],
    found: dict[str, str],
    words: tuple[str, ...],
    log_file: str | None,
) -> Options:
    """The typed record of ``command`` from its coerced ``values`` (dests of _OPTIONS)."""
    if command == EXPLAIN:
        return ExplainOptions(origins=found, log_file=log_file)
    if command == DOCTOR:
        return DoctorOptions(origins=found, pids=values.pop("pid", None), **values)
    if command == TEARDOWN:
        return TeardownOptions(origins=found, **values)
    if command == RUN:
        configs = tuple((d, values.pop(d)) for d in daemon_registry.config_options() if d in values)
        return RunOptions(origins=found, argv=words, daemon_configs=configs, **values)
    record = CheckOptions if command == CHECK else PrepareOptions
    return record(origins=found, argv=words, **values)


_INIT_ONLY = (
    "grace",
    "rewrite_signal",
    "map_exit",
    "kill_group",
    "stop_delay",
    "pdeath_signal",
)


def _needs_init(command: str, values: Mapping[str, Any], found: Mapping[str, str]) -> None:
    """--grace, --rewrite-signal, --map-exit, --kill-group, --stop-delay and --pdeath-signal
    act only in the supervisor that --init starts: without it they were silently ignored (a
    daemon's exit status never mapped)."""
    if command != RUN or values.get("init"):
        return
    given = [dest for dest in _INIT_ONLY if values.get(dest) not in (None, ())]
    if given:
        raise UsageError(
            f"{found[given[0]]} applies only with --init (jailshim staying as PID 1 to "
            "forward signals and stop the daemon); add --init, or drop it."
        )


def _dispatch(options: Options, log: LogModule) -> int:
    if isinstance(options, PrepareOptions):
        from jailshim.ready import prepare_and_verify
        from jailshim.specs import build_spec

        spec = build_spec(options, PREPARE)
        log.bind_context(chroot=spec.chroot)
        prepare_and_verify(spec, log.get_logger())
        return 0
    if isinstance(options, CheckOptions):
        return _check(options, log)
    if isinstance(options, RunOptions):
        from jailshim.run import run

        return run(options, log)
    if isinstance(options, DoctorOptions):
        return _doctor(options, log)
    if isinstance(options, ExplainOptions):
        return _explain(options.log_file)
    return _teardown(cast(TeardownOptions, options), log)  # the one command left


def _check(options: CheckOptions, log: LogModule) -> int:
    from jailshim.check import check, check_network
    from jailshim.specs import build_spec, wait_targets_of

    if options.chroot is None and options.wait_addr:  # network readiness only
        check_network(options, log.get_logger(), wait_targets_of(options))
        return 0

    executable = ""
    if options.argv:
        from jailshim.run import resolve_command

        executable = resolve_command(list(options.argv))
    spec = build_spec(options, CHECK, executable=executable)
    log.bind_context(chroot=spec.chroot)
    check(spec, log.get_logger())
    return 0


def _teardown(options: TeardownOptions, log: LogModule) -> int:
    from jailshim.jail.safepath import Jail, swappable_path
    from jailshim.specs import chroot_of
    from jailshim.teardown import teardown

    chroot = chroot_of(options, TEARDOWN)
    log.bind_context(chroot=chroot)
    with Jail(chroot) as jail:
        # Which jail the path opened is the question: a user who can swap a name on the
        # way (its symlink, its directory) pointed it at another daemon's jail, and root's
        # teardown (a unit's ExecStopPost, run after prepare refused the same path)
        # removed that jail's dev/ and binds (review2). Said as prepare says it.
        swappable = swappable_path(chroot, "teardown, which opens the jail by its path,")
        if swappable:
            raise ConfigError(swappable, chroot=chroot)
        teardown(jail, log.get_logger(), dry_run=options.dry_run, timeout=options.timeout)
    return 0


def _doctor(options: DoctorOptions, log: LogModule) -> int:
    from jailshim.doctor import DOCTOR_DEVICES, doctor
    from jailshim.specs import chroot_of, crypto_libs_of, devices_of, identity_of

    devices = devices_of(options, DOCTOR_DEVICES)
    if options.all or options.name or options.format or options.output:
        from jailshim.doctor_all import doctor_all

        return doctor_all(
            scan_all=options.all,
            names=options.name,
            output_format=options.format,
            output=options.output,
            # only flags conflict, as for --pid: a variable set for every command is ignored
            conflicting=tuple(
                f"--{d.replace('_', '-')}"
                for d in ("pid", "chroot", "user", "group", "crypto_lib")
                if options.origins.get(d) == f"--{d.replace('_', '-')}"
            ),
            devices=devices,
            log=log.get_logger(),
            read_filter=options.read_filter,
            on_terminal=sys.stdout.isatty(),
        )
    if options.pids is not None:
        # A variable set for every command (a container's env) is ignored here; a flag is not.
        flags = [
            f"--{d}" for d in ("chroot", "user", "group") if options.origins.get(d) == f"--{d}"
        ]
        if flags:
            raise UsageError(
                "jailshim doctor --pid takes the jail and the user from the daemon itself; "
                f"drop {' and '.join(flags)}."
            )
        return doctor(
            options.pids,
            None,
            None,
            devices,
            log.get_logger(),
            crypto_libs=crypto_libs_of(options),
            read_filter=options.read_filter,
        )
    if options.chroot is None:
        raise UsageError("jailshim doctor needs --pid PID or --chroot DIR.")
    return doctor(
        None,
        chroot_of(options, DOCTOR),
        identity_of(options),
        devices,
        log.get_logger(),
        crypto_libs=crypto_libs_of(options),
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
        from jailshim.specs import short

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
        raise SystemRefused(
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

    stopsignals.catch_at_start()
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


def _main(argv: Sequence[str], log: LogModule) -> int:
    try:
        options = parse_args(argv)
    except JailshimError as exc:  # a usage error, or --help's text could not be written
        log.setup(os.environ.get(ENV_PREFIX + "LOG_FORMAT", "auto"))
        return _report(exc, log)
    log.setup(options.log_format or "auto", options.log_level or "info")
    log.bind_context(command=_NAMES[type(options)])
    return _dispatched(options, log)


def _dispatched(options: Options, log: LogModule) -> int:
    """The command's exit code: every failure becomes one sentence and its code."""
    try:
        return _dispatch(options, log)
    except JailshimError as exc:
        return _report(exc, log)
    except KeyboardInterrupt as exc:
        return _interrupted(exc, log)
    except OSError as exc:  # the machine said no (a limit, a full disk): one sentence, 71/64
        log.get_logger().debug("traceback", exc_info=True)
        return _report(_os_failure(exc), log)
    except ImportError as exc:
        return _import_failed(exc, log)
    except Exception as exc:  # a bug
        return _internal(exc, log)


def _interrupted(exc: KeyboardInterrupt, log: LogModule) -> int:
    """A stop signal (or ^C) before the hand-over: said, and 128 + its number."""
    signum = exc.signum if isinstance(exc, stopsignals.Interrupted) else signal.SIGINT
    log.get_logger().warning(
        "interrupted", signal=signal.Signals(signum).name, detail="stopped before hand-over"
    )
    return 128 + signum


def _import_failed(exc: ImportError, log: LogModule) -> int:
    """An import that failed for want of a file descriptor is the machine's limit (71);
    any other is a bug (70)."""
    if (no_fd := _out_of_fds()) is None:
        return _internal(exc, log)
    log.get_logger().debug("traceback", exc_info=True)
    return _report(_os_failure(no_fd), log)


def _internal(exc: Exception, log: LogModule) -> int:
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

    from jailshim.specs import NAME_MAX, PATH_MAX, short

    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    named = exc.filename
    where = f" at {short(os.fsdecode(named))}" if isinstance(named, str | bytes) else ""
    if code == errno.ENAMETOOLONG:
        return UsageError(
            f"A path is too long for the kernel ({name}{where}); paths must be under "
            f"{PATH_MAX} bytes and each name at most {NAME_MAX}: give a shorter one."
        )
    if code in (errno.EMFILE, errno.ENFILE):
        whose = "the system's file table is full" if code == errno.ENFILE else _fd_limit()
        return SystemRefused(
            f"jailshim ran out of file descriptors ({name}: {whose}); raise the limit "
            "(ulimit -n, systemd LimitNOFILE=, podman --ulimit nofile=) to 64 or more."
        )
    if code in (errno.ENOMEM, errno.EAGAIN):
        return SystemRefused(
            f"The system is out of memory or processes ({name}: {exc.strerror}{where}); free "
            "some, or raise the limits (ulimit -u, the container's pids and memory limits)."
        )
    return SystemRefused(
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


def _report(exc: JailshimError, log: LogModule) -> int:
    code = exit_code_for(exc)
    log.get_logger().error("failed", error=exc.sentence, exit_code=code, **exc.facts)
    return code
