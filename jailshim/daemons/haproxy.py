"""Read haproxy's configuration the way haproxy does: which files, and what `global` says.

Files: every `-f FILE|DIR` and every argument after `--`, in command-line order, relative to
`-C DIR` when given; a directory contributes its non-hidden regular files ending in ".cfg", in
C-locale lexical order (management.txt, "-f <cfgfile|cfgdir>").

Lines: haproxy has no line continuations (a trailing backslash stays a backslash). Words are
split on blanks; a backslash escapes space, tab, backslash, quotes, # and $; \\n \\r \\t \\xNN
stand for their characters; other combinations are kept as written. "Double quotes" quote
weakly and expand $VAR and ${VAR}; 'single quotes' quote strongly; an unquoted # starts a
comment (configuration.txt, 2.2).
A line we cannot split is reported with its file and line; haproxy -c is the final judge of
everything else, so keywords we do not know are passed over, never an error.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from jailshim.errors import ConfigError

__all__ = [
    "Bind",
    "HaproxyConfig",
    "config_files",
    "parse_config",
    "read_config",
    "split_line",
]

_ARG_OPTIONS = {"-f", "-C", "-L", "-N", "-m", "-n", "-p", "-S", "-x"}
_PID_LIST_OPTIONS = {"-sf", "-st"}
SECTIONS = {
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "crt-store",
    "traces",
}
_PROXIES = {"frontend", "listen"}


class ParseError(ValueError):
    """A line haproxy could not split either (unterminated quote, bad escape)."""


def _cfg_args(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """The -f/-- file arguments in order, and the -C directory, from haproxy's argv."""
    files: list[str] = []
    chdir: str | None = None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            files.extend(argv[i + 1 :])
            break
        if arg in _ARG_OPTIONS and i + 1 < len(argv):
            if arg == "-f":
                files.append(argv[i + 1])
            elif arg == "-C":
                chdir = argv[i + 1]
            i += 2
            continue
        if arg in _PID_LIST_OPTIONS:
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                i += 1
            continue
        i += 1
    return files, chdir


def _unreadable(path: str, exc: OSError) -> ConfigError:
    return ConfigError(
        f"haproxy's configuration {path} cannot be read ({exc.strerror}); fix the -f argument.",
        file=path,
    )


def config_files(argv: Sequence[str]) -> list[str]:
    """The configuration files haproxy would load for ``argv``, in its order."""
    args, chdir = _cfg_args(argv)
    found: list[str] = []
    for arg in args:
        path = arg if os.path.isabs(arg) or chdir is None else os.path.join(chdir, arg)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _unreadable(path, exc) from None
        if not stat.S_ISDIR(st.st_mode):
            found.append(path)
            continue
        names = sorted(os.listdir(path), key=os.fsencode)  # LC_COLLATE=C: byte order
        for name in names:
            full = os.path.join(path, name)
            if name.startswith(".") or not name.endswith(".cfg"):
                continue
            try:
                if stat.S_ISREG(os.stat(full).st_mode):
                    found.append(full)
            except OSError:
                continue
    return found


def _expand(text: str, i: int, env: Mapping[str, str]) -> tuple[str, int]:
    """Expand $NAME or ${NAME} at text[i] == '$' (inside double quotes)."""
    if i + 1 < len(text) and text[i + 1] == "{":
        end = text.find("}", i + 2)
        if end < 0:
            raise ParseError("unterminated ${...}")
        name = text[i + 2 : end].split(",", 1)[0]
        return env.get(name, ""), end + 1
    j = i + 1
    while j < len(text) and (text[j].isalnum() or text[j] == "_"):
        j += 1
    if j == i + 1:
        return "$", j
    return env.get(text[i + 1 : j], ""), j


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_ESCAPABLE = set(" \t\\\"'#$nrtx")


