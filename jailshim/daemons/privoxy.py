"""privoxy: its jail is the home directory of its `--user`, and it reads its config inside it.

privoxy 3.0.34 reads its command line in main() (jcc.c) word by word: `--no-daemon`,
`--pidfile FILE`, `--user USER[.GROUP]` (getpwnam()/getgrnam() on the host, at once: "User
'x' not found."), `--pre-chroot-nslookup HOST`, `--chroot`, `--config-test`, `--help`,
`--version`; any other word is the config file if it is the last one (default "config"), else
usage (exit 2). A relative config file is made absolute from the start directory, which
becomes `basedir` for relative paths in the config (miscutil.c make_path).

Then, before anything of its config is read: fork unless --no-daemon, the pid file (host
path), setgid(GROUP, else the user's primary group) with setgroups([GROUP]) or
initgroups(USER), tzset(), the --pre-chroot-nslookup lookup, chroot(the user's pw_dir) and
chdir("/"), setuid(). `--chroot` without `--user`: "Cannot chroot without --user argument."
Only then listen_loop() calls load_config() (loadcfg.c): the config file, and every file it
names — actionsfile and filterfile (relative: in confdir), trustfile, the templates (templdir,
default confdir/templates, read when a page is served), the logfile (in logdir, opened for
appending, only when it daemonizes: with --no-daemon it logs to stderr) — are opened inside the
jail, at the same paths, by the user; each is re-read when it changes, inside the jail too.
privoxy never uses syslog (errlog.c writes to its logfile or stderr), so no /dev/log; it
resolves every request's host name inside the jail (getaddrinfo in jbsockets.c), so the jail
gets the resolver files (jailshim's `resolver` set: etc/resolv.conf, hosts, nsswitch.conf).
listen-address lines ([IP]:PORT or IP:PORT, default 127.0.0.1:8118) are bound after the
chroot, as the user.

What jailshim refuses (78, before anything is prepared): --chroot without --user; a user or
group privoxy would not find; a home that is "/" or empty (no jail at all: privoxy would run
with the host as its root); a config file the jail does not hold at that path (privoxy would
exit "can't check configuration file"); in daemon mode, a logfile whose directory the jail
lacks (it would exit "can't open logfile"). Debian's privoxy user has /etc/privoxy as its home:
`--chroot` there would look for /etc/privoxy/etc/privoxy/config — refused by the same rule
until the operator builds that jail. A jail others can write is refused by jailshim's usual
judgement, before the checker runs.

The checker is `privoxy --no-daemon --config-test CONFIG` (exit 1 on a fatal error: a config
file or an actions/filter file it cannot load, a bad listen-address). It reads what the daemon
reads: with --chroot it runs in a private mount namespace whose root is a tmpfs holding the
jail's top-level entries (bound) and the host's /usr (the binary and its libraries), chroot()ed
there as privoxy's user — root never opens a file in the jail, the host's paths are not seen,
nothing is written (--no-daemon: no logfile opened; --config-test exits before the pid file).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from jailshim.daemons import Adapter, DaemonPlan, checkconf, ip_wait_targets, read_regular
from jailshim.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from jailshim.spec import Identity, WaitTarget

__all__ = ["ADAPTER", "Args", "Config", "argv_options", "parse_config", "split_listen"]

DEFAULT_CONFIG = "config"  # jcc.c main(): configfile = "config"
DEFAULT_LISTEN = "127.0.0.1:8118"  # project.h HADDR_DEFAULT
CONFIG_MAX = 4 << 20  # more than any privoxy config; a jail's /dev/zero does not hang us
_SYMLINK_HOPS = 40  # the kernel's limit (ELOOP)
_SPACE = " \t\n\v\f\r"  # isspace() in the C locale
# host trees the checker's view takes from the host: the binary, its loader and libraries
_HOST_TREES = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_CLONE_NEWNS = 0x00020000
VIEW_FAILED = 125  # the view's own failure, told apart from privoxy's exit 1
_VIEW_PREFIX = "jailshim-view: "


class Args(NamedTuple):
    """What privoxy's main() takes from its argv."""

    config: str = DEFAULT_CONFIG
    daemon: bool = True
    pidfile: str = ""
    user: str = ""
    group: str = ""
    chroot: bool = False
    nslookup: str = ""


