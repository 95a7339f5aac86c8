"""ntpsec's ntpd: its jail (`-i`) and user (`-u user[:group]`) from its argv, its files from
ntp.conf as ntpsec's scanner reads it. ntpd has no checker: jailshim reads the config.

Argv (ntpd/ntpd.c, 1.2.2, ALL_OPTIONS and longoptions; libntp/getopt.c ntp_getopt_long):
short options combine, a value is the rest of the word or the next one; a long option is any
prefix of one name (`--jail`), several matches are an error, `--name=value`; options end at
the first word that is no option (no permutation) or at `--`, and the words left are servers
("cmdline_servers"). `-c` (the last one wins; Debian's build reads /etc/ntpsec/ntp.conf
without one), `-i/--jaildir`, `-u/--user user[:group]` (split at the last ':'; a second -u is
"ERROR: more than one -u given."), `-I/--interface`, `-L`, `-l/--logfile`. An unknown option
or a missing value: "Unknown command line switch or missing argument." Note the long name
of -f is spelled "driftile" in ntpd.c.

Order of a start (ntpd.c main, built without ENABLE_EARLY_DROPROOT; ntpd/ntp_sandbox.c
sandbox()): openlog(LOG_NDELAY) and -l's log file, -p's pid file, then readconfig() (the file,
then the ntp.d directory beside it, *.conf in order; `includefile` relative to the including
file's directory, a directory meaning its *.conf): the drift file is READ, the leap file, keys
and `logfile` are opened here, all at their host paths (nts_init makes the NTS-KE listening
sockets, not the certificate); then sandbox(): getpwnam/getgrnam in the HOST's passwd and group
(no jail etc/passwd needed), chdir(jail), chroot(jail), chdir("/"), initgroups(user, gid) and,
with a group, setgroups(1, [gid]) (so a group given means that group alone), setuid, and the
capabilities cut to cap_sys_nice,cap_sys_time (which is why a bounding set without CAP_SYS_TIME
makes it exit "cap_set_proc() failed to drop root privs"). After the chroot, inside the jail:
an NTS server's certificate and key are loaded (nts.c nts_init2 → nts_server.c nts_server_init2
→ nts_load_certificate, as the user; `nts cert`/`nts key`, Debian's defaults
/etc/ntpsec/cert-chain.pem and /etc/ntpsec/key.pem; missing: "NTSs: can't stat certificate
(chain) from …" then "NTS: troubles during init2. Bailing." and exit 1, refused here first) and
re-checked hourly and on SIGHUP; the drift file is rewritten (ntp_util.c drift_write: PATH-tmp
then rename), statistics files under statsdir (default /var/log/ntpsec/; "statistics directory
… does not exist or is unwriteable" is logged at start), the leap file is re-read
(check_leap_file), the NTS cookie keys are read and rewritten (nts_cookie_init2; `nts cookie`,
default /var/lib/ntpsec/nts-keys), server/pool/peer names are resolved by getaddrinfo in a
thread (ntp_dns.c; etc/resolv.conf, etc/hosts, etc/nsswitch.conf), an NTS client's own `ca`
file is loaded at its NTS-KE (nts_client.c), and syslog reconnects to /dev/log when its
connection breaks. The DNS thread ends with pthread_exit() (ntp_dns.c dns_lookup; NTS-KE runs
there too), for which glibc dlopen()s libgcc_s.so.1 (misc/unwind-link.c) — in the jail, where
no ld.so.cache answers and the loader searches its system directories (loader_dirs): without it
ntpd aborts at its first lookup ("libgcc_s.so.1 must be installed for pthread_exit to work",
seen with Debian's pools). So when ntpd has names to resolve, the host's copy is placed in the
jail at its own path (/lib/TRIPLET/, the loader's first directory), unless the jail has one
where the loader finds it; refused only when the host has none either. localtime is
read once, at the first log line, before the chroot (libntp/msyslog.c localtime_r: glibc reads
the zone on the first call only), so the jail needs no etc/localtime.

The config's scanner (ntp_scanner.c yylex): whitespace separates words, `#` starts a comment
to the end of the line, "…" is one word, a line is one command; `end` stops all parsing.
ntpd does not stop at errors: a line whose first word is no command is logged ("CONFIG:
syntax error in FILE line N, column C") and ignored, an includefile it cannot open is logged
("CONFIG: Couldn't open <PATH>") and skipped, a missing -c file leaves it running on its
defaults. jailshim refuses each of those (78, in ntpd's words): a `restrict` line ntpd ignored
is an ntpd open to everyone. interface/nic rules with -I or -L make it exit (ntp_config.c
config_nic_rules), refused the same way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from jailshim.daemons import Adapter, DaemonPlan, read_regular
from jailshim.daemons.getopt import getopt_long, last
from jailshim.errors import ConfigError, UsageError
from jailshim.files import readable_by_all

if TYPE_CHECKING:
    from jailshim.spec import Identity, WaitTarget

__all__ = ["ADAPTER", "NtpConfig", "argv_options", "read_config", "words_of"]

# Debian's build (the paths `strings /usr/sbin/ntpd` shows; upstream's differ)
DEFAULT_CONFIG = "/etc/ntpsec/ntp.conf"
DEFAULT_STATSDIR = "/var/log/ntpsec/"
DEFAULT_COOKIE_KEYS = "/var/lib/ntpsec/nts-keys"
DEFAULT_NTS_CERT = "/etc/ntpsec/cert-chain.pem"
DEFAULT_NTS_KEY = "/etc/ntpsec/key.pem"
CONFIG_DIR = "ntp.d"  # include/ntp_config.h: beside the config file
MAX_INCLUDE_LEVEL = 5  # include/ntp_config.h MAXINCLUDELEVEL
_MAX_CONFIG = 1 << 20

_SHORT = "46abc:dD:f:gGhi:I:k:l:LmnNp:P:qr:Rs:t:u:U:Vw:xzZ"  # ntpd.c ALL_OPTIONS
_LONG = {  # ntpd.c longoptions: name -> (letter, takes a value); "driftile" sic
    "ipv4": ("4", False),
    "ipv6": ("6", False),
    "assert": ("a", False),
    "configfile": ("c", True),
    "debug": ("d", False),
    "set-debug-level": ("D", True),
    "driftile": ("f", True),
    "panicgate": ("g", False),
    "help": ("h", False),
    "jaildir": ("i", True),
    "interface": ("I", True),
    "keyfile": ("k", True),
    "logfile": ("l", True),
    "mdns": ("m", False),
    "novirtualips": ("L", False),
    "nofork": ("n", False),
    "nice": ("N", False),
    "pidfile": ("p", True),
    "priority": ("P", True),
    "quit": ("q", False),
    "dumpopts": ("R", False),
    "statsdir": ("s", True),
    "trustedkey": ("t", True),
    "user": ("u", True),
    "updateinterval": ("U", True),
    "var": ("z", True),
    "dvar": ("Z", True),
    "slew": ("x", False),
    "version": ("V", False),
}
_BAD_SWITCH = "Unknown command line switch or missing argument."

# ntp_parser.y `command`: the first word of every command ntpd knows (keyword-gen.c spellings)
COMMANDS = frozenset(
    (  # noqa: SIM905 (one table, as keyword-gen.c lists them)
        "server pool peer unpeer unconfig restrict unrestrict limit mru controlkey keys "
        "ntpsigndsocket requestkey trustedkey fudge refclock interface nic driftfile end "
        "includefile logconfig phone setvar dscp nonvolatile tick leapfile leapsmearinterval "
        "logfile pidfile saveconfigdir filegen statistics statsdir nts tos reset rlimit "
        "disable enable tinker mdnstries"
    ).split()
)


def _refused(word: str, why: str) -> UsageError:
    return UsageError(
        f'ntpd would refuse to start ("{_BAD_SWITCH}"): its option {word} {why}; fix COMMAND '
        "(`ntpd --help` lists its options)."
    )


def argv_options(argv: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Each option letter's values as ntp_getopt_long reads ntpd's argv, and the words after
    the options (servers on the command line): no permutation — the first word that is no
    option ends them, as `--` does; libntp/getopt.c takes the text before `=` as a prefix of
    exactly one name (an exact name that is also another's prefix counts twice: refused as
    ntpd refuses it)."""
    parsed = getopt_long(argv, _SHORT, _LONG, _refused, permute=False, exact_wins=False)
    return parsed.options, parsed.operands


