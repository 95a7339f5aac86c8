"""The `jailshim` command's entry point (the console script and `python -m jailshim`):
`run --init` with no jail starts the supervisor at once; everything else goes to the full
command line (jailshim.cli).

`jailshim run --init -- true` spent ~70 ms in the front end (structlog, argparse, the option
table) before the lean supervisor's exec, where tini takes ~2 ms (docs/benchmarks.md). With no
jail to prepare none of that is needed: the init options are parsed by init_options' own
functions, the two log lines are written in structlog's JSON shape, and handover.supervise
execs the supervisor exactly as `run` does.

The fast path is taken only for a command line it understands completely (``fast_init``:
PURE): `run`, then only exact init and log options (a flag, or flag=VALUE), then `--` and
COMMAND; no JAILSHIM_ variable but theirs; every value valid; COMMAND found, executable and
without an adapter; the standard streams open; JSON logs (or none: --log-level error).
Anything else, an error included, goes to the full command line, which says it in its words:
so the fast path cannot differ from the full one by how it fails (tests/test_init_fastpath.py
runs both over many inputs and compares).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from jailshim.options import ENV_PREFIX

if TYPE_CHECKING:
    from jailshim.init_options import StopOptions

__all__ = ["FastInit", "fast_init", "main", "ready"]

_SWITCHES = ("--init", "--kill-group")
_VALUES = (
    "--grace",
    "--stop-delay",
    "--pdeath-signal",
    "--inherited-signals",
    "--log-format",
    "--log-level",
)
_REPEATED = ("--rewrite-signal", "--map-exit")
# within cli._OPTIONS' choices for the three options that have them (a test holds it)
_CHOICES = {
    # keep: the ignored stop signals are recorded by stopsignals.catch_at_start, which main
    # calls first on this path too (issue 28)
    "--inherited-signals": ("reset", "keep"),
    "--log-format": ("auto", "json", "console"),
    "--log-level": ("debug", "info", "warning", "error"),
}
_TRUE = {"1", "true", "yes", "on"}  # cli's yes/no words for a switch's variable
_FALSE = {"0", "false", "no", "off", ""}
_LEVELS = ("debug", "info", "warning", "error")


class FastInit(NamedTuple):
    """A `run --init` with no jail, as the full command line would have read it: raw values
    (validated later by init_options) and where each came from (flag or variable)."""

    command: tuple[str, ...]
    values: dict[str, str]  # dest -> raw value (store options)
    lists: dict[str, list[str]]  # dest -> raw values (repeatable options)
    kill_group: bool
    origin: dict[str, str]  # dest -> the flag or JAILSHIM_ variable it came from


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def fast_init(argv: Sequence[str], environ: Mapping[str, str]) -> FastInit | None:
    """The run this command line asks for, if it is a `run --init` with no jail that the fast
    path understands completely; None for everything else (PURE)."""
    read = _flags_given(argv) if len(argv) >= 3 and argv[0] == "run" else None
    flags = {*_SWITCHES, *_VALUES, *_REPEATED}
    variables = {ENV_PREFIX + _dest(f).upper(): f for f in flags}
    if read is None or any(k.startswith(ENV_PREFIX) and k not in variables for k in environ):
        return None  # JAILSHIM_CHROOT, or any variable the fast path does not know
    given, command = read
    merged = _merged(given, environ, variables)
    if merged is None or not merged[3].get("--init"):
        return None
    values, lists, origin, switches = merged
    if any(values.get(_dest(f), choices[0]) not in choices for f, choices in _CHOICES.items()):
        return None
    return FastInit(command, values, lists, switches.get("--kill-group", False), origin)


def _flags_given(argv: Sequence[str]) -> tuple[dict[str, list[str]], tuple[str, ...]] | None:
    """The known flags before `--` with their raw values, and COMMAND; None at anything else
    (another option, an abbreviation, COMMAND without `--`, -h, no COMMAND)."""
    given: dict[str, list[str]] = {}
    at = 1
    while at < len(argv) and argv[at] != "--":
        word = argv[at]
        flag, eq, inline = word.partition("=")
        if flag in _SWITCHES and not eq:
            given.setdefault(flag, []).append("1")
            at += 1
            continue
        if flag not in _VALUES and flag not in _REPEATED:
            return None
        if eq:
            value, at = inline, at + 1
        elif at + 1 < len(argv) and not argv[at + 1].startswith("-"):
            value, at = argv[at + 1], at + 2
        else:
            return None  # a value that looks like an option: argparse's rules, not ours
        given.setdefault(flag, []).append(value)
    command = tuple(argv[at + 1 :])
    return (given, command) if command else None


_Merged = tuple[dict[str, str], dict[str, list[str]], dict[str, str], dict[str, bool]]


def _merged(
    given: dict[str, list[str]], environ: Mapping[str, str], variables: dict[str, str]
) -> _Merged | None:
    """(values, lists, origin, switches): flags win over variables, each option as a whole;
    None when a switch's variable is not one of cli's yes/no words."""
    values: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    origin: dict[str, str] = {}
    switches: dict[str, bool] = {}
    for variable, flag in variables.items():
        dest = _dest(flag)
        if flag in given:
            origin[dest] = flag
            raw = given[flag]
        elif variable in environ:
            origin[dest] = variable
            text = environ[variable]
            if flag in _SWITCHES:
                word = text.strip().lower()
                if word not in _TRUE | _FALSE:
                    return None
                switches[flag] = word in _TRUE
                continue
            raw = [p.strip() for p in text.split(",") if p.strip()] if flag in _REPEATED else [text]
        else:
            continue
        if flag in _SWITCHES:
            switches[flag] = True
        elif flag in _REPEATED:
            lists[dest] = raw
        else:
            values[dest] = raw[-1]
    return values, lists, origin, switches


def _console(fmt: str) -> bool:
    """Would jailshim's structlog set-up render for people (log._wants_console)?"""
    if fmt == "auto":
        try:
            return os.isatty(2)
        except OSError:
            return False
    return fmt == "console"