def split_line(line: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Split one configuration line into words as haproxy does (quotes, escapes, comments)."""
    env = os.environ if env is None else env
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote = ""
    i = 0
    text = line.rstrip("\r\n")
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                word.append(c)
            i += 1
            continue
        if c == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt not in _ESCAPABLE:
                # haproxy leaves other combinations (and a trailing backslash) unchanged
                word.append(c)
                in_word = True
                i += 1
                continue
            if nxt == "x":
                digits = text[i + 2 : i + 4]
                if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                    raise ParseError(f"bad escape \\x{digits}")
                word.append(chr(int(digits, 16)))
                i += 4
            else:
                word.append(_ESCAPES.get(nxt, nxt))
                i += 2
            in_word = True
            continue
        if quote == '"':
            if c == '"':
                quote = ""
                i += 1
            elif c == "$":
                value, i = _expand(text, i, env)
                word.append(value)
            else:
                word.append(c)
                i += 1
            continue
        if c in "\"'":
            quote = c
            in_word = True
            i += 1
            continue
        if c == "#":
            break
        if c in " \t":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            i += 1
            continue
        word.append(c)
        in_word = True
        i += 1
    if quote:
        raise ParseError(f"unterminated {quote}quote{quote}")
    if in_word:
        words.append("".join(word))
    return words


class Bind(NamedTuple):
    """A `bind` line's addresses as written (a comma list is split), and where it was found."""

    address: str  # the first word, as written
    where: str  # "file:line"
    addresses: tuple[str, ...] = ()
    transparent: bool = False  # IP_TRANSPARENT: binds before the address exists


def _bind(words: list[str], where: str) -> Bind:
    """`bind A[, B ...] [param*]`: the comma list may be one word or spread over several."""
    parts, i = [words[1]], 1
    while i + 1 < len(words) and (parts[-1].endswith(",") or words[i + 1].startswith(",")):
        i += 1
        parts.append(words[i])
    addresses = tuple(a for a in ",".join(parts).split(",") if a)
    return Bind(words[1], where, addresses, "transparent" in words[i + 1 :])


class HaproxyConfig(NamedTuple):
    files: tuple[str, ...]
    chroot: str | None = None
    user: str | None = None
    group: str | None = None
    log_sockets: tuple[str, ...] = ()
    binds: tuple[Bind, ...] = ()
    notes: tuple[str, ...] = ()


def _log_socket(target: str) -> str | None:
    """The unix socket path of a `log` target, if it is one."""
    if target.startswith("unix@"):
        return target[len("unix@") :]
    if target.startswith("/"):
        return target
    return None


def parse_config(
    texts: Sequence[tuple[str, str]], env: Mapping[str, str] | None = None
) -> HaproxyConfig:
    """Parse (file name, content) pairs, in load order, for what jailshim needs."""
    section = ""
    values: dict[str, str] = {}
    sockets: list[str] = []
    binds: list[Bind] = []
    notes: list[str] = []
    depth = 0  # inside .if blocks: conditions are haproxy's to evaluate
    for name, text in texts:
        for number, line in enumerate(text.splitlines(), 1):
            try:
                words = split_line(line, env)
            except ParseError as exc:
                raise ConfigError(
                    f"haproxy configuration {name}:{number}: {exc}; fix that line.",
                    file=name,
                    line=number,
                ) from None
            if not words:
                continue
            key = words[0]
            if key.startswith("."):
                depth += 1 if key == ".if" else -1 if key == ".endif" else 0
                continue
            if key in SECTIONS:
                section = key
                continue
            where = f"{name}:{number}"
            if depth and section == "global" and key in ("chroot", "user", "uid", "group", "gid"):
                notes.append(f"{where}: `{key}` inside a .if block; read as if the block applies")
            if section == "global" and key in ("chroot", "user", "uid", "group", "gid"):
                if len(words) < 2:
                    raise ConfigError(
                        f"haproxy configuration {where}: `{key}` needs a value; fix that line.",
                        file=name,
                        line=number,
                    )
                slot = {"uid": "user", "gid": "group"}.get(key, key)
                # haproxy's uid/gid are numbers even where a user is named "103": "+N" says so
                numeric = key in ("uid", "gid") and words[1].isdigit()
                values[slot] = f"+{words[1]}" if numeric else words[1]
            elif key == "log" and len(words) >= 2:
                path = _log_socket(words[1])
                if path and path not in sockets:
                    sockets.append(path)
            elif key == "bind" and section in _PROXIES and len(words) >= 2:
                binds.append(_bind(words, where))
    return HaproxyConfig(
        files=tuple(n for n, _ in texts),
        chroot=values.get("chroot"),
        user=values.get("user"),
        group=values.get("group"),
        log_sockets=tuple(sockets),
        binds=tuple(binds),
        notes=tuple(notes),
    )


def read_config(files: Sequence[str], env: Mapping[str, str] | None = None) -> HaproxyConfig:
    """Read and parse ``files`` (from config_files or --haproxy-config)."""
    if not files:
        raise ConfigError("haproxy is given no configuration file; pass -f FILE.")
    texts = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                texts.append((path, f.read()))
        except OSError as exc:
            raise _unreadable(path, exc) from None
    return parse_config(texts, env)