def _usage(why: str) -> UsageError:
    return UsageError(
        f"privoxy would print its usage and exit (2): {why}; fix COMMAND (`privoxy --help` "
        "lists its options)."
    )


def argv_options(argv: Sequence[str]) -> Args:
    """privoxy's argv read as jcc.c's main() reads it: options in any order, each value the
    next word; a word it does not know is the config file only as the last word."""
    found: dict[str, object] = {}
    words = list(argv[1:])
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("--pidfile", "--user", "--pre-chroot-nslookup"):
            if i + 1 >= len(words):
                raise _usage(f"{word} needs a value and COMMAND ends there")
            value = words[i + 1]
            i += 2
            if word == "--pidfile":
                found["pidfile"] = value
            elif word == "--pre-chroot-nslookup":
                found["nslookup"] = value
            else:
                user, _, group = value.partition(".")  # USER[.GROUP]: the first "."
                found["user"], found["group"] = user, group
            continue
        i += 1
        if word == "--no-daemon":
            found["daemon"] = False
        elif word == "--chroot":
            found["chroot"] = True
        elif word in ("--help", "--version", "--config-test"):
            raise UsageError(
                f"privoxy {word} answers and exits: there is no daemon to jail; run it without "
                "jailshim."
            )
        elif i != len(words):
            raise _usage(f"{word!r} is no option it takes and not the last word")
        else:
            found["config"] = word
    return Args()._replace(**found)  # type: ignore[arg-type]


class Config(NamedTuple):
    """What load_config() takes from the config file that matters for the jail: paths as
    privoxy makes them (make_path), listen-address values as written."""

    confdir: str
    templdir: str
    logfile: str  # "" unless daemonizing with a logfile line
    actions: tuple[str, ...]
    filters: tuple[str, ...]
    trustfile: str
    listen: tuple[str, ...]


def _uncommented(line: str) -> str:
    """A line up to its first `#` that is not escaped; each `\\#` kept as `#`."""
    kept: list[str] = []
    for ch in line:
        if ch == "#":
            if kept and kept[-1] == "\\":
                kept[-1] = "#"
                continue
            break
        kept.append(ch)
    return "".join(kept)


def _lines(text: str) -> list[str]:
    """The data lines of a privoxy config (loaders.c edit_read_line): a trailing backslash
    joins the next line, leading space is dropped at a line's start, `#` starts a comment
    unless escaped as `\\#` (the backslash is dropped), then chomp() strips both ends."""
    raw = text.replace("\0", "\n").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    found: list[str] = []
    data = ""
    for raw_line in raw:
        continued = raw_line.endswith("\\")
        line = raw_line[:-1] if continued else raw_line
        data += _uncommented(line.lstrip(_SPACE) if not data else line)
        if not continued and data.strip(_SPACE):
            found.append(data.strip(_SPACE))
            data = ""
    if data.strip(_SPACE):
        found.append(data.strip(_SPACE))
    return found


def make_path(directory: str | None, file: str, basedir: str) -> str:
    """miscutil.c make_path: FILE as is when absolute or without a directory, else DIR/FILE,
    a relative DIR taken from basedir (the start directory of a relative config file)."""
    if not directory or file.startswith("/"):
        return file
    if not directory.startswith("/") and basedir:
        directory = f"{basedir}/{directory}"
    return f"{directory}{file}" if directory.endswith("/") else f"{directory}/{file}"