def words_of(line: str) -> list[tuple[int, str]]:
    """The words of one config line as ntp_scanner.c's yylex splits them, each with its
    column (0-based, as ntpd reports it): whitespace between words, "…" one word (to the end
    of the line if unclosed), `#` the rest of the line a comment."""
    found: list[tuple[int, str]] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        if line[i] == "#":
            break
        start, text = i, []
        while i < n and not line[i].isspace() and line[i] not in '"#':
            text.append(line[i])
            i += 1
        if i < n and line[i] == '"':
            i += 1
            while i < n and line[i] != '"':
                text.append(line[i])
                i += 1
            i += 1  # the closing quote
        if text:
            found.append((start, "".join(text)))
        if i < n and line[i] == "#":
            break
    return found


class Line(NamedTuple):
    """One command of the config: where it is and its words."""

    path: str
    number: int
    words: tuple[str, ...]


class NtpConfig(NamedTuple):
    """What ntpd reads from its config files, the last setting winning."""

    files: tuple[str, ...]
    lines: tuple[Line, ...]

    def last(self, command: str) -> Line | None:
        for line in reversed(self.lines):
            if line.words[0] == command:
                return line
        return None

    def all(self, *commands: str) -> Iterator[Line]:
        return (line for line in self.lines if line.words[0] in commands)

    def value(self, command: str) -> str:
        line = self.last(command)
        return line.words[1] if line is not None and len(line.words) > 1 else ""


