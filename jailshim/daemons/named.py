"""BIND named: its jail and user from its own argv (`-t DIR -u USER`), the rest through
named-checkconf.

named takes its jail and user only from its command line (bin/named/main.c, 9.18): `-t DIR`
chroots before the config is read, so `-c FILE` (default /etc/bind/named.conf) and every path in
it are inside the jail; `-u USER` is looked up before the chroot (digits are a UID) and named
calls initgroups(user, its primary gid) then setgid/setuid: the user's primary group and its
memberships, what jailshim gives a user without --group. `named-checkconf -t DIR [FILE]` reads
the config the same way; it is the checker, and with -p it prints the config it accepted
(includes inlined), from which the `listen-on` addresses and the `logging` block are read.

Debian's unit runs `named -f $OPTIONS` with OPTIONS from /etc/default/named. Only the argv named
is given counts: when it has neither -t nor -u, that file is read solely to warn that its
OPTIONS are not on the command line (named would run unjailed, as root).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from jailshim.daemons import Adapter, DaemonPlan, checkconf, read_regular
from jailshim.daemons.getopt import GetoptError, getopt
from jailshim.errors import ConfigError, UsageError

__all__ = [
    "ADAPTER",
    "DEFAULT_CONFIG",
    "DEFAULT_OPTIONS_FILE",
    "Statement",
    "addresses",
    "argv_options",
    "default_options_note",
    "listen_on",
    "logs_to_syslog",
    "parse_printed",
    "split_printed",
]

DEFAULT_CONFIG = "/etc/bind/named.conf"  # named -V: "named configuration: /etc/bind/named.conf"
DEFAULT_OPTIONS_FILE = "/etc/default/named"  # Debian's unit: EnvironmentFile=, `named -f $OPTIONS`
_GETOPT = "46A:c:Cd:D:E:fFgL:M:m:n:N:p:sS:t:T:U:u:vVx:X:"  # NAMED_MAIN_ARGS, named 9.18
# BIND's ARM (security, "The chroot Environment") names /dev/zero, /dev/random, /dev/log;
# /dev/urandom is what OpenSSL and the kernel's users read; named also opens /dev/null
DEVICES = ("null", "random", "urandom", "zero")
_WARNING = re.compile(r"^\S+:\d+: ")  # named-checkconf logs FILE:LINE: text to stdout


def argv_options(argv: Sequence[str]) -> dict[str, list[str]]:
    """Each option letter's values as named's getopt reads ``argv`` (isc_commandline_parse):
    flags combine (-gu bind), a value is the rest of its word or the next one (-tDIR, -t DIR),
    `--` or the first non-option ends the options. What named itself refuses (an unknown
    letter, a missing value, a word after the options) is a UsageError: named would exit."""
    try:
        parsed = getopt(argv, _GETOPT)
    except GetoptError as exc:
        if exc.missing:
            raise UsageError(
                f"named's option -{exc.letter} needs a value and COMMAND ends there; "
                "give it one, as named would refuse to start."
            ) from None
        raise UsageError(
            f"named's command line has -{exc.letter}, which named 9.18 does not take (it "
            "would refuse to start); named -h lists its options."
        ) from None
    if parsed.rest < len(argv):
        raise UsageError(
            f"named's command line has {argv[parsed.rest]!r} after its options; named takes no "
            "arguments (it would refuse to start): give its file as -c FILE."
        )
    found: dict[str, list[str]] = {}
    for letter, value in parsed.options:
        found.setdefault(letter, []).append(value)
    return found


class Statement(NamedTuple):
    """One statement of named-checkconf -p's output: its words, and its { } block if any."""

    words: tuple[str, ...]
    block: tuple[Statement, ...] | None = None


def parse_printed(text: str) -> tuple[Statement, ...]:
    """The statements of named's canonical config (named-checkconf -p): words, "strings",
    { blocks } and `;`. Quotes are dropped: -p quotes names, and nothing here needs them."""
    tokens = _tokens(text)
    statements, _ = _block(tokens, 0)
    return statements


def split_printed(output: str) -> tuple[list[str], tuple[Statement, ...]]:
    """named-checkconf -p's warnings (`FILE:LINE: text`, logged before the config is printed)
    and the statements of the config it accepted."""
    lines = output.splitlines()
    head = 0
    while head < len(lines) and (not lines[head].strip() or _WARNING.match(lines[head])):
        head += 1
    warnings = [line.strip() for line in lines[:head] if line.strip()]
    return warnings, parse_printed("\n".join(lines[head:]))


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "{};":
            tokens.append(ch)
            i += 1
        elif ch == '"':
            j, value = i + 1, []
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text):
                    j += 1
                value.append(text[j])
                j += 1
            tokens.append("".join(value))
            i = j + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in '{};"':
                j += 1
            tokens.append(text[i:j])
            i = j
    return tokens