def parse_config(text: str, *, daemon: bool, basedir: str) -> Config:
    """load_config()'s reading of what matters here, in file order (an actionsfile line takes
    the confdir set above it); directive names are lower-cased, the argument follows the first
    run of spaces and tabs."""
    confdir: str | None = None
    logdir: str | None = None
    templdir = ""
    logfile = ""
    trustfile = ""
    actions: list[str] = []
    filters: list[str] = []
    listen: list[str] = []
    for line in _lines(text):
        cut = len(line)
        for sep in (" ", "\t"):
            at = line.find(sep)
            if at >= 0:
                cut = min(cut, at)
        command, arg = line[:cut].lower(), line[cut:].lstrip(" \t")
        if command == "confdir":
            confdir = arg
        elif command == "logdir":
            logdir = arg
        elif command == "templdir":
            templdir = arg
        elif command == "actionsfile":
            actions.append(make_path(confdir, arg, basedir))
        elif command == "filterfile":
            filters.append(make_path(confdir, arg, basedir))
        elif command == "trustfile":
            trustfile = make_path(confdir, arg, basedir)
        elif command == "logfile" and daemon:
            logfile = make_path(logdir, arg, basedir)
        elif command == "listen-address":
            listen.append(arg)
    if not templdir:
        templdir = make_path(confdir, "templates", basedir)  # cgi.c template_load
    return Config(
        confdir=confdir or "",
        templdir=templdir,
        logfile=logfile,
        actions=tuple(actions),
        filters=tuple(filters),
        trustfile=trustfile,
        listen=tuple(listen) or (DEFAULT_LISTEN,),
    )


def split_listen(value: str) -> tuple[str, int] | None:
    """load_config()'s split of a listen-address value: `[ADDR]:PORT` or `ADDR:PORT` (at the
    first ":"), the port atoi()'s positive number; None where privoxy stops with "invalid
    bind port spec". An empty ADDR binds every address."""
    if value.startswith("[") and "]:" in value:
        address, _, port = value[1:].partition("]:")
    else:
        address, colon, port = value.partition(":")
        if not colon:
            return None
    digits = ""
    for ch in port.lstrip(" \t"):
        if not ch.isdigit():
            break
        digits += ch
    number = int(digits) if digits else 0
    return (address, number) if number > 0 else None


def _inside(path: str) -> str:
    """A path as the jailed privoxy opens it: a relative one from "/" (chdir after chroot)."""
    return path if path.startswith("/") else "/" + path


