"""Every failure jailshim reports, and the one table that maps them to exit codes.

Each exception carries one sentence for the operator: what was wrong and what to do.
Nothing else in the package chooses an exit code.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "NAGIOS_STATES",
    "VERDICT_ERRORS",
    "CannotTell",
    "CheckFailed",
    "CommandNotExecutable",
    "CommandNotFound",
    "ConfigError",
    "JailshimError",
    "NoInput",
    "NotPermitted",
    "SystemRefused",
    "UsageError",
    "exit_code_for",
    "said",
]


class JailshimError(Exception):
    """A failure with one operator-facing sentence (``str(exc)``)."""

    def __init__(self, sentence: str, **facts: object) -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.facts = facts


class UsageError(JailshimError):
    """The command line or a JAILSHIM_* variable is wrong."""


class CheckFailed(JailshimError):
    """A verification still failed when the retry budget ran out."""


class CannotTell(JailshimError):
    """A verdict that rests on a fact jailshim could not learn (the sentence says which, and
    what to rerun with: --read-filter, --crypto-lib, more powers)."""


class NoInput(JailshimError):
    """A file the operator named as input cannot be read (`jailshim explain FILE`): the command
    line is right (not 64), the file is missing or closed to us."""


class SystemRefused(JailshimError):
    """The kernel refused something for a reason other than missing powers (while preparing,
    or a limit of the machine: file descriptors, memory, a full disk, an unwritable stdout)."""


class NotPermitted(JailshimError):
    """This process lacks a power it needs (a capability, a writable or device-capable fs)."""


class ConfigError(JailshimError):
    """The daemon's configuration or the jail on disk is wrong or unsafe."""


class CommandNotExecutable(JailshimError):
    """The command to hand over to exists but cannot be executed."""


class CommandNotFound(JailshimError):
    """The command to hand over to does not exist."""


# The one table. Codes follow sysexits.h and the shell's 126/127 convention.
EXIT_CODES: dict[type[JailshimError], int] = {
    UsageError: 64,  # EX_USAGE
    NoInput: 66,  # EX_NOINPUT
    CheckFailed: 69,  # EX_UNAVAILABLE
    CannotTell: 75,  # EX_TEMPFAIL: rerun with what the sentence names
    SystemRefused: 71,  # EX_OSERR
    NotPermitted: 77,  # EX_NOPERM
    ConfigError: 78,  # EX_CONFIG
    CommandNotExecutable: 126,
    CommandNotFound: 127,
}


# doctor's entropy verdict (jailshim/verify/verdict.py's Verdict values) -> what it raises:
# nothing (exit 0) when no action is needed, CheckFailed (69) when the printed remedy is needed
# now, CannotTell (75) when a fact is missing. Keyed by the verdict's words, so this module
# imports nothing. check and run differ only in "cannot tell": a warning there (the daemon has
# not started; nothing to rerun), see jailshim/verify/entropy.py.
VERDICT_ERRORS: dict[str, type[JailshimError] | None] = {
    "safe": None,
    "safe now, fragile": CheckFailed,
    "will fail": CheckFailed,
    "cannot tell": CannotTell,
}


# `doctor --all --format nagios`: a plugin's exit code is its state (Nagios plugin guidelines,
# monitoring-plugins.org/doc/guidelines.html: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, which is
# also bad usage and a failure of the plugin itself), not one of the codes above.
NAGIOS_STATES: dict[str, int] = {
    "safe": 0,  # OK
    "safe now, fragile": 1,  # WARNING
    "will fail": 2,  # CRITICAL
    "cannot tell": 3,  # UNKNOWN
}


def exit_code_for(exc: JailshimError) -> int:
    """The exit code of ``exc``: its own class's entry, else its nearest listed base's."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 70  # EX_SOFTWARE: a JailshimError subclass someone forgot to list


def said(source: str, value: object) -> str:
    """A value as a sentence names it, with where it came from: ``--user 'x'``,
    ``JAILSHIM_USER='x'``, ``'x' from the daemon's config (user)``."""
    if source.startswith("--"):
        return f"{source} {value!r}"
    from jailshim.options import ENV_PREFIX

    if source.startswith(ENV_PREFIX):
        return f"{source}={value!r}"
    return f"{value!r} from {source}"
