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
from typing import TYPE_CHECKING, NamedTuple

from jailshim.daemons import Adapter, DaemonPlan, PendingCheck
from jailshim.errors import ConfigError

if TYPE_CHECKING:
    from jailshim.daemons.checkconf import Tool
    from jailshim.spec import Identity

__all__ = [
    "ADAPTER",
    "Bind",
    "HaproxyConfig",
    "config_files",
    "haproxy_check",
    "identity_as_set",
    "jail_of",
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
    "log-forward",
    "namespace_list",
}  # haproxy 2.6's REGISTER_CONFIG_SECTION() calls
_LISTENERS = {"frontend", "listen", "log-forward", "peers"}


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
        try:
            names = sorted(os.listdir(path), key=os.fsencode)  # scandir+alphasort, C locale
        except OSError as exc:
            raise ConfigError(
                f"haproxy's configuration directory {path} cannot be listed ({exc.strerror}); "
                "fix its permissions or the -f argument.",
                file=path,
            ) from None
        for name in names:
            full = os.path.join(path, name)
            # haproxy.c: hidden names are skipped, and the first ".cfg" must end the name
            cfg = name.find(".cfg")
            if name.startswith(".") or cfg < 0 or cfg + 4 != len(name):
                continue
            try:
                if stat.S_ISREG(os.stat(full).st_mode):
                    found.append(full)
            except OSError:
                continue
    return found


_SPACE = " \t\n\v\f\r"  # isspace() in the C locale


def _getenv(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name)


def env_expand(text: str, env: Mapping[str, str]) -> str:
    """$NAME and ${NAME} anywhere in an address, as haproxy's env_expand() (src/tools.c)."""
    if "$" not in text:
        return text
    out: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        beg = j + 1
        if beg < len(text) and text[beg] == "{":
            beg += 1
        end = beg
        while end < len(text) and (
            text[end].isascii() and (text[end].isalnum() or text[end] == "_")
        ):
            end += 1
        out.append(env.get(text[beg:end], "") or "")
        i = end + 1 if end < len(text) and text[end] == "}" and beg > j + 1 else end


def split_line(
    line: str,
    env: Mapping[str, str] | None = None,
    pseudo: Mapping[str, str] | None = None,
) -> list[str]:
    """The words of one line, as haproxy sees them: leading blanks skipped, then parse_line();
    trailing empty words are dropped (haproxy reads an empty args[n] as absent)."""
    words = _parse_line(line.lstrip(_SPACE), env, pseudo)
    while words and not words[-1]:
        words.pop()
    return words