def _block(tokens: list[str], i: int) -> tuple[tuple[Statement, ...], int]:
    """Statements from ``tokens[i]`` to the matching `}` (or the end); the index after it."""
    statements: list[Statement] = []
    words: list[str] = []
    block: tuple[Statement, ...] | None = None
    while i < len(tokens):
        part = tokens[i]
        i += 1
        if part == "}":
            break
        if part == "{":
            inner, i = _block(tokens, i)
            block = inner if block is None else block
        elif part == ";":
            if words or block is not None:
                statements.append(Statement(tuple(words), block))
            words, block = [], None
        else:
            words.append(part)
    if words or block is not None:
        statements.append(Statement(tuple(words), block))
    return tuple(statements), i


def _top(statements: Sequence[Statement], keyword: str) -> list[Statement]:
    return [s for s in statements if s.words[:1] == (keyword,)]


def _elements(block: Sequence[Statement]) -> list[str]:
    """An address match list's elements as -p prints them, nested lists flattened."""
    found: list[str] = []
    for element in block:
        if element.block is not None:
            found += [f"{' '.join(element.words)}{e}" for e in _elements(element.block)]
        elif element.words:
            found.append(" ".join(element.words))
    return found


def addresses(elements: Sequence[str]) -> list[str]:
    """The elements named listens on and one could wait for: not negated, not `any` (every
    address: nothing to wait for), `none` or a key; -p writes an address as a prefix
    (127.0.0.1/32), so a host prefix becomes the address alone."""
    found: list[str] = []
    for value in elements:
        if value.startswith("!") or value in ("any", "none") or value.startswith("key "):
            continue
        if value.endswith("/32") and ":" not in value:
            found.append(value[:-3])
        elif value.endswith("/128"):
            found.append(value[:-4])
        else:
            found.append(value)
    return found


def listen_on(printed: Sequence[Statement]) -> list[tuple[str, list[str]]]:
    """Each `listen-on`/`listen-on-v6` statement of `options` (its words, e.g. "listen-on port
    53") with its address match list's elements."""
    found = []
    for options in _top(printed, "options"):
        for statement in options.block or ():
            if statement.words[:1] in (("listen-on",), ("listen-on-v6",)):
                found.append((" ".join(statement.words), _elements(statement.block or ())))
    return found


def logs_to_syslog(printed: Sequence[Statement], opts: Mapping[str, list[str]]) -> bool:
    """Whether named logs to syslog from inside its jail (bin/named/log.c, server.c): -g sends
    everything to stderr and ignores the logging block; otherwise a channel with `syslog`, a
    category naming default_syslog, or no `category default` (its built-in default is
    default_syslog, or -L's file) needs syslog."""
    if "g" in opts:
        return False
    channels_syslog, default_set, uses_default_syslog = False, False, False
    for logging in _top(printed, "logging"):
        for statement in logging.block or ():
            if statement.words[:1] == ("channel",):
                inner = statement.block or ()
                channels_syslog |= any(s.words[:1] == ("syslog",) for s in inner)
            elif statement.words[:1] == ("category",):
                default_set |= statement.words[1:2] == ("default",)
                names = {s.words[0] for s in statement.block or () if s.words}
                uses_default_syslog |= "default_syslog" in names
    if channels_syslog or uses_default_syslog:
        return True
    return not default_set and "L" not in opts


def _checkconf(argv: Sequence[str]) -> str:
    """named-checkconf beside the named that will run, else the one on PATH."""
    beside = os.path.join(os.path.dirname(argv[0]), "named-checkconf")
    if os.path.dirname(argv[0]) and os.access(beside, os.X_OK):
        return beside
    return "named-checkconf"


def _check_argv(tool: str, opts: Mapping[str, list[str]], *, printed: bool) -> list[str]:
    """`named-checkconf [-p] [-t DIR] [FILE]`: the config as named will read it."""
    argv = [tool, *(["-p"] if printed else [])]
    if "t" in opts:
        argv += ["-t", opts["t"][-1]]
    if "c" in opts:
        argv.append(opts["c"][-1])
    return argv


