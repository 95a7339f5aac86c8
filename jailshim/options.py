"""Each command's options as a typed record, built once by the command line (cli.py).

Below the command line nothing sees argparse: a command takes its record, whose fields are
already coerced (seconds as floats, PIDs as ints, repeatable options as tuples) and defaulted
here, once. Field names are the option table's dests (``--log-socket`` is ``log_socket``), and
``origins`` says where each given value came from (its flag or its JAILSHIM_ variable), so a
sentence about a value names what the operator wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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


@dataclass(frozen=True, kw_only=True)
class Options:
    """What every command's record holds: where its values came from, and the log settings."""

    origins: Mapping[str, str] = field(default_factory=dict)  # dest -> flag or variable
    log_format: str | None = None  # None: not given (auto)
    log_level: str | None = None  # None: not given (info; the supervisor decides its own)

    def origin(self, dest: str, default: str = "") -> str:
        """Where option ``dest``'s value came from: its flag, its JAILSHIM_ variable, or
        ``default`` (else the flag's name) when it was not given."""
        return self.origins.get(dest, default or "--" + dest.replace("_", "-"))

    def given(self, dest: str) -> bool:
        """Whether option ``dest`` was given, by flag or variable."""
        return dest in self.origins


@dataclass(frozen=True, kw_only=True)
class LookInOptions(Options):
    """What every command that looks into a jail as the daemon's user takes (prepare, check,
    run, doctor): the jail, the user, the devices, the crypto libraries to probe."""

    chroot: str | None = None
    user: str | None = None
    group: str | None = None
    device: tuple[str, ...] = ()
    only_devices: bool = False
    crypto_lib: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class PrepareOptions(JailOptions):
    """`jailshim prepare`."""


@dataclass(frozen=True, kw_only=True)
class CheckOptions(JailOptions):
    """`jailshim check`."""


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class TeardownOptions(Options):
    """`jailshim teardown`."""

    chroot: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    dry_run: bool = False


@dataclass(frozen=True, kw_only=True)
class DoctorOptions(LookInOptions):
    """`jailshim doctor`: a running daemon (pids) or a jail (chroot)."""

    pids: tuple[int, ...] | None = None  # every PID given, in order, without repeats
    read_filter: bool = False


@dataclass(frozen=True, kw_only=True)
class ExplainOptions(Options):
    """`jailshim explain [FILE]`."""

    log_file: str | None = None  # None or "-": standard input
