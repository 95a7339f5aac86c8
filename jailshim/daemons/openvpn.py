"""openvpn: its jail, user and group from its argv and config files, read as options.c reads them.

OpenVPN 2.6 (src/openvpn/options.c, release/2.6). parse_argv: a lone word is `--config WORD`;
otherwise every option starts with "--" and takes the words after it up to the next "--…"
(MAX_PARMS 16). read_config_file reads a file in fgets() chunks of OPTION_LINE_SIZE (256) and
parse_line splits each: a token starting with `#` or `;` ends the line, "…" and '…' quote,
a backslash escapes `\\`, `"` and blanks (any other use is "Bad backslash"), a leading "--" is
dropped; a line that is one `<tag>` starts an inline file ending at a line starting with
`</tag>` (check_inline_file); `config FILE` includes (10 levels). add_option acts at once for
some options: `cd DIR` chdir()s while parsing (so every relative path after it, the jail's
too, is from DIR: "cd to '…' failed"), `log`/`log-append` open their file and send stdout and
stderr there (error.c redirect_stdout_stderr: host paths, the first one wins), `daemon` and
`syslog` openlog() without LOG_NDELAY (error.c open_syslog; ignored once a log file is set).

When (init.c): the user and group are looked up with getpwnam()/getgrnam() before anything
(do_init_first_time: the host's files); init_instance opens the tun device, the status and
ifconfig-pool-persist files and the socket, and only then do_uid_gid_chroot() chroot()s (to
the directory as the last `cd` left it, then chdir "/") and changes ids (platform.c
platform_user_group_set: with libcap-ng, as Debian builds it, capng_change_id() drops every
supplementary group and keeps CAP_NET_ADMIN; --user alone keeps gid 0). A client
(`client`/`pull`/`up-delay`) waits for "Initialization Sequence Completed". Read inside the
jail: `crl-verify` (ssl.c init_ssl reads JAIL/FILE at start, and re-reads FILE before each
TLS negotiation), `client-config-dir`, `tmp-dir` (default $TMPDIR or /tmp: openvpn refuses to
start if the jail has none — options_postprocess_filechecks checks it under the chroot), the
scripts run after the chroot (client-connect, learn-address, tls-verify…), the syslog socket
(reconnected there when syslogd restarts), and on SIGHUP its whole argv again, from the
jail's / (a `--cd DIR` or config the jail lacks is then fatal: seen, the server exits); without
`persist-key` a SIGUSR1 restart (keepalive's ping-restart) re-reads the keys there, without
`persist-tun` it reopens the tun device as the user. sd_notify's READY=1 is sent before the
chroot (init.c context_init_1): no notify socket is needed inside.

OpenVPN has no --config-test. jailshim's dry check is openvpn itself over the same argv with
`--log-append /dev/stderr` first (the config's own log files are left alone, and no syslog) and
`--replay-persist /dev/null/…` last: it parses everything, loads plugins, runs
options_postprocess (mutate, verify, file checks — the jail's crl/ccd/tmp among them) and
stops there, at that one impossible file check ("Please correct these errors."), before it
daemonizes, writes a pid file, opens a device or binds. Any other "Options error" is the
config's, in openvpn's words. (A --replay-persist of the config is not checked then.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from jailshim.daemons import Adapter, DaemonPlan, checkconf, read_regular
from jailshim.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from jailshim.spec import Identity

__all__ = ["ADAPTER", "Read", "identity_as_set", "parse_line", "read_options"]

MAX_PARMS = 16  # options.h: words per option
OPTION_LINE_SIZE = 256  # options.h: fgets() reads at most this many characters at once
MAX_INCLUDE_LEVELS = 10  # options.c read_config_file: max_recursive_levels
# the dry check's last option: a file check that always fails (/dev/null is no directory)
STOP_PATH = "/dev/null/jailshim-stops-here"
STOP_LINE = f"Options error: --replay-persist fails with '{STOP_PATH}'"
CORRECT_THESE = "Options error: Please correct these errors."
# options.c set_user_script(…, in_chroot=true): scripts run from inside the jail
JAILED_SCRIPTS = (
    "ipchange",
    "route-pre-down",
    "auth-user-pass-verify",
    "client-connect",
    "client-crresponse",
    "client-disconnect",
    "learn-address",
    "tls-verify",
)


_BLANK = "\0 \t\n\v\f\r"  # options.c space(): NUL or C isspace()
_ESCAPABLE = '\\"' + _BLANK  # what a backslash may escape


def _quoted(words: str) -> ConfigError:
    return ConfigError(f"openvpn would refuse to start: {words!r}; fix that line.")


def _step(state: str, ch: str, backslash: bool) -> tuple[str, str, bool]:
    """One character of parse_line's state machine: (next state, character kept or "", word
    done). A comment is state "comment"."""
    blank = ch in _BLANK
    if state == "initial":
        if blank:
            return state, "", False
        if ch in ";#":
            return "comment", "", False  # a comment, only where a word starts
        if not backslash and ch in "\"'":
            return ("quoted" if ch == '"' else "squoted"), "", False
        return "unquoted", ch, False
    closes = (
        (state == "unquoted" and not backslash and blank)
        or (state == "quoted" and not backslash and ch == '"')
        or (state == "squoted" and ch == "'")
    )
    return ("initial", "", True) if closes else (state, ch, False)


def parse_line(line: str, file: str, line_num: int) -> list[str]:
    """The words of one line as options.c parse_line splits them (its errors are its words)."""
    words: list[str] = []
    state = "initial"  # initial, unquoted, quoted ("), squoted (')
    backslash = False
    parm: list[str] = []
    for ch in [*line, "\0"]:
        if not backslash and ch == "\\" and state != "squoted":
            backslash = True
            continue
        state, out, done = _step(state, ch, backslash)
        if state == "comment":
            state = "initial"
            break
        if done:
            words.append("".join(parm))
            parm = []
        if backslash and out and out not in _ESCAPABLE:
            raise _quoted(f"Options warning: Bad backslash ('\\') usage in {file}:{line_num}")
        backslash = False
        if out and out != "\0":  # NUL only ends a word
            parm.append(out)
        if ch == "\0":
            break
    if state == "quoted":
        raise _quoted(f'Options error: No closing quotation (") in {file}:{line_num}')
    if state == "squoted":
        raise _quoted(f"Options error: No closing single quotation (') in {file}:{line_num}")
    return words[:MAX_PARMS]


def _chunks(text: str) -> list[str]:
    """The pieces fgets(line, OPTION_LINE_SIZE + 1) returns: a line (ended by "\n" only, not
    by the other line breaks str.splitlines knows), or 256 characters of one (which openvpn
    refuses: seen, 2.6.14)."""
    lines = [f"{line}\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]  # the text after the last newline has none
    return [
        line[at : at + OPTION_LINE_SIZE]
        for line in lines
        if line
        for at in range(0, len(line), OPTION_LINE_SIZE)
    ]


class Read(NamedTuple):
    """What openvpn's options say about its jail (the last value of each wins)."""

    values: dict[str, list[str]]  # option -> its words after the name, last one read
    order: list[str]  # option names in the order read (syslog against log)
    cwd: str  # the directory after the last `cd`: where chroot() starts from
    files: list[str]  # config files read
    # ("cd" or "config", its word as written), in order: a SIGHUP re-reads them in the jail
    reparsed: list[tuple[str, str]]
    locals_: list[tuple[str, str]]  # (address, where) of every `local`


