"""Which files haproxy 2.6 reads, and what it makes of them, for what jailshim needs: global's
chroot, user and group, the unix `log` targets, and the listeners' `bind` lines.

Files: every `-f FILE|DIR` and every argument after `--`, in command-line order, relative to
`-C DIR` when given; a directory contributes its non-hidden regular files ending in ".cfg", in
C-locale lexical order (management.txt, "-f <cfgfile|cfgdir>").

A line we cannot split is reported with its file and line; haproxy -c is the final judge of
everything else, so keywords we do not know are passed over, never an error.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from jailshim.daemons import read_file
from jailshim.daemons.haproxy.tokenizer import SPACE, ParseError, env_expand, parse_line
from jailshim.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from jailshim.daemons.haproxy.facts import Facts
    from jailshim.spec import Identity
    from jailshim.verify.network import WaitTarget

__all__ = [
    "SECTIONS",
    "Bind",
    "HaproxyConfig",
    "cfg_args",
    "config_files",
    "haproxy_targets",
    "identity_as_set",
    "jail_of",
    "parse_config",
    "read_config",
]

_ARG_OPTIONS = {"-f", "-C", "-L", "-N", "-m", "-n", "-p", "-S", "-x"}
_PID_LIST_OPTIONS = {"-sf", "-st"}
# a configuration file larger than this is no configuration file (a link to /dev/zero)
CONFIG_MAX = 64 << 20


def cfg_args(argv: Sequence[str]) -> tuple[list[str], str | None]:
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


def unreadable(path: str, exc: OSError) -> ConfigError:
    return ConfigError(
        f"haproxy's configuration {path} cannot be read ({exc.strerror}); fix the -f argument.",
        file=path,
    )


def config_files(argv: Sequence[str]) -> list[str]:
    """The configuration files haproxy would load for ``argv``, in its order."""
    args, chdir = cfg_args(argv)
    found: list[str] = []
    for arg in args:
        path = arg if os.path.isabs(arg) or chdir is None else os.path.join(chdir, arg)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise unreadable(path, exc) from None
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


# str2sa_range() (haproxy 2.6, src/tools.c): these name no IP address to wait for
_NON_IP_PREFIXES = ("unix@", "uxdg@", "uxst@", "abns@", "fd@", "sockpair@")
# ...and these name an IP address (TCP, UDP or QUIC), stripped before the address
_IP_PREFIXES = (
    "ipv4@",
    "ipv6@",
    "ip@",
    "tcp4@",
    "tcp6@",
    "tcp@",
    "udp4@",
    "udp6@",
    "udp@",
    "quic4@",
    "quic6@",
)


def haproxy_targets(binds: Iterable[Bind]) -> tuple[list[WaitTarget], list[str]]:
    """The IPs to wait for from haproxy bind lines, and notes on what was passed over.

    Linear in the number of addresses: each IP is kept once, at its first bind line.
    """
    from jailshim.verify.network import WILDCARDS, WaitTarget, ip_literal

    targets: dict[str, WaitTarget] = {}
    notes: list[str] = []
    for bind in binds:
        for raw in bind.addresses or (bind.address,):
            text = raw
            for kind in ("stream+", "dgram+"):
                text = text.removeprefix(kind)
            if text.startswith(_NON_IP_PREFIXES) or text.startswith("/"):
                continue
            for prefix in _IP_PREFIXES:
                if text.startswith(prefix):
                    text = text[len(prefix) :]
                    break
            host = text[1 : text.find("]")] if text.startswith("[") else text.rsplit(":", 1)[0]
            if host in WILDCARDS:
                continue
            ip = ip_literal(text, has_port=True)
            if ip is None:
                notes.append(f"{bind.where}: {raw} is not an IP literal; not waited for")
                continue
            if ip in WILDCARDS or ip in targets:
                continue
            if bind.namespace:
                notes.append(
                    f"{bind.where}: {raw} is bound in network namespace {bind.namespace}; "
                    "not waited for"
                )
                continue
            targets[ip] = WaitTarget(ip, bind.where, bind.transparent)
    return list(targets.values()), notes


class HaproxyConfig(NamedTuple):
    files: tuple[str, ...]
    chroot: str | None = None
    user: str | None = None  # a name, or "+N" for a number (uid N)
    group: str | None = None  # a name, or "+N"; None: haproxy keeps the starting gid and groups
    log_sockets: tuple[str, ...] = ()
    binds: tuple[Bind, ...] = ()


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

if TYPE_CHECKING:
    Fail = Callable[[str], ConfigError]  # the sentence for the line being read


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
    reader = _Reader(dict(os.environ if env is None else env), facts, binary)
    for name, text in texts:
        reader.read_file(name, text)
    return reader.result(tuple(n for n, _ in texts))


class _Reader:
    """The state readcfgfile() carries from line to line and file to file."""

    def __init__(self, env: dict[str, str], facts: Facts | None, binary: str) -> None:
        self.env = env
        self.facts = facts  # asked of `binary` (haproxy -vv) at the first .if that needs them
        self.binary = binary
        self.section = ""
        self.section_name = ""
        self.chroot: str | None = None
        self.uid_name: str | None = None
        self.gid_name: str | None = None
        self.uid_set = self.gid_set = False
        self.sockets: dict[str, None] = {}
        self.binds: list[Bind] = []

    def read_file(self, name: str, text: str) -> None:
        conds: list[int] = []
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for number, raw in enumerate(lines, 1):

            def fail(why: str, number: int = number, name: str = name) -> ConfigError:
                return ConfigError(
                    f"haproxy configuration {name}:{number}: {why}; fix that line.",
                    file=name,
                    line=number,
                )

            if "\0" in raw:
                raise fail("a NUL character (haproxy stops at a stray NUL)")
            line = raw.lstrip(SPACE)
            if line.startswith("["):
                continue
            pseudo = {"LINE": str(number), "FILE": name, "SECTION": self.section_name}
            try:
                words = parse_line(line, self.env, pseudo)
            except ParseError as exc:
                raise fail(str(exc)) from None
            if words[0] and not self._conditional(words, conds, fail):
                self._line(words, f"{name}:{number}", conds, fail)
        if conds:
            raise ConfigError(
                f"haproxy configuration {name}:{len(lines)}: non-terminated '.if' block; "
                "add its .endif.",
                file=name,
                line=len(lines),
            )

    def _conditional(self, words: list[str], conds: list[int], fail: Fail) -> bool:
        """`.if/.elif/.else/.endif` (src/cfgcond.c): True when the line was one of them."""
        key = words[0]
        if key in (".if", ".elif"):
            self._if(key, words, conds, fail)
        elif key == ".else":
            if not conds:
                raise fail("lone '.else' with no matching '.if'")
            conds[-1] = _TAKE if conds[-1] == _DROP else _SKIP
        elif key == ".endif":
            if not conds:
                raise fail("lone '.endif' with no matching '.if'")
            conds.pop()
        else:
            return False
        return True

    def _if(self, key: str, words: list[str], conds: list[int], fail: Fail) -> None:
        expr = " ".join(words[1:]).rstrip(" ") if len(words) > 1 else ""
        if key == ".if":
            if any(c != _TAKE for c in conds):
                conds.append(_SKIP)
                return
        elif not conds:
            raise fail("lone '.elif' with no matching '.if'")
        elif conds[-1] != _DROP:
            conds[-1] = _SKIP
            return
        else:
            conds.pop()
            if any(c != _TAKE for c in conds):
                conds.append(_SKIP)
                return
        # Only a .if evaluated needs the expression parser and `haproxy -vv` of that binary:
        # a configuration without one pays for neither.
        from jailshim.daemons.haproxy.conditions import condition
        from jailshim.daemons.haproxy.facts import binary_facts

        if self.facts is None:
            self.facts = binary_facts(self.binary)
        try:
            taken = condition(expr, self.env, self.facts)
        except ParseError as exc:
            raise fail(f"{exc} in '{key}'") from None
        conds.append(_TAKE if taken else _DROP)

    def _line(self, words: list[str], where: str, conds: list[int], fail: Fail) -> None:
        """A line that is no .if directive: skipped when masked, else a section or keyword."""
        key = words[0]
        if any(c != _TAKE for c in conds) or key.startswith("."):
            return
        if key in ("no", "default"):
            words = [*words[1:], ""]
            key = words[0]
            if key not in ("log",):
                return
        if key in SECTIONS:
            self.section = key
            self.section_name = words[1] if len(words) > 1 and words[1] else key
            return
        arg1 = words[1] if len(words) > 1 else ""
        if self.section == "global":
            self._global(key, words, fail)
        if key == "log" and arg1:
            path = _log_socket(arg1, self.env)
            if path:
                self.sockets[path] = None
        elif arg1 and (
            (key == "bind" and self.section in _LISTENERS)
            or (key == "dgram-bind" and self.section == "log-forward")
        ):
            self.binds.append(_bind(words, where, self.env))

    def _global(self, key: str, words: list[str], fail: Fail) -> None:
        """cfg_parse_global() (src/cfgparse-global.c), for the keywords jailshim needs."""

        def arg(k: int) -> str:
            return words[k] if k < len(words) else ""

        if key in ("chroot", "user", "uid", "group", "gid") and arg(2):
            raise fail(f"`{key}` takes one value")
        if key == "chroot" and self.chroot is None:
            if not arg(1):
                raise fail("`chroot` needs a directory")
            self.chroot = arg(1)
        elif key in ("user", "uid") and not self.uid_set:
            self.uid_name, self.uid_set = _owner(key, arg(1), self.uid_name, fail)
        elif key in ("group", "gid") and not self.gid_set:
            self.gid_name, self.gid_set = _owner(key, arg(1), self.gid_name, fail)
        else:
            self._environment(key, words)

    def _environment(self, key: str, words: list[str]) -> None:
        """setenv/presetenv/unsetenv/resetenv: the variables later lines see."""

        def arg(k: int) -> str:
            return words[k] if k < len(words) else ""

        if key in ("setenv", "presetenv") and arg(1) and arg(2):
            if key == "setenv" or arg(1) not in self.env:
                self.env[arg(1)] = arg(2)
        elif key == "unsetenv":
            for var in words[1:]:
                if not var:
                    break
                self.env.pop(var, None)
        elif key == "resetenv":
            keep = set()
            for var in words[1:]:
                if not var:
                    break
                keep.add(var)
            self.env = {k: v for k, v in self.env.items() if k in keep}

    def result(self, files: tuple[str, ...]) -> HaproxyConfig:
        # user root / uid 0 (group root / gid 0): haproxy does not change its uid (gid)
        return HaproxyConfig(
            files=files,
            chroot=self.chroot,
            user=self.uid_name if self.uid_set else None,
            group=self.gid_name if self.gid_set else None,
            log_sockets=tuple(self.sockets),
            binds=tuple(self.binds),
        )


def _owner(key: str, value: str, before: str | None, fail: Fail) -> tuple[str | None, bool]:
    """`user NAME`/`uid N` (`group NAME`/`gid N`): the name or "+N" now kept, and whether it
    is set for good (a non-zero id; haproxy warns "already specified" at any later one)."""
    if key == "user":
        return value, _nonzero_user(value)
    if key == "group":
        return value, _nonzero_group(value)
    num = _strl2irc(value)
    if num is not None and num < 0:
        raise fail(f"`{key} {value}` is negative")
    if num:
        return f"+{num}", True
    return before, False


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
            # bytes, not universal newlines: haproxy splits on \n only (fgets), a \r is the
            # line's business
            data = read_file(path, CONFIG_MAX)
            texts.append((path, data.decode("utf-8", errors="surrogateescape")))
        except OSError as exc:
            raise unreadable(path, exc) from None
    return parse_config(texts, env, facts, binary)


def identity_as_set(identity: Identity, *, group_given: bool) -> Identity:
    """The identity haproxy 2.6 really runs with (set_identity(), src/haproxy.c): with a
    group it calls setgroups(0) then setgid, so no supplementary groups; without one it never
    touches the gid, so it keeps the starting gid and groups (jailshim's own: root's)."""
    if group_given:
        return identity._replace(groups=())
    return identity._replace(gid=os.getgid(), groups=tuple(sorted(set(os.getgroups()))))


def jail_of(chroot: str, cwd: str, change_dir: str | None, version: str) -> str:
    """PURE: the directory haproxy really chroots to. chroot(global.chroot) is called in main()
    (src/haproxy.c) from haproxy's current directory: the one it started in, or -C DIR, which
    init() chdir()s to before reading the configuration and, up to 3.1, never leaves; 3.2
    (commit e900ef987) goes back to the starting directory after check_config_validity()."""
    if chroot.startswith("/"):
        return chroot
    base = cwd
    if change_dir is not None:
        from jailshim.daemons.haproxy.facts import version_key

        if version_key(version) < (3, 2):
            base = os.path.join(cwd, change_dir)
    return os.path.join(base, chroot)