def _parse_line(
    line: str,
    env: Mapping[str, str] | None = None,
    pseudo: Mapping[str, str] | None = None,
) -> list[str]:
    r"""Split one line into words exactly as haproxy 2.6's parse_line() (src/tools.c).

    The line ends at \n, \r (unless it follows a blank) or #; blanks are isspace() (space, \t,
    \v, \f); a backslash escapes space, \\, #, ' and "; \$ only inside double quotes; \t \n \r
    \xNN give their characters; other pairs stay as written. "$NAME", "${NAME}",
    "${NAME-default}" (the default when NAME is unset) and "${NAME[*]}" (one word per blank-
    separated part) expand inside double quotes only; $.LINE, $.FILE, $.SECTION are haproxy's
    own. Empty words are kept (haproxy's args[]), a trailing blank gives a last empty word.
    """
    env = os.environ if env is None else env
    pseudo = pseudo or {}
    args: list[str] = []
    word: list[str] = []
    squote = dquote = False
    quote_at = -1
    n = len(line)
    i = 0
    while True:
        c = line[i] if i < n else "\0"
        if c >= "-" and c != "\\":
            word.append(c)
            i += 1
        elif c in "\0\n\r" or (c == "#" and not squote and not dquote):
            break
        elif c == '"' and not squote:
            dquote = not dquote
            quote_at = i if dquote else -1
            i += 1
        elif c == "'" and not dquote:
            squote = not squote
            quote_at = i if squote else -1
            i += 1
        elif c == "\\" and not squote:
            nxt = line[i + 1] if i + 1 < n else "\0"
            send = c
            if nxt in " \\#'\"":
                send = nxt
                i += 1
            elif nxt in "tnr":
                send = {"t": "\t", "n": "\n", "r": "\r"}[nxt]
                i += 1
            elif nxt == "$" and dquote:
                send = "$"
                i += 1
            elif nxt == "x":
                digits = line[i + 2 : i + 4]
                if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                    raise ParseError(
                        f"truncated or invalid hexadecimal sequence at position {i + 1}"
                    )
                send = chr(int(digits, 16))
                i += 3
            i += 1
            word.append(send)
        elif c in _SPACE and not squote and not dquote:
            while i < n and line[i] in _SPACE:
                i += 1
            args.append("".join(word))
            word = []
        elif c == "$" and dquote:
            i += 1
            brace = i < n and line[i] == "{"
            if brace:
                i += 1
            first = line[i] if i < n else "\0"
            if not (first.isascii() and (first.isalpha() or first in "_.")):
                raise ParseError(
                    f"forbidden first char in environment variable name at position {i + 1}"
                )
            name_at = i
            if first == ".":
                i += 1
            while i < n and line[i].isascii() and (line[i].isalnum() or line[i] == "_"):
                i += 1
            name = line[name_at:i]
            value: str | None
            if name.startswith("."):
                if name[1:] not in ("LINE", "FILE", "SECTION"):
                    raise ParseError(
                        f"unsupported internal variable {name} at position {name_at + 1}"
                    )
                value = pseudo.get(name[1:], "")
            else:
                value = _getenv(env, name)
            expand = False
            if i < n and line[i] == "[" and brace:
                if line[i + 1 : i + 3] != "*]":
                    raise ParseError(
                        f"truncated or invalid word expansion sequence at position {i + 1}"
                    )
                expand = True
                i += 3
            if brace:
                if i < n and line[i] == "-":
                    close = line.find("}", i)
                    if close < 0 or "\n" in line[i:close] or "\r" in line[i:close]:
                        raise ParseError("unmatched brace in environment variable name")
                    if value is None:
                        value = line[i + 1 : close].split("\0", 1)[0]
                    i = close
                elif i >= n or line[i] != "}":
                    raise ParseError("unmatched brace in environment variable name")
                i += 1
            if value:
                value = value.split("\0", 1)[0]
                k = 0
                while k < len(value):
                    if expand and value[k] in _SPACE:
                        args.append("".join(word))
                        word = []
                        k += 1
                        while k < len(value) and value[k] in _SPACE:
                            k += 1
                    else:
                        word.append(value[k])
                        k += 1
        else:
            word.append(c)
            i += 1
    args.append("".join(word))
    if squote or dquote:
        raise ParseError(f"unmatched quote at position {quote_at + 1}")
    return args


class Bind(NamedTuple):
    """A `bind` line's addresses (a comma list is split, $VAR expanded), and where it was found."""

    address: str  # the first word, as written
    where: str  # "file:line"
    addresses: tuple[str, ...] = ()
    transparent: bool = False  # IP_TRANSPARENT: binds before the address exists
    namespace: str = ""  # `namespace NAME`: bound inside that network namespace


def _bind(words: list[str], where: str, env: Mapping[str, str] | None = None) -> Bind:
    """`bind A[,B ...] [param*]`: the address list is the first word (str2listener(),
    src/listener.c splits it on commas; str2sa_range() expands $VAR in each part)."""
    env = os.environ if env is None else env
    addresses = tuple(env_expand(a, env) for a in words[1].split(",") if a)
    params = words[2:]
    namespace = ""
    for k, w in enumerate(params[:-1]):
        if w == "namespace":
            namespace = params[k + 1]
    return Bind(words[1], where, addresses, "transparent" in params, namespace)