class _Reader:
    def __init__(self, cwd: str) -> None:
        self.read = Read({}, [], cwd, [], [], [])

    def path(self, path: str) -> str:
        return path if path.startswith("/") else os.path.normpath(os.path.join(self.read.cwd, path))

    def option(self, p: list[str], where: str, level: int, inline: str | None = None) -> None:
        if p and p[0] == "setenv" and p[1:2] == ["opt"]:
            p = p[2:]  # "setenv opt NAME …": the option NAME, ignored if unknown
        if not p:
            return
        name, args = p[0], p[1:]
        if name == "config" and len(args) == 1:
            self.read.reparsed.append(("config", args[0]))
            self.config(args[0] if args[0] == "stdin" else self.path(args[0]), where, level)
            return
        if name == "cd" and len(args) == 1:
            target = self.path(args[0])
            if not os.path.isdir(target):
                raise ConfigError(f"openvpn would exit: \"cd to '{args[0]}' failed\" ({where}).")
            self.read = self.read._replace(cwd=target)
            self.read.reparsed.append(("cd", args[0]))
        if name == "local" and len(args) == 1:
            self.read.locals_.append((args[0], where))
        if name == "connection" and inline is not None:
            for number, text in enumerate(inline.split("\n"), 1):
                sub = parse_line(text, "[CONNECTION-OPTIONS]", number)
                if sub and sub[0] in ("local", "port", "lport", "proto"):
                    self.option([sub[0].removeprefix("--"), *sub[1:]], where, level)
            return
        self.read.values[name] = args if inline is None else ["[inline]"]
        self.read.order.append(name)

    def config(self, file: str, where: str, level: int) -> None:
        level += 1
        if level > MAX_INCLUDE_LEVELS:
            raise ConfigError(
                f'openvpn would refuse to start: "In {where}: Maximum recursive include levels '
                f'exceeded in include attempt of file {file}"; a config includes itself.'
            )
        if file == "stdin":
            raise UsageError(
                "openvpn reads `config stdin` from its standard input, which jailshim cannot "
                "read before it; give openvpn its config file."
            )
        data = read_regular(file, 16 << 20)  # never a FIFO's open() (it held jailshim for ever)
        if data is None:
            raise ConfigError(
                f'openvpn would refuse to start: "In {where}: Error opening configuration '
                f'file: {file}".'
            )
        text = data.decode(errors="replace")
        self.read.files.append(file)
        pieces = _chunks(text.removeprefix("\ufeff"))
        number = 0
        while number < len(pieces):
            line = pieces[number]
            number += 1
            if len(line) == OPTION_LINE_SIZE:  # fgets filled the buffer: a fatal error
                raise ConfigError(
                    f'openvpn would refuse to start: "In {file}:{number}: Maximum option line '
                    f'length ({OPTION_LINE_SIZE}) exceeded"; shorten that line.'
                )
            p = parse_line(line, file, number)
            if not p:
                continue
            p[0] = p[0][2:] if len(p[0]) >= 3 and p[0].startswith("--") else p[0]
            where, inline = f"{file}:{number}", None
            if len(p) == 1 and len(p[0]) > 1 and p[0][0] == "<" and p[0][-1] == ">":
                p[0] = p[0][1:-1]  # check_inline_file: <tag> … </tag>
                close, body = f"</{p[0]}>", []
                while number < len(pieces) and not pieces[number].lstrip(_BLANK).startswith(close):
                    body.append(pieces[number])
                    number += 1
                if number >= len(pieces):
                    raise ConfigError(
                        f'openvpn would refuse to start: "ERROR: Endtag {close} missing" ({file}).'
                    )
                number += 1
                inline = "".join(body)
            self.option(p, where, level, inline)


