"""Each command's options as a typed record, built once by the command line (cli.py).

Below the command line nothing sees argparse: a command takes its record, whose fields are
already coerced (seconds as floats, PIDs as ints, repeatable options as tuples) and defaulted
here, once. Field names are the option table's dests (``--log-socket`` is ``log_socket``), and
``origins`` says where each given value came from (its flag or its JAILSHIM_ variable), so a
sentence about a value names what the operator wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, NoReturn

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENV_PREFIX",
    "CheckOptions",
    "DoctorOptions",
    "ExplainOptions",
    "JailOptions",
    "LookInOptions",
    "Options",
    "PrepareOptions",
    "RunOptions",
    "TeardownOptions",
]

ENV_PREFIX = "JAILSHIM_"  # every option's variable: ENV_PREFIX + its dest in capitals
DEFAULT_TIMEOUT = 30.0  # --timeout's default: the retry budget and the longest lock wait


class Options:
    """What every command's record holds: where its values came from, and the log settings.

    A read-only record whose fields are the annotated class attributes (their values the
    defaults), given by keyword. Not a frozen dataclass: making the seven record classes with
    dataclasses cost ~8 ms on every start (it compiles each class's methods), a tenth of
    `jailshim run`'s whole start; this costs ~0.1 ms.
    """

    FIELDS: ClassVar[frozenset[str]] = frozenset()
    origins: Mapping[str, str] = MappingProxyType({})  # dest -> flag or variable
    log_format: str | None = None  # None: not given (auto)
    log_level: str | None = None  # None: not given (info; the supervisor decides its own)

    def __init_subclass__(cls) -> None:
        cls.FIELDS = frozenset(
            name
            for klass in cls.__mro__
            for name, kind in vars(klass).get("__annotations__", {}).items()
            if not str(kind).startswith("ClassVar")
        )

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - self.FIELDS)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {unknown[0]!r}")
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is read-only ({name})")

    def __repr__(self) -> str:
        given = ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(self.FIELDS))
        return f"{type(self).__name__}({given})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name) for name in self.FIELDS
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, holds a mapping

    def origin(self, dest: str, default: str = "") -> str:
        """Where option ``dest``'s value came from: its flag, its JAILSHIM_ variable, or
        ``default`` (else the flag's name) when it was not given."""
        return self.origins.get(dest, default or "--" + dest.replace("_", "-"))


class LookInOptions(Options):
    """What every command that looks into a jail as the daemon's user takes (prepare, check,
    run, doctor): the jail, the user, the devices, the crypto libraries to probe."""

    chroot: str | None = None
    user: str | None = None
    group: str | None = None
    device: tuple[str, ...] = ()
    only_devices: bool = False
    crypto_lib: tuple[str, ...] = ()


class JailOptions(LookInOptions):
    """The options a jail is built and checked from (prepare, check, run): a command that
    does not take one keeps its default."""

    strategy: str = "auto"
    log_socket: tuple[str, ...] = ()
    file: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    file_mode: str = "copy"
    resolve: tuple[str, ...] = ()
    wait_addr: tuple[str, ...] = ()
    ensure_loopback: bool = False
    timeout: float = DEFAULT_TIMEOUT
    dry_run: bool = False
    no_verify: bool = False
    no_repair: bool = False
    allow_writable_jail: bool = False
    argv: tuple[str, ...] = ()  # COMMAND and its arguments (after --), run and check


class PrepareOptions(JailOptions):
    """`jailshim prepare`."""


class CheckOptions(JailOptions):
    """`jailshim check`."""


class RunOptions(JailOptions):
    """`jailshim run`: the jail's options, the daemon's, and the hand-over's."""

    daemon: str | None = None
    # the adapters' own config options given (dest, path), such as ("haproxy_config", FILE)
    daemon_configs: tuple[tuple[str, str], ...] = ()
    no_config_check: bool = False
    init: bool = False
    kill_group: bool = False
    grace: float | None = None  # None: init_options.DEFAULT_GRACE
    rewrite_signal: tuple[tuple[int, int], ...] = ()
    map_exit: tuple[tuple[int, int], ...] = ()
    stop_delay: float = 0.0
    pdeath_signal: int = 0  # 0: none
    inherited_signals: str = "reset"


class TeardownOptions(Options):
    """`jailshim teardown`."""

    chroot: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    dry_run: bool = False


class DoctorOptions(LookInOptions):
    """`jailshim doctor`: a running daemon (pids) or a jail (chroot)."""

    pids: tuple[int, ...] | None = None  # every PID given, in order, without repeats
    read_filter: bool = False
    # doctor --all (jailshim/fleet.py): every chrooted daemon, filtered and rendered
    all: bool = False
    name: tuple[str, ...] = ()
    format: str | None = None  # None: a table on a terminal, JSON lines otherwise
    output: str | None = None


class ExplainOptions(Options):
    """`jailshim explain [FILE]`."""

    log_file: str | None = None  # None or "-": standard input