class HaproxyConfig(NamedTuple):
    files: tuple[str, ...]
    chroot: str | None = None
    user: str | None = None  # a name, or "+N" for a number (uid N)
    group: str | None = None  # a name, or "+N"; None: haproxy keeps the starting gid and groups
    log_sockets: tuple[str, ...] = ()
    binds: tuple[Bind, ...] = ()
    notes: tuple[str, ...] = ()


# The prefixes str2sa_range() (src/tools.c) knows; stream+/dgram+ come first.
_UNIX_PREFIXES = ("unix@", "uxdg@", "uxst@")


def _log_socket(target: str, env: Mapping[str, str]) -> str | None:
    """The unix socket path of a `log` target, as str2sa_range() reads it; None if not unix."""
    text = env_expand(target, env)
    for kind in ("stream+", "dgram+"):
        text = text.removeprefix(kind)
    for prefix in _UNIX_PREFIXES:
        if text.startswith(prefix):
            path = text[len(prefix) :]
            # haproxy sends logs after chroot() and chdir("/"): a relative path is from "/"
            return os.path.normpath(os.path.join("/", path)) if path else None
    if text.startswith("/"):
        return text
    return None


class Facts(NamedTuple):
    """What `.if` predicates ask about the haproxy binary (from `haproxy -vv`)."""

    version: str = "2.6.12"
    features: str = ""
    openssl: str = ""


def binary_facts(binary: str = "haproxy") -> Facts:
    """The version, feature list and OpenSSL version of ``binary``, from `haproxy -vv`."""
    from jailshim.daemons.checkconf import Tool

    try:
        _, out, _ = Tool([binary, "-vv"], "haproxy", timeout=30).communicate()
    except ConfigError:  # could not run, or no answer in time: predicates see no facts
        return Facts()
    version = features = openssl = ""
    for ln in out.splitlines():
        if ln.startswith(("HAProxy version ", "HA-Proxy version ")) and not version:
            version = ln.split()[2]
        elif ln.startswith("Feature list :"):
            features = ln.split(":", 1)[1].strip()
        elif ln.startswith("Running on OpenSSL version :"):
            openssl = ln.split(":", 1)[1].strip()
    return Facts(version or "0", features, openssl)


def _version_key(text: str) -> tuple[int, ...]:
    """split_version() (src/tools.c), simplified: the leading dotted numbers."""
    nums: list[int] = []
    for part in text.replace("-", ".").split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        nums.append(int(digits))
    return tuple(nums)