def _open_text(path: str) -> str | None:
    """A regular file's text (None if it cannot be opened); never blocks on a FIFO."""
    data = read_regular(path, _MAX_CONFIG)
    return None if data is None else data.decode(errors="replace")


def _conf_files(directory: str) -> list[str]:
    """lex_push_file on a directory: its *.conf entries in name order (subdirectories too)."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".conf"))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names]


class _Reader:
    def __init__(self) -> None:
        self.files: list[str] = []
        self.lines: list[Line] = []
        self.ended = False

    def push(self, path: str, level: int) -> bool:
        """Parse ``path`` (a file, or a directory's *.conf); False if nothing was opened."""
        if os.path.isdir(path):
            opened = False
            for entry in _conf_files(path):
                opened = self.push(entry, level) or opened
            return opened
        text = _open_text(path)
        if text is None:
            return False
        self.files.append(path)
        for number, raw in enumerate(text.split("\n"), start=1):
            if self.ended:
                break
            self._command(path, number, raw, level)
        return True

    def _command(self, path: str, number: int, raw: str, level: int) -> None:
        words = words_of(raw)
        if not words:
            return
        column, first = words[0]
        if first not in COMMANDS:
            # a word of a file not everyone may read is not quoted: `includefile /etc/shadow`
            # put root's hash in this sentence, in a log the config's author reads (ntpd
            # itself logs only file, line and column)
            shown = f"{first!r}" if readable_by_all(path) else "its first word"
            raise ConfigError(
                f"ntpd would ignore line {number} of {path} ({shown} is no ntpd command) "
                f'and log "CONFIG: syntax error in {path} line {number}, column {column}"; '
                "fix the line (a `restrict` ntpd ignored would open it to everyone)."
            )
        line = Line(path, number, tuple(w for _, w in words))
        if first == "end":
            self.ended = True
            return
        if first == "includefile" and len(line.words) > 1:
            self._include(path, number, line.words[1], level)
            return
        self.lines.append(line)

    def _include(self, path: str, number: int, named: str, level: int) -> None:
        if level + 1 > MAX_INCLUDE_LEVEL:
            raise ConfigError(
                f'ntpd would log "CONFIG: Maximum include file level exceeded." at line '
                f"{number} of {path} and skip {named}; include fewer levels deep."
            )
        # reparent(): relative to the including file's directory, not the start directory
        full = named if named.startswith("/") else os.path.join(os.path.dirname(path), named)
        if not self.push(full, level + 1):
            raise ConfigError(
                f'ntpd would log "CONFIG: Couldn\'t open <{named}>" (line {number} of {path}) '
                f"and run without it; {full} cannot be read."
            )


def read_config(path: str) -> NtpConfig:
    """readconfig(): the file, then the ntp.d directory beside it."""
    reader = _Reader()
    if not reader.push(path, 1) and not os.path.isdir(path):
        raise ConfigError(
            f"ntpd would run without its configuration: {path} cannot be read (it logs "
            f"\"CONFIG: failed to open '{path}'\" and starts on its defaults, which restrict "
            "nobody); give -c a readable file."
        )
    directory = os.path.join(os.path.dirname(path), CONFIG_DIR)
    if not reader.ended and os.path.isdir(directory):
        reader.push(directory, 1)
    return NtpConfig(tuple(reader.files), tuple(reader.lines))


def _jail_of(chroot: str) -> str:
    """sandbox() does chdir(jail) then chroot(jail) from ntpd's start directory (jailshim's)."""
    return os.path.normpath(chroot if chroot.startswith("/") else os.path.join(os.getcwd(), chroot))


def _address_of(words: Sequence[str]) -> str:
    """server/pool/peer's address: the word after it, or after -4/-6 (address_fam)."""
    rest = list(words[1:])
    if rest and rest[0] in ("-4", "-6"):
        rest = rest[1:]
    return rest[0] if rest else ""


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _in_jail(jail: str, path: str) -> str:
    return os.path.normpath(jail + "/" + path)


class _Ntpd(Adapter):
    """ntpd: -i/-u from its argv, its files and names from ntp.conf; no checker of its own."""

    name = "ntpd"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        options, servers = argv_options(argv)
        if len(options.get("u", [])) > 1:
            raise UsageError(
                'ntpd would refuse to start: "ERROR: more than one -u given."; give -u once.'
            )
        config_path = last(options, "c", DEFAULT_CONFIG)
        config = read_config(config_path)
        user, colon, group = last(options, "u").rpartition(":")  # strrchr(user, ':')
        if not colon:
            user, group = group, ""
        chroot = last(options, "i")
        jail = _jail_of(chroot) if chroot else None
        nic_rules = list(config.all("interface", "nic"))
        if nic_rules and ("I" in options or "L" in options):
            rule = nic_rules[0]
            raise ConfigError(
                'ntpd would exit: "CONFIG: interface/nic rules are not allowed with '
                '--interface (-I) or --novirtualips (-L), exiting" (line '
                f"{rule.number} of {rule.path}); use one or the other."
            )
        notes: list[str] = []
        read: list[tuple[str, str]] = [("config", ", ".join(config.files))]
        names = [_address_of(x.words) for x in config.all("server", "pool", "peer")] + servers
        lookups = sorted({a for a in names if a and not _is_ip(a)})
        nts_clients = [x for x in config.all("server", "pool", "peer") if "nts" in x.words[2:]]
        logfile = last(options, "l") or config.value("logfile")
        drift = last(options, "f") or config.value("driftfile")
        statsdir = last(options, "s") or config.value("statsdir") or DEFAULT_STATSDIR
        leapfile = config.value("leapfile")
        nts_server = any("enable" in x.words[1:] for x in config.all("nts"))
        cookie = _nts_value(config, "cookie") or DEFAULT_COOKIE_KEYS
        for fact, value in (
            ("driftfile", drift),
            ("statsdir", statsdir),
            ("leapfile", leapfile),
            ("logfile", logfile),
            ("resolves", " ".join(lookups)),
        ):
            if value:
                read.append((fact, value))
        unwinder: tuple[str, ...] = ()
        if jail and (lookups or nts_clients):
            unwinder = _unwinder_for_jail(jail, lookups or [x.words[1] for x in nts_clients])
            if unwinder:
                read.append(("jail_files", ", ".join(unwinder)))
        if jail and nts_server:
            _nts_files_in_jail(jail, config, user, group)
        if jail:
            notes += _jail_notes(jail, drift, statsdir, leapfile, config)
            if nts_server:
                notes.append(
                    f"ntpd's NTS cookie keys ({cookie}) are read and rewritten after its "
                    f"chroot: {_in_jail(jail, cookie)} (its directory must be writable by "
                    "its user)"
                )
            if nts_clients:
                notes.append(
                    "an NTS server line's NTS-KE runs after the chroot: its `ca` file (or "
                    "OpenSSL's default certificates) is read inside the jail"
                )
        return DaemonPlan(
            files=config.files,
            chroot=jail,
            user=_user_word(user) if user else None,
            group=_user_word(group) if group else None,
            sockets=() if logfile else ("/dev/log",),
            wait_targets=_wait_targets(options, config, notes),
            notes=tuple(notes),
            read=tuple(read),
            file_sets=("resolver",) if lookups or nts_clients else (),
            jail_files=unwinder,
        )

    def identity(self, identity: Identity, config: DaemonPlan, *, group_given: bool) -> Identity:
        # ntp_sandbox.c: initgroups(user, gid), then with a group setgroups(1, &gid)
        if config.group is not None:
            return identity._replace(groups=(identity.gid,))
        return identity


def _nts_files_in_jail(jail: str, config: NtpConfig, user: str, group: str) -> None:
    """nts_server_init2 loads the certificate and key after the chroot, as ntpd's user: both
    must be in the jail at their configured paths and readable by that user, or ntpd exits
    ("troubles during init2"; seen with a root-only key: "NTSs: can't load private key")."""
    for what, path in (
        ("certificate", _nts_value(config, "cert") or DEFAULT_NTS_CERT),
        ("key", _nts_value(config, "key") or DEFAULT_NTS_KEY),
    ):
        inside = _in_jail(jail, path)
        if not (os.path.isfile(inside) and _stays_in(jail, inside)):
            raise ConfigError(
                f"ntpd loads its NTS {what} {path} after its chroot (nts_init2), from "
                f"{inside}, which does not exist: it would log \"NTSs: can't stat certificate "
                '(chain) from …" or fail to load it, then "NTS: troubles during init2.  '
                f"Bailing.\" and exit. Copy {path} there, readable by ntpd's user.",
                chroot=jail,
            )
        if user and not _readable_by(inside, user, group):
            raise ConfigError(
                f"ntpd loads its NTS {what} {path} after its chroot as {user} (nts_init2), "
                f"and {inside} is not readable by {user}: it would log \"NTSs: can't load … "
                f'from {path}", then "NTS: troubles during init2.  Bailing." and exit. Make it '
                f"readable by {user} (its owner, or its group with mode 0640).",
                chroot=jail,
            )


def _readable_by(path: str, user: str, group: str) -> bool:
    """Mode bits only, as ntp_sandbox.c sets the identity: -u's user (a name or digits, looked
    up in the host's passwd as ntpd does), with a group that group alone, else the user's
    groups (initgroups). A user the host does not know is jailshim's identity check's to say."""
    import grp
    import pwd

    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        if group:
            groups = {int(group) if group.isdigit() else grp.getgrnam(group).gr_gid}
        else:
            groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
        st = os.stat(path)
    except (KeyError, OSError):
        return True
    if entry.pw_uid == 0:
        return True
    if st.st_uid == entry.pw_uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


def _stays_in(jail: str, path: str) -> bool:
    """``path`` (in the jail) does not lead out of it through a link."""
    return os.path.realpath(path).startswith(os.path.realpath(jail).rstrip("/") + "/")


def _nts_value(config: NtpConfig, key: str) -> str:
    """`nts cookie FILE` (also `nts enable cookie FILE …`): the last one's value."""
    value = ""
    for line in config.all("nts"):
        words = line.words
        for at, word in enumerate(words[1:-1], start=1):
            if word == key:
                value = words[at + 1]
    return value


def _user_word(text: str) -> str:
    """ntp_sandbox.c: digits (strtoul, nothing after) are a number, anything else a name."""
    return f"+{text}" if text.isascii() and text.isdigit() else text


UNWINDER = "libgcc_s.so.1"  # glibc's LIBGCC_S_SO: dlopen()ed by pthread_exit


def loader_dirs() -> tuple[str, ...]:
    """Where Debian's glibc loader looks for a dlopen()ed library that no ld.so.cache names
    (a jail has no etc/ld.so.cache): its SYSTEM_DIRS, `ld.so --list-diagnostics`'s
    path.system_dirs — /lib/TRIPLET, /usr/lib/TRIPLET, /lib, /usr/lib (each after its
    glibc-hwcaps subdirectories). Not lib64 or usr/lib64: a jail with libgcc_s.so.1 only there
    still aborts (tried: tests/cdaemons/exit_thread.c)."""
    import sys

    arch = getattr(sys.implementation, "_multiarch", "")
    return (*((f"/lib/{arch}", f"/usr/lib/{arch}") if arch else ()), "/lib", "/usr/lib")


def _unwinder_for_jail(jail: str, names: Sequence[str]) -> tuple[str, ...]:
    """The host's libgcc_s.so.1 for ntpd's jail, placed at the same path (a jail file): the
    first of the loader's directories that holds it on the host, which the loader searches in
    the jail too. None when the jail has its own copy where the loader finds it first (a
    debootstrap jail: lib -> usr/lib); refused only when the host has none to place."""
    dirs = loader_dirs()
    host = next((f"{d}/{UNWINDER}" for d in dirs if os.path.isfile(f"{d}/{UNWINDER}")), "")
    for directory in dirs:
        inside = _in_jail(jail, f"{directory}/{UNWINDER}")
        if not (os.path.isfile(inside) and _stays_in(jail, inside)):
            continue
        plain = os.path.realpath(inside) == os.path.realpath(jail) + f"{directory}/{UNWINDER}"
        if host and plain and f"{directory}/{UNWINDER}" == host:
            break  # at the very path jailshim places it: placed again (kept, or refreshed)
        return ()
    if not host:
        raise ConfigError(
            f"ntpd resolves {names[0]} after its chroot in a thread that ends with "
            f"pthread_exit(), for which glibc loads {UNWINDER} inside the jail, and neither "
            f"{jail} nor the host has one where the loader looks ({', '.join(dirs)}): ntpd "
            f'would abort at its first lookup ("{UNWINDER} must be installed for pthread_exit '
            f'to work"). Install libgcc-s1, or put {UNWINDER} in one of those directories in '
            "the jail.",
            chroot=jail,
        )
    return (host,)


def _jail_notes(
    jail: str, drift: str, statsdir: str, leapfile: str, config: NtpConfig
) -> list[str]:
    """What ntpd writes or re-reads inside the jail after its chroot and is missing there."""
    notes = []
    if drift and not os.path.isdir(os.path.dirname(_in_jail(jail, drift))):
        notes.append(
            f"ntpd reads its drift file {drift} before its chroot and rewrites it after, inside "
            f"the jail: {os.path.dirname(_in_jail(jail, drift))} does not exist, so the "
            "frequency it learns is lost at each restart"
        )
    stats = any(config.all("statistics")) or any("enable" in x.words for x in config.all("filegen"))
    if stats and not os.path.isdir(_in_jail(jail, statsdir)):
        notes.append(
            f"ntpd writes its statistics after its chroot, in {_in_jail(jail, statsdir)}, "
            "which does not exist"
        )
    if leapfile and not os.path.exists(_in_jail(jail, leapfile)):
        notes.append(
            f"ntpd re-reads its leapfile after its chroot (check_leap_file), inside the jail: "
            f"{_in_jail(jail, leapfile)} does not exist, so updates to {leapfile} are not seen"
        )
    return notes


def _wait_targets(
    options: Mapping[str, list[str]], config: NtpConfig, notes: list[str]
) -> tuple[WaitTarget, ...]:
    """`interface listen ADDR` / `nic listen ADDR` and -I ADDR: the addresses ntpd binds
    (an interface name or `all`/`wildcard`/`ipv4`/`ipv6` is not waited for)."""
    from jailshim.daemons import ip_wait_targets

    found: list[tuple[str, str, str]] = []
    for rule in config.all("interface", "nic"):
        if len(rule.words) > 2 and rule.words[1] == "listen":
            word = rule.words[2]
            if word not in ("all", "ipv4", "ipv6", "wildcard") and "/" not in word:
                where = f"{rule.path}:{rule.number}"
                found.append((word, f"{where}: {rule.words[0]} listen", f"{where}: {word}"))
    for value in options.get("I", []):
        found.append((value, "ntpd -I", f"ntpd -I {value}"))
    targets, more = ip_wait_targets(found)
    notes.extend(more)
    return targets


ADAPTER = _Ntpd()