def _walk_in_jail(jail: str, path: str) -> tuple[int, str] | None:
    """(directory fd, last name) of ``path`` resolved as the kernel does for a process whose
    root is ``jail``: symlinks and ".." never lead out of it. None when a directory on the
    way is missing. Every step is O_NOFOLLOW: root never follows a link the jail holds."""
    from collections import deque

    parts = deque(p for p in path.split("/") if p not in ("", "."))
    stack = [os.open(jail, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    hops = 0
    try:
        while parts:
            name = parts.popleft()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                st = os.stat(name, dir_fd=stack[-1], follow_symlinks=False)
            except FileNotFoundError:
                return (stack.pop(), name) if not parts else None
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                target = os.readlink(name, dir_fd=stack[-1])
                if hops > _SYMLINK_HOPS:
                    return None
                while target.startswith("/") and len(stack) > 1:  # from the jail's root
                    os.close(stack.pop())
                parts.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
            elif not parts:
                return stack.pop(), name
            else:
                flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                stack.append(os.open(name, flags, dir_fd=stack[-1]))
        return stack.pop(), "."
    except OSError:
        return None
    finally:
        for fd in stack:
            os.close(fd)


def jail_stat(jail: str, path: str) -> os.stat_result | None:
    """The entry at ``path`` as seen from inside ``jail`` (None: missing)."""
    walked = _walk_in_jail(jail, path)
    if walked is None:
        return None
    fd, name = walked
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_in_jail(jail: str, path: str) -> bytes | None:
    """The regular file at ``path`` as the jailed privoxy would open it (None: missing or not
    a regular file); opened O_NOFOLLOW|O_NONBLOCK, at most CONFIG_MAX bytes."""
    walked = _walk_in_jail(jail, path)
    if walked is None:
        return None
    fd, name = walked
    try:
        return read_regular(name, CONFIG_MAX, dir_fd=fd, nofollow=True)
    finally:
        os.close(fd)


def _user_of(args: Args) -> tuple[str, int, int, str]:
    """(name, uid, gid, home) of --user as privoxy finds them (getpwnam on the host), the gid
    that of .GROUP when given; privoxy's own words when it would not find them."""
    import pwd

    if args.group:
        import grp

        try:
            gid = grp.getgrnam(args.group).gr_gid
        except KeyError:
            raise ConfigError(
                f"privoxy would exit: \"Group '{args.group}' not found.\" (--user "
                f"{args.user}.{args.group}); give a group the host knows."
            ) from None
    try:
        pw = pwd.getpwnam(args.user)
    except KeyError:
        raise ConfigError(
            f"privoxy would exit: \"User '{args.user}' not found.\"; give --user a user the "
            "host knows."
        ) from None
    return pw.pw_name, pw.pw_uid, gid if args.group else pw.pw_gid, pw.pw_dir


def _jail_of(args: Args) -> str | None:
    """The jail privoxy chroot()s into: its user's home, or None without --chroot."""
    if not args.chroot:
        return None
    if not args.user:
        raise ConfigError(
            'privoxy would exit: "Cannot chroot without --user argument."; give it --user '
            "USER, whose home directory is its jail."
        )
    name, _, _, home = _user_of(args)
    jail = os.path.normpath(home if home.startswith("/") else os.path.join(os.getcwd(), home))
    if not home or jail == "/":
        raise ConfigError(
            f"privoxy's --chroot goes to its user's home directory, and {name}'s is "
            f"{home or 'empty'!s}: no jail at all. Give {name} a home of its own that holds "
            "the jail (usermod -d DIR), or run privoxy without --chroot."
        )
    return jail


def _config_path(args: Args) -> tuple[str, str]:
    """(config file as privoxy opens it, basedir): relative names from the start directory."""
    if args.config.startswith("/"):
        return args.config, ""
    cwd = os.getcwd()
    return f"{cwd}/{args.config}", cwd


class _Privoxy(Adapter):
    """privoxy: the jail is --user's home; its config and files are read inside it."""

    name = "privoxy"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        args = argv_options(argv)
        if args.user and not args.chroot:
            _user_of(args)  # privoxy looks them up either way
        jail = _jail_of(args)
        config_file, basedir = _config_path(args)
        where = f"{jail}{config_file}" if jail else config_file
        text = read_in_jail(jail, config_file) if jail else _read_host(config_file)
        if text is None:
            inside = f" (it reads it after chroot()ing into {jail})" if jail else ""
            raise ConfigError(
                "privoxy would exit: \"can't check configuration file "
                f"'{config_file}': No such file or directory\"{inside}: {where} is not a "
                "readable file; put its config there."
            )
        config = parse_config(text.decode(errors="replace"), daemon=args.daemon, basedir=basedir)
        notes: list[str] = []
        if jail:
            self._judge_files(jail, config, notes)
        targets, listen_notes = _wait_targets(config.listen, where)
        notes.extend(listen_notes)
        read: list[tuple[str, str]] = [
            ("config", where),
            ("listen_address", " ".join(config.listen)),
            ("actionsfile", " ".join(config.actions)),
            ("filterfile", " ".join(config.filters)),
            ("templdir", config.templdir),
            ("logfile", config.logfile or ("stderr" if not args.daemon else "none")),
        ]
        if args.pidfile:
            read.append(("pidfile", f"{args.pidfile} (on the host, written before chroot)"))
        if args.nslookup:  # glibc 2.34+ has files and dns in libc: the jail's files suffice
            read.append(("pre_chroot_nslookup", args.nslookup))
        return DaemonPlan(
            files=(where,),
            chroot=jail,
            user=args.user or None,
            group=args.group or None,
            wait_targets=targets,
            notes=tuple(notes),
            read=tuple(read),
            file_sets=("resolver",) if jail else (),
        )

    @staticmethod
    def _judge_files(jail: str, config: Config, notes: list[str]) -> None:
        """What the jailed privoxy opens at its start and later, looked at from inside."""
        if config.logfile:
            parent = os.path.dirname(_inside(config.logfile)) or "/"
            st = jail_stat(jail, parent)
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise ConfigError(
                    f"privoxy would exit: \"init_error_log(): can't open logfile: "
                    f"'{config.logfile}'\": it opens it inside its jail and {jail}{parent} is no "
                    "directory; make it (writable by privoxy's user), or run privoxy with "
                    "--no-daemon (it then logs to stderr)."
                )
            notes.append(
                f"privoxy appends to its logfile {config.logfile} inside the jail "
                f"({jail}{_inside(config.logfile)}), as its user"
            )
        templates = jail_stat(jail, _inside(config.templdir))
        if templates is None or not stat.S_ISDIR(templates.st_mode):
            notes.append(
                f"privoxy reads its templates from {config.templdir} inside the jail and "
                f"{jail}{_inside(config.templdir)} is no directory: its error and CGI pages "
                "will be bare"
            )

    def identity(self, identity: Identity, config: DaemonPlan, *, group_given: bool) -> Identity:
        """--user USER.GROUP: setgroups() to that group alone; USER: initgroups(), the user's
        memberships, as jailshim resolves them."""
        if group_given and config.group:
            return identity._replace(groups=(identity.gid,))
        return identity

    def check_config(self, argv: Sequence[str]) -> None:
        args = argv_options(argv)
        jail = _jail_of(args)
        check = [argv[0], "--no-daemon", "--config-test", args.config]
        if jail is None and not args.user:
            command = check
        else:
            import sys

            name, uid, gid, _ = _user_of(args)
            groups = [gid] if args.group else sorted(set(os.getgrouplist(name, gid)))
            view = [
                sys.executable,
                "-m",
                "jailshim.daemons.privoxy",
                jail or "",
                f"{uid}:{gid}:{','.join(map(str, groups))}",
                os.getcwd(),
                argv[0],  # the binary to open, then privoxy's own argv
                *check,
            ]
            command = view
        code, output = checkconf.run(command, "privoxy")
        if code == 0:
            return
        lines = [_words(ln) for ln in output.splitlines() if ln.strip()]
        if code == VIEW_FAILED and lines and lines[-1].startswith(_VIEW_PREFIX):
            raise ConfigError(
                f"{lines[-1].removeprefix(_VIEW_PREFIX)}; privoxy's checker did not run. Pass "
                "--no-config-check to start without it."
            )
        fatal = [ln for ln in lines if ln.startswith(("Fatal error:", "Error:"))]
        words = " | ".join(fatal[-3:] or lines[-3:]) or f"exit status {code}"
        raise ConfigError(
            f"privoxy rejected its configuration (`{' '.join(check)}`"
            f"{f' inside {jail} as {args.user}' if jail else ''}, exit {code}): {words}",
            privoxy_output=lines[-20:],
        )


def _words(line: str) -> str:
    """privoxy's log line without its time stamp and thread id (errlog.c: "DATE TIME THREAD
    Level: text")."""
    fields = line.strip().split(" ", 3)
    if len(fields) == 4 and fields[0][:4].isdigit() and fields[0].count("-") == 2:
        return fields[3]
    return line.strip()


def _read_host(path: str) -> bytes | None:
    return read_regular(path, CONFIG_MAX)


def _wait_targets(
    listen: Sequence[str], where: str
) -> tuple[tuple[WaitTarget, ...], tuple[str, ...]]:
    """The listen-address IPs to wait for; privoxy's refusal of a value it cannot split."""
    found = []
    for value in listen:
        split = split_listen(value)
        if split is None:
            raise ConfigError(
                f'privoxy would exit: "invalid bind port spec {value}" ({where}: '
                f"listen-address {value}); give [IP]:PORT or IP:PORT."
            )
        address = split[0]
        if address:  # an empty address binds every one: nothing to wait for
            said = f"{where}: listen-address {value}"
            found.append((address, said, f"{said} (privoxy resolves it inside its jail)"))
    return ip_wait_targets(found)


def _place_entry(jail_fd: int, name: str, target: str, bind: Callable[[str, str], None]) -> None:
    """One top-level entry of the jail into the checker's view: a symlink as a symlink, else
    a bind of exactly the entry looked at — opened once without following and bound through
    that descriptor: bound by name, mount(2) follows a last-component link, so a name the
    jail's user swapped for a link between the look and the mount bound the link's host
    target into the view (tests/test_attack_longtail.py's review; no race was won here)."""
    entry = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=jail_fd)
    try:
        mode = os.fstat(entry).st_mode
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=jail_fd), target)
            return
        if stat.S_ISDIR(mode):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        bind(f"/proc/self/fd/{entry}", target)
    finally:
        os.close(entry)