class _Cond:
    """`.if` expressions: cfg_parse_cond_expr/_and/_term and cfg_eval_cond_term (src/cfgcond.c)."""

    def __init__(self, text: str, env: Mapping[str, str], facts: Facts) -> None:
        self.s, self.i, self.env, self.facts = text, 0, env, facts

    def _blank(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def expr(self) -> bool:
        value = self.and_()
        self._blank()
        while self.s.startswith("||", self.i):
            self.i += 2
            right = self.and_()
            value = value or right
            self._blank()
        return value

    def and_(self) -> bool:
        value = self.term()
        self._blank()
        while self.s.startswith("&&", self.i):
            self.i += 2
            right = self.term()
            value = value and right
            self._blank()
        return value

    def term(self) -> bool:
        self._blank()
        neg = False
        while self.s.startswith("!", self.i):
            neg = not neg
            self.i += 1
            self._blank()
        s = self.s
        j = self.i
        if j < len(s) and s[j] in "+-":
            j += 1
        if j < len(s) and s[j].isdigit():
            k = j
            base = 10
            if (
                s.startswith(("0x", "0X"), j)
                and k + 2 < len(s)
                and s[k + 2] in "0123456789abcdefABCDEF"
            ):
                base, k = 16, j + 2
            elif s[j] == "0":
                base = 8
            digits = "0123456789abcdef"[:base]
            start = k
            while k < len(s) and s[k].lower() in digits:
                k += 1
            value = int(s[start:k] or "0", base) != 0
            self.i = k
            return value != neg
        if j < len(s) and s[j] == "(":
            self.i = j + 1
            value = self.expr()
            self._blank()
            if not s.startswith(")", self.i):
                raise ParseError("expected ')' after conditional expression")
            self.i += 1
            return value != neg
        k = self.i
        while k < len(s) and s[k] not in " (":
            k += 1
        name = s[self.i : k]
        if name not in _PREDICATES:
            raise ParseError(f"unparsable conditional expression '{s[self.i :]}'")
        self.i = k
        return self._pred(name, self._args()) != neg

    def _args(self) -> list[str]:
        """make_arg_list() (src/arg.c) for string arguments: (a, "b", 'c')."""
        s = self.s
        if not s.startswith("(", self.i):
            return []
        self.i += 1
        args: list[str] = []
        cur: list[str] = []
        quote = ""
        while self.i < len(s):
            c = s[self.i]
            if quote:
                if c == "\\" and self.i + 1 < len(s):
                    cur.append(s[self.i + 1])
                    self.i += 2
                    continue
                if c == quote:
                    quote = ""
                else:
                    cur.append(c)
            elif c in "\"'":
                quote = c
            elif c == "\\" and self.i + 1 < len(s):
                cur.append(s[self.i + 1])
                self.i += 1
            elif c == ",":
                args.append("".join(cur))
                cur = []
            elif c == ")":
                args.append("".join(cur))
                self.i += 1
                return args
            else:
                cur.append(c)
            self.i += 1
        raise ParseError("missing closing ')' in predicate arguments")

    def _pred(self, name: str, args: list[str]) -> bool:
        want = 2 if name in ("streq", "strneq") else 1
        if len(args) != want:
            raise ParseError(f"predicate '{name}' needs {want} argument(s)")
        a = args[0]
        if name == "defined":
            return a in self.env
        if name == "feature":
            feats = self.facts.features.split()
            for f in feats:
                if f[1:] == a and f[:1] in "+-":
                    return f[0] == "+"
            return False
        if name == "streq":
            return a == args[1]
        if name == "strneq":
            return a != args[1]
        if name == "version_atleast":
            return _version_key(self.facts.version) >= _version_key(a)
        if name == "version_before":
            return _version_key(self.facts.version) < _version_key(a)
        ossl = (
            _version_key(self.facts.openssl.removeprefix("OpenSSL ").split()[0])
            if self.facts.openssl
            else ()
        )
        if name == "openssl_version_atleast":
            return bool(ossl) and ossl >= _version_key(a)
        if name == "openssl_version_before":
            return bool(ossl) and ossl < _version_key(a)
        return self.facts.openssl.startswith(a)  # ssllib_name_startswith


_PREDICATES = {
    "defined",
    "feature",
    "streq",
    "strneq",
    "version_atleast",
    "version_before",
    "openssl_version_atleast",
    "openssl_version_before",
    "ssllib_name_startswith",
}


def _condition(text: str, env: Mapping[str, str], facts: Facts) -> bool:
    cond = _Cond(text, env, facts)
    value = cond.expr()
    cond._blank()
    if cond.i != len(text):
        raise ParseError(f"unexpected character '{text[cond.i]}' in conditional expression")
    return value


def _strl2irc(text: str) -> int | None:
    """strl2irc() (src/tools.c): haproxy's uid/gid number, None when it warns and ignores it."""
    if not text:
        return None
    neg = text.startswith("-")
    value = 0
    for ch in text[1:] if neg else text:
        j = ord(ch) - ord("0")
        if j > 9:
            return None
        value = value * 10 + (-j if neg else j)
        if not -(2**31) <= value < 2**31:
            return None
    return value


_TAKE, _DROP, _SKIP = 0, 1, 2  # a .if branch taken, not taken yet, or decided already


def parse_config(
    texts: Sequence[tuple[str, str]],
    env: Mapping[str, str] | None = None,
    facts: Facts | None = None,
    binary: str = "haproxy",
) -> HaproxyConfig:
    r"""Parse (file name, content) pairs, in load order, as haproxy 2.6's readcfgfile()
    (src/cfgparse.c) and cfg_parse_global() (src/cfgparse-global.c) do, for what jailshim needs.

    Lines end at \n only; leading blanks are skipped; a line whose first word is empty is
    blank; a line starting with [ is a scope. `.if/.elif/.else/.endif` are evaluated
    (src/cfgcond.c); setenv/presetenv/unsetenv/resetenv in global change the variables later
    lines see. chroot keeps its first value; user/uid keep the first non-zero uid, group/gid
    the first non-zero gid ("already specified. Continuing.").
    """
    envd: dict[str, str] = dict(os.environ if env is None else env)
    lazy_facts = facts
    section = ""
    section_name = ""
    chroot: str | None = None
    uid_name: str | None = None
    gid_name: str | None = None
    uid_set = gid_set = False
    sockets: dict[str, None] = {}
    binds: list[Bind] = []
    notes: list[str] = []
    for name, text in texts:
        conds: list[int] = []
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for number, raw in enumerate(lines, 1):
            where = f"{name}:{number}"

            def fail(why: str, number: int = number, name: str = name) -> ConfigError:
                return ConfigError(
                    f"haproxy configuration {name}:{number}: {why}; fix that line.",
                    file=name,
                    line=number,
                )

            if "\0" in raw:
                raise fail("a NUL character (haproxy stops at a stray NUL)")
            line = raw.lstrip(_SPACE)
            if line.startswith("["):
                continue
            pseudo = {"LINE": str(number), "FILE": name, "SECTION": section_name}
            try:
                words = _parse_line(line, envd, pseudo)
            except ParseError as exc:
                raise fail(str(exc)) from None
            if not words[0]:
                continue
            key = words[0]
            masked = any(c != _TAKE for c in conds)
            if key in (".if", ".elif"):
                expr = " ".join(words[1:]).rstrip(" ") if len(words) > 1 else ""
                if key == ".if":
                    if masked:
                        conds.append(_SKIP)
                        continue
                elif not conds:
                    raise fail("lone '.elif' with no matching '.if'")
                elif conds[-1] != _DROP:
                    conds[-1] = _SKIP
                    continue
                else:
                    conds.pop()
                    if any(c != _TAKE for c in conds):
                        conds.append(_SKIP)
                        continue
                if lazy_facts is None:  # only a .if needs them: `haproxy -vv` of that binary
                    lazy_facts = binary_facts(binary)
                try:
                    taken = _condition(expr, envd, lazy_facts)
                except ParseError as exc:
                    raise fail(f"{exc} in '{key}'") from None
                conds.append(_TAKE if taken else _DROP)
                continue
            if key == ".else":
                if not conds:
                    raise fail("lone '.else' with no matching '.if'")
                conds[-1] = _TAKE if conds[-1] == _DROP else _SKIP
                continue
            if key == ".endif":
                if not conds:
                    raise fail("lone '.endif' with no matching '.if'")
                conds.pop()
                continue
            if masked or key.startswith("."):
                continue
            if key in ("no", "default"):
                words = [*words[1:], ""]
                key = words[0]
                if key not in ("log",):
                    continue
            if key in SECTIONS:
                section = key
                section_name = words[1] if len(words) > 1 and words[1] else key
                continue

            def arg(k: int, words: list[str] = words) -> str:
                return words[k] if k < len(words) else ""

            if section == "global":
                if key in ("chroot", "user", "uid", "group", "gid") and arg(2):
                    raise fail(f"`{key}` takes one value")
                if key == "chroot" and chroot is None:
                    if not arg(1):
                        raise fail("`chroot` needs a directory")
                    chroot = arg(1)
                elif key in ("user", "uid") and not uid_set:
                    if key == "user":
                        uid_name = arg(1)
                        uid_set = _nonzero_user(uid_name)
                    else:
                        num = _strl2irc(arg(1))
                        if num is not None and num < 0:
                            raise fail(f"`uid {arg(1)}` is negative")
                        if num:
                            uid_name, uid_set = f"+{num}", True
                elif key in ("group", "gid") and not gid_set:
                    if key == "group":
                        gid_name = arg(1)
                        gid_set = _nonzero_group(gid_name)
                    else:
                        num = _strl2irc(arg(1))
                        if num is not None and num < 0:
                            raise fail(f"`gid {arg(1)}` is negative")
                        if num:
                            gid_name, gid_set = f"+{num}", True
                elif key in ("setenv", "presetenv") and arg(1) and arg(2):
                    if key == "setenv" or arg(1) not in envd:
                        envd[arg(1)] = arg(2)
                elif key == "unsetenv":
                    for var in words[1:]:
                        if not var:
                            break
                        envd.pop(var, None)
                elif key == "resetenv":
                    keep = set()
                    for var in words[1:]:
                        if not var:
                            break
                        keep.add(var)
                    envd = {k: v for k, v in envd.items() if k in keep}
            if key == "log" and arg(1):
                path = _log_socket(arg(1), envd)
                if path:
                    sockets[path] = None
            elif arg(1) and (
                (key == "bind" and section in _LISTENERS)
                or (key == "dgram-bind" and section == "log-forward")
            ):
                binds.append(_bind(words, where, envd))
        if conds:
            raise ConfigError(
                f"haproxy configuration {name}:{len(lines)}: non-terminated '.if' block; "
                "add its .endif.",
                file=name,
                line=len(lines),
            )
    if uid_name is not None and not uid_set:
        uid_name = None  # user root / uid 0: haproxy does not change its uid
    if gid_name is not None and not gid_set:
        gid_name = None
    return HaproxyConfig(
        files=tuple(n for n, _ in texts),
        chroot=chroot,
        user=uid_name,
        group=gid_name,
        log_sockets=tuple(sockets),
        binds=tuple(binds),
        notes=tuple(notes),
    )


def _nonzero_user(name: str) -> bool:
    """haproxy resolves `user` at parse time with getpwnam(); uid 0 leaves it unset."""
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid != 0
    except (KeyError, ValueError):
        return True  # haproxy -c rejects an unknown user; we report it as given


def _nonzero_group(name: str) -> bool:
    import grp

    try:
        return grp.getgrnam(name).gr_gid != 0
    except (KeyError, ValueError):
        return True


def read_config(
    files: Sequence[str],
    env: Mapping[str, str] | None = None,
    facts: Facts | None = None,
    binary: str = "haproxy",
) -> HaproxyConfig:
    """Read and parse ``files`` (from config_files or --haproxy-config)."""
    if not files:
        raise ConfigError("haproxy is given no configuration file; pass -f FILE.")
    texts = []
    for path in files:
        try:
            # newline="": haproxy splits on \n only (fgets), a \r is the line's business
            with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
                texts.append((path, f.read()))
        except OSError as exc:
            raise _unreadable(path, exc) from None
    return parse_config(texts, env, facts, binary)


def identity_as_set(identity: Identity, *, group_given: bool) -> Identity:
    """The identity haproxy 2.6 really runs with (set_identity(), src/haproxy.c): with a
    group it calls setgroups(0) then setgid, so no supplementary groups; without one it never
    touches the gid, so it keeps the starting gid and groups (jailshim's own: root's)."""
    if group_given:
        return identity._replace(groups=())
    return identity._replace(gid=os.getgid(), groups=tuple(sorted(set(os.getgroups()))))


def _check_argv(binary: str, files: tuple[str, ...]) -> list[str]:
    argv = [binary, "-c"]
    for f in files:
        argv += ["-f", f]
    return argv


def _judge(returncode: int, output: str) -> None:
    """haproxy -c's verdict: a rejection is a config error with haproxy's words."""
    if returncode == 0:
        return
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    alerts = [ln.split(":", 1)[1].strip() if ":" in ln else ln for ln in lines if "[ALERT]" in ln]
    said = " | ".join(alerts) or (lines[-1] if lines else f"exit status {returncode}")
    raise ConfigError(
        f"haproxy rejected its configuration (haproxy -c, exit {returncode}): {said}",
        haproxy_output=lines[-20:],
    )


def _start_check(binary: str, files: tuple[str, ...]) -> Tool:
    """`haproxy -c` on the same files, in a session of its own (checkconf.Tool)."""
    import subprocess

    from jailshim.daemons.checkconf import Tool

    return Tool(
        _check_argv(binary, files),
        "haproxy",
        remedy="or check the haproxy binary",
        stderr=subprocess.STDOUT,
    )


def haproxy_check(binary: str, files: tuple[str, ...]) -> None:
    """Run `haproxy -c` on the same files; a rejection is a config error with haproxy's words."""
    code, output, _ = _start_check(binary, files).communicate("haproxy -c")
    _judge(code, output)


class _RunningCheck(PendingCheck):
    """`haproxy -c` started in the background: it runs while the jail is prepared."""

    def __init__(self, binary: str, files: tuple[str, ...]) -> None:
        self.tool: Tool | None = _start_check(binary, files)

    def finish(self) -> None:
        if self.tool is None:
            return
        tool, self.tool = self.tool, None
        code, output, _ = tool.communicate("haproxy -c")
        _judge(code, output)

    def cancel(self) -> None:
        if self.tool is not None:
            tool, self.tool = self.tool, None
            tool.end()


def jail_of(chroot: str, cwd: str, change_dir: str | None, version: str) -> str:
    """PURE: the directory haproxy really chroots to. chroot(global.chroot) is called in main()
    (src/haproxy.c) from haproxy's current directory: the one it started in, or -C DIR, which
    init() chdir()s to before reading the configuration and, up to 3.1, never leaves; 3.2
    (commit e900ef987) goes back to the starting directory after check_config_validity()."""
    if chroot.startswith("/"):
        return chroot
    base = cwd
    if change_dir is not None and _version_key(version) < (3, 2):
        base = os.path.join(cwd, change_dir)
    return os.path.join(base, chroot)


class _Haproxy(Adapter):
    """haproxy: its -f files read as haproxy 2.6 reads them; `haproxy -c` as its checker."""

    name = "haproxy"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        # .if predicates (feature(), version_atleast()) ask the binary that will run: argv[0]
        config = read_config(config_files(argv), env, binary=argv[0])
        from jailshim.verify.network import haproxy_targets

        targets, notes = haproxy_targets(config.binds)
        jail = config.chroot
        if jail is not None and not jail.startswith("/"):
            _, change_dir = _cfg_args(argv)
            # only then is the version asked: `haproxy -vv` is a process of its own
            version = binary_facts(argv[0]).version if change_dir is not None else "0"
            jail = jail_of(jail, os.getcwd(), change_dir, version)
        return DaemonPlan(
            files=config.files,
            chroot=jail,
            user=config.user,
            group=config.group,
            sockets=config.log_sockets,
            wait_targets=tuple(targets),
            notes=(*config.notes, *notes),
        )

    def check_config(self, argv: Sequence[str]) -> None:
        haproxy_check(argv[0], tuple(config_files(argv)))

    def start_check(self, argv: Sequence[str]) -> PendingCheck:
        return _RunningCheck(argv[0], tuple(config_files(argv)))

    def config_argv(self, command: str, path: str) -> list[str]:
        return [command, "-f", path]

    def identity(self, identity: Identity, config: DaemonPlan, *, group_given: bool) -> Identity:
        return identity_as_set(identity, group_given=group_given)


ADAPTER = _Haproxy()