def argv_words(argv: Sequence[str]) -> list[list[str]]:
    """Each option on openvpn's command line with its words, as parse_argv groups them."""
    if len(argv) == 2 and not argv[1].startswith("--"):
        return [["config", argv[1]]]
    options: list[list[str]] = []
    i = 1
    while i < len(argv):
        word = argv[i]
        if not word.startswith("--"):
            raise UsageError(
                f'openvpn would refuse to start: "I\'m trying to parse \\"{word}\\" as an '
                "--option parameter but I don't see a leading '--'\"; fix COMMAND."
            )
        p = [word[2:]]
        i += 1
        while i < len(argv) and len(p) < MAX_PARMS and not argv[i].startswith("--"):
            p.append(argv[i])
            i += 1
        options.append(p)
    return options


def read_options(argv: Sequence[str], cwd: str | None = None) -> Read:
    """openvpn's argv and every config file it names, read as options.c reads them."""
    reader = _Reader(cwd or os.getcwd())
    for p in argv_words(argv):
        reader.option(p, "[CMD-LINE]:1", 0)
    return reader.read


def _last(read: Read, name: str, arity: int = 1) -> str | None:
    """The option's value when its last occurrence had the arity add_option wants."""
    args = read.values.get(name)
    return args[0] if args is not None and len(args) == arity else None


def _log_of(read: Read) -> str:
    """Where openvpn's messages go: a log file (the first one wins; syslog then unused),
    syslog (daemon or syslog), or standard output."""
    for name in read.order:
        if name in ("log", "log-append"):
            return f"file {read.values[name][0]}" if read.values[name] else "stdout"
    if "daemon" in read.values or "syslog" in read.values:
        return "syslog"
    return "stdout"


def identity_as_set(identity: Identity, *, group_given: bool) -> Identity:
    """The uid, gid and groups openvpn really runs with. Debian's build links libcap-ng, so
    platform_user_group_set() changes ids with capng_change_id(uid, gid, CAPNG_DROP_SUPP_GRP)
    keeping CAP_NET_ADMIN: no supplementary groups at all, and without --group the gid it
    started with (a build without libcap-ng would setgroups() to the one --group instead)."""
    if group_given:
        return identity._replace(groups=())
    return identity._replace(gid=os.getgid(), groups=())