def _view_main(argv: Sequence[str]) -> int:
    """The checker's view (run as `python -m jailshim.daemons.privoxy JAIL UID:GID:GROUPS CWD
    PRIVOXY ARGS…`, as root): a mount namespace of its own (private: nothing propagates back),
    a tmpfs over the jail's path holding the jail's top-level entries (bound through a
    descriptor taken before) and the host's /usr with its /lib links; chroot() there, the
    user's identity, exec privoxy through a descriptor opened on the host. With no JAIL: only
    the identity."""
    import ctypes

    jail, ids, cwd, binary, *rest = argv
    uid_text, gid_text, groups_text = ids.split(":")
    uid, gid = int(uid_text), int(gid_text)
    groups = [int(g) for g in groups_text.split(",") if g]
    exe = os.open(binary, os.O_RDONLY | os.O_CLOEXEC)
    if jail:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")

        def mount(source: str, target: str, fstype: str | None, flags: int, data: str) -> None:
            if libc.mount(
                source.encode(),
                target.encode(),
                fstype.encode() if fstype else None,
                flags,
                data.encode() if data else None,
            ):
                err = ctypes.get_errno()
                raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")

        ms_nosuid, ms_nodev, ms_bind, ms_rec, ms_private = 2, 4, 4096, 16384, 1 << 18
        mount("none", "/", None, ms_rec | ms_private, "")
        jail_fd = os.open(jail, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        names = os.listdir(jail_fd)
        mount("jailshim-privoxy-check", jail, "tmpfs", ms_nosuid | ms_nodev, "mode=0755")
        for name in names:
            target = f"{jail}/{name}"
            if name in _HOST_TREES:
                continue
            _place_entry(
                jail_fd, name, target, lambda src, dst: mount(src, dst, None, ms_bind | ms_rec, "")
            )
        for name in _HOST_TREES:
            host = f"/{name}"
            if os.path.islink(host):
                os.symlink(os.readlink(host), f"{jail}/{name}")
            elif os.path.isdir(host):
                os.mkdir(f"{jail}/{name}")
                mount(host, f"{jail}/{name}", None, ms_bind | ms_rec, "")
        os.close(jail_fd)
        os.chroot(jail)
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    os.execve(exe, rest, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return 127  # not reached


ADAPTER = _Privoxy()

if __name__ == "__main__":
    import sys

    try:
        sys.exit(_view_main(sys.argv[1:]))
    except OSError as exc:
        print(
            f"{_VIEW_PREFIX}jailshim could not build the view of the jail for privoxy's "
            f"checker ({exc})",
            file=sys.stderr,
        )
        sys.exit(VIEW_FAILED)