class _Log:
    """The events of `run --init` with no jail, in the shape structlog gives them there (JSON:
    timestamp, level, event, the facts, then the bound `command`), filtered by --log-level."""

    def __init__(self, level: str) -> None:
        self.least = _LEVELS.index(level)

    def _emit(self, level: str, event: str, facts: dict[str, object]) -> None:
        if _LEVELS.index(level) < self.least:
            return
        import time

        from jailshim.supervisor import _json_value  # json.dumps' text for these values

        now = time.time_ns() // 1000
        seconds, micros = divmod(now, 1_000_000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        stamp += f".{micros:06d}Z" if micros else "Z"  # as datetime.isoformat() leaves it
        line = {"timestamp": stamp, "level": level, "event": event, **facts}
        line.setdefault("command", "run")  # cli binds it; an event's own fact wins
        body = ", ".join(f"{_json_value(k)}: {_json_value(v)}" for k, v in line.items())
        try:
            sys.stderr.write("{" + body + "}\n")
            sys.stderr.flush()
        except OSError:  # as cli's stream: its reader went away, the daemon gets /dev/null
            from jailshim.cli import _devnull_on

            _devnull_on(2)

    def debug(self, event: str, **facts: object) -> None:
        self._emit("debug", event, facts)

    def info(self, event: str, **facts: object) -> None:
        self._emit("info", event, facts)

    def warning(self, event: str, **facts: object) -> None:
        self._emit("warning", event, facts)

    def error(self, event: str, **facts: object) -> None:
        self._emit("error", event, facts)

    def log(self, level: int, event: str, **facts: object) -> None:
        self._emit(_LEVELS[min(max(level // 10 - 1, 0), len(_LEVELS) - 1)], event, facts)


def ready(run: FastInit) -> StopOptions | None:
    """The supervisor's stop options when everything the full path would check is right and
    nothing needs structlog or the full command line; None when the full command line must
    decide after all (an error to say in its words, an adapter, a console log). Changes
    nothing (reads COMMAND's file and the standard fds)."""
    if sys.stdin is None or sys.stdout is None or sys.stderr is None:
        return None  # a closed standard fd: cli gives it /dev/null first
    level, fmt = run.values.get("log_level", "info"), run.values.get("log_format", "auto")
    if _console(fmt) and level != "error":
        return None  # structlog's console renderer: only structlog writes it
    name = os.path.basename(run.command[0])
    from jailshim import init_options
    from jailshim.daemons import ADAPTERS, ALIASES
    from jailshim.errors import JailshimError
    from jailshim.run import resolve_command

    if name in ADAPTERS or name in ALIASES:
        return None  # a daemon whose config names its jail
    values, lists, origin = run.values, run.lists, run.origin
    try:
        resolve_command(list(run.command))  # refused here as the full path refuses it
        return init_options.StopOptions(
            grace=init_options.grace(values["grace"], origin["grace"])
            if "grace" in values
            else init_options.DEFAULT_GRACE,
            rewrites=init_options.rewrites(lists["rewrite_signal"], origin["rewrite_signal"])
            if lists.get("rewrite_signal")
            else (),
            exit_map=init_options.exit_map(lists["map_exit"], origin["map_exit"])
            if lists.get("map_exit")
            else (),
            stop_delay=init_options.stop_delay(values["stop_delay"], origin["stop_delay"])
            if "stop_delay" in values
            else 0.0,
            pdeath_signal=init_options.pdeath_signal(
                values["pdeath_signal"], origin["pdeath_signal"]
            )
            if "pdeath_signal" in values
            else 0,
        )
    except JailshimError:
        return None  # the full command line says it, in its words and with its exit code


def _start(run: FastInit, stop: StopOptions) -> int:
    """Log as `run` does with no jail, then exec the supervisor (never returns)."""
    import signal

    from jailshim import handover, stopsignals

    log = _Log(run.values.get("log_level", "info"))
    try:
        log.warning(
            "no_jail",
            detail="no --chroot and no chroot in the daemon's config: nothing to prepare",
        )
        keep = run.values.get("inherited_signals") == "keep"
        handover.supervise(
            list(run.command),
            kill_group=run.kill_group,
            log=log,
            stop=stop,
            keep=handover.inherited_signals() if keep else None,
            log_level=run.values.get("log_level"),
            log_format=run.values.get("log_format"),
        )
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, stopsignals.Interrupted) else signal.SIGINT
        log.warning(
            "interrupted", signal=signal.Signals(signum).name, detail="stopped before hand-over"
        )
        return 128 + signum
    except Exception as exc:  # the exec refused (a limit), or a bug: as cli says them
        return _failed(exc, run)
    return 0  # not reached: the supervisor replaced this process


def _failed(exc: Exception, run: FastInit) -> int:
    """A failure after the fast path began: reported by cli's own code, through structlog."""
    from jailshim import cli, log
    from jailshim.errors import JailshimError

    log.setup(run.values.get("log_format", "auto"), run.values.get("log_level", "info"))
    log.bind_context(command="run")
    if isinstance(exc, JailshimError):
        return cli._report(exc, log)
    if isinstance(exc, OSError):
        return cli._report(cli._os_failure(exc), log)
    return cli._internal(exc, log)


def main(argv: Sequence[str] | None = None) -> int:
    """`jailshim …`: the fast `run --init`, or the full command line."""
    words = sys.argv[1:] if argv is None else list(argv)
    run = fast_init(words, os.environ)
    if run is not None:
        from jailshim import stopsignals

        # as cli.main does first: the starter's PID (--pdeath-signal) and the stop signals
        # that came ignored, read before anything else; a stop from here on unwinds, 128+n
        stopsignals.catch_at_start()
    stop = ready(run) if run is not None else None
    if run is not None and stop is not None:
        return _start(run, stop)
    from jailshim.cli import main as full

    return full(words)


if __name__ == "__main__":
    sys.exit(main())