def _sighup_note(read: Read, jail: str) -> str:
    """A SIGHUP re-parses argv after the chroot, from the jail's / (platform_chroot chdir()s
    there): each `cd` and `config` is looked for inside the jail, and one missing is fatal
    ("cd to '…' failed", seen: the server exits)."""
    cwd, seen, missing = "/", [], []
    for kind, word in read.reparsed:
        named = os.path.normpath(os.path.join(cwd, word))
        path = os.path.join(jail, named.lstrip("/"))
        seen.append(path)
        if kind == "cd":
            cwd = named
        if not (os.path.isdir(path) if kind == "cd" else os.path.isfile(path)):
            missing.append(path)
    if missing:
        return (
            "on SIGHUP openvpn re-reads its options inside the jail, which lacks "
            f"{', '.join(missing)}: a SIGHUP would stop it (use SIGUSR1 to restart it)"
        )
    return f"on SIGHUP openvpn re-reads its options inside the jail: {', '.join(seen)}"


def _jail_notes(read: Read, jail: str, env: Mapping[str, str]) -> list[str]:
    """What openvpn reads from inside its jail later, each one said."""

    def inside(path: str) -> str:
        return os.path.normpath(os.path.join(jail, path.lstrip("/")))

    notes = [_sighup_note(read, jail)]
    crl = read.values.get("crl-verify")
    if crl and crl[0] != "[inline]":
        notes.append(f"crl-verify is re-read inside the jail as clients connect: {inside(crl[0])}")
    ccd = _last(read, "client-config-dir")
    if ccd:
        notes.append(f"client-config-dir is read inside the jail: {inside(ccd)}")
    tmp = _last(read, "tmp-dir") or env.get("TMPDIR") or "/tmp"  # options.c init_options
    notes.append(f"openvpn wants its tmp-dir inside the jail: {inside(tmp)}")
    for script in JAILED_SCRIPTS:
        args = read.values.get(script)
        if args and args[0] not in ("[inline]",):
            command = args[0].split()[0] if args[0].split() else args[0]
            notes.append(f"{script} runs inside the jail: {inside(command)}")
    if "persist-key" not in read.values:
        notes.append(
            "no persist-key: a SIGUSR1 restart (ping-restart) re-reads the keys inside the jail"
        )
    if "persist-tun" not in read.values and ("user" in read.values or "group" in read.values):
        notes.append(
            "no persist-tun: a SIGUSR1 restart reopens the tun device as the user and fails"
        )
    if {"client", "pull", "up-delay"} & read.values.keys():
        notes.append(
            "client/pull/up-delay: openvpn chroots after Initialization Sequence Completed"
        )
    return notes


class _Openvpn(Adapter):
    """openvpn: chroot, user and group from its argv and configs; openvpn itself checks."""

    name = "openvpn"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        from jailshim.daemons import ip_wait_targets

        read = read_options(argv)
        chroot = _last(read, "chroot")
        jail = os.path.normpath(os.path.join(read.cwd, chroot)) if chroot else None
        log = _log_of(read)
        targets, notes = ip_wait_targets(
            (address, f"{where}: local", f"{where}: local {address}")
            for address, where in read.locals_
        )
        facts = [
            ("cd", read.cwd),
            ("port", _last(read, "lport") or _last(read, "port") or "1194"),
            ("proto", _last(read, "proto") or "udp"),
            ("log", log),
            ("persist_tun", "yes" if "persist-tun" in read.values else "no"),
            ("persist_key", "yes" if "persist-key" in read.values else "no"),
        ]
        return DaemonPlan(
            files=tuple(read.files) or ("openvpn argv",),
            chroot=jail,
            user=_last(read, "user"),
            group=_last(read, "group"),
            sockets=("/dev/log",) if jail and log == "syslog" else (),
            wait_targets=targets,
            notes=(*notes, *(_jail_notes(read, jail, env) if jail else ())),
            read=tuple(facts),
        )

    def check_config(self, argv: Sequence[str]) -> None:
        options = [["--" + p[0], *p[1:]] for p in argv_words(argv)]
        check = [
            argv[0],
            "--log-append",
            "/dev/stderr",
            *(word for p in options for word in p),
            "--replay-persist",
            STOP_PATH,
        ]
        code, output = checkconf.run(check, "openvpn")
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("Options error:")]
        theirs = [ln for ln in errors if not ln.startswith(STOP_LINE) and ln != CORRECT_THESE]
        if any(ln.startswith(STOP_LINE) for ln in errors) and not theirs:
            return
        words = " | ".join(theirs or lines[-3:]) or f"exit status {code}"
        raise ConfigError(
            f"openvpn rejected its configuration (`{' '.join(argv)}`, run up to its option "
            f"checks, exit {code}): {words}",
            openvpn_output=lines[-20:],
        )

    def identity(self, identity: Identity, config: DaemonPlan, *, group_given: bool) -> Identity:
        return identity_as_set(identity, group_given=group_given)


ADAPTER = _Openvpn()