def _rejected(argv: Sequence[str], code: int, output: str) -> ConfigError:
    lines = list(dict.fromkeys(ln.strip() for ln in output.splitlines() if ln.strip()))
    words = " | ".join(lines[-4:]) or f"exit status {code}"
    shown = " ".join([os.path.basename(argv[0]), *(a for a in argv[1:] if a != "-p")])
    return ConfigError(
        f"named rejected its configuration ({shown}, exit {code}): {words}",
        named_output=lines[-20:],
    )


def _user(value: str) -> str:
    """named's -u as jailshim names it: digits are always a UID to named (getpwuid)."""
    if not (value.isascii() and value.isdigit()):
        return value
    try:
        pwd.getpwuid(int(value))
    except (KeyError, OverflowError):
        raise ConfigError(
            f"named's -u {value} is a UID with no user on this host; named would exit "
            f"\"user '{value}' unknown\": give a user that exists."
        ) from None
    return f"+{value}"


def default_options_note(path: str) -> str | None:
    """A warning when Debian's OPTIONS (the file the unit reads) carry -t or -u that are not
    on named's argv; None when the file is absent or says neither."""
    data = read_regular(path, 1 << 20)
    if data is None:
        return None
    lines = data.decode(errors="replace").splitlines()
    options = ""
    for raw in lines:
        line = raw.strip()
        if line.startswith("OPTIONS="):
            try:
                options = " ".join(shlex.split(line[len("OPTIONS=") :]))
            except ValueError:
                options = line[len("OPTIONS=") :]
    try:
        given = argv_options(["named", *options.split()])
    except UsageError:
        given = {}
    if "t" not in given and "u" not in given:
        return None
    return (
        f'{path} says OPTIONS="{options}" but named\'s argv has neither -t nor -u: named will '
        "run unjailed, as root (that file is read only for this warning); pass the options on "
        "COMMAND, as Debian's unit does: named -f $OPTIONS"
    )


class _Named(Adapter):
    """named: -t and -u from its argv; listen-on and logging from named-checkconf -p."""

    name = "named"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        opts = argv_options(argv)
        tool = _checkconf(argv)
        if "t" in opts:
            # named-checkconf -t chroots there as root: judged before it runs, as every jail is
            from jailshim.daemons import refuse_host_directory

            refuse_host_directory(os.path.join(os.getcwd(), opts["t"][-1]), "named-checkconf -t")
        ask = _check_argv(tool, opts, printed=True)
        code, output = checkconf.run(ask, "bind9-utils")
        if code != 0:
            raise _rejected(ask, code, output)
        warnings, printed = split_printed(output)
        file = opts["c"][-1] if "c" in opts else DEFAULT_CONFIG
        jail = opts["t"][-1] if "t" in opts else None
        if jail is not None and not jail.startswith("/"):
            # named_os_chroot() (bin/named/os.c), called from setup() (bin/named/main.c) before
            # named_os_daemonize(): chroot(-t DIR) from the directory named started in
            jail = os.path.join(os.getcwd(), jail)
        notes = [f"named-checkconf: {line}" for line in warnings]
        read = [("tool", tool)]
        if jail is None and "u" not in opts:
            note = default_options_note(DEFAULT_OPTIONS_FILE)
            if note is not None:
                notes.append(note)
        read += [(f"argv_{k}", opts[k][-1]) for k in ("t", "u") if k in opts]
        where = f"{file} (named-checkconf -p)"
        targets_in: list[str] = []
        statements = []
        for words, elements in listen_on(printed):
            statements.append(f"{words} {{ {' '.join(e + ';' for e in elements)} }}")
            targets_in += addresses(elements)
        targets, more = checkconf.ip_targets(targets_in, where, "listen-on")
        if statements:
            read.append(("listen_on", "; ".join(statements)))
        syslog = logs_to_syslog(printed, opts)
        read.append(
            ("logging", "stderr (-g)" if "g" in opts else "syslog" if syslog else "its own files")
        )
        return DaemonPlan(
            files=(file,),
            chroot=(jail.rstrip("/") or "/") if jail is not None else None,
            user=_user(opts["u"][-1]) if opts.get("u", [""])[-1] else None,
            sockets=("/dev/log",) if syslog else (),
            wait_targets=targets,
            notes=(*notes, *more),
            read=tuple(read),
            notify=True,  # Debian's named sends READY=1 (sd_notify) after the chroot
            devices=DEVICES,
        )

    def check_config(self, argv: Sequence[str]) -> None:
        check = _check_argv(_checkconf(argv), argv_options(argv), printed=False)
        code, output = checkconf.run(check, "bind9-utils")
        if code != 0:
            raise _rejected(check, code, output)

    def config_argv(self, command: str, path: str) -> list[str]:
        return [command, "-c", path]


ADAPTER = _Named()
