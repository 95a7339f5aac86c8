"""radvd: its jail and user from its own argv (`-t DIR -u USER`), checked by `radvd -c`.

radvd takes both only from its command line (radvd.c, 2.19: getopt_long, "d:C:l:m:p:t:u:vhcn"
with --chrootdir, --username …), and chroot()s first, before anything else: its config (-C,
default /etc/radvd.conf), its pid file (-p, default /run/radvd.pid), a log file (-l) and the
user (-u, looked up by getpwnam() and initgroups() in drop_root_privileges()) are all read
inside the jail. `-t` without `-u` is refused ("Chroot as root is not safe, exiting"). It
logs with openlog() after the chroot: /dev/log in the jail for `-m syslog` and
`-m stderr_syslog`, the default unless `-n` (then stderr). Its `/proc/sys` checks
(forwarding, MTU) only warn inside a jail. `radvd -c` (--configtest) is the checker: it
chroot()s as root, so it runs once the jail has been judged; and as it skips the user lookup,
jailshim looks the user up in the jail's etc/passwd as glibc's files module would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from jailshim.daemons import Adapter, DaemonPlan, checkconf, read_regular
from jailshim.daemons.getopt import getopt_long, last
from jailshim.errors import ConfigError, UsageError

__all__ = ["ADAPTER", "argv_options", "jail_user"]

_SHORT = "d:C:l:m:p:t:u:vhcn"  # radvd.c (2.19), OPTIONS_STR
_LONG = {  # radvd.c, prog_opt: name -> (letter, takes a value)
    "chrootdir": ("t", True),
    "config": ("C", True),
    "configtest": ("c", False),
    "debug": ("d", True),
    "facility": ("f", True),
    "help": ("h", False),
    "logfile": ("l", True),
    "logmethod": ("m", True),
    "nodaemon": ("n", False),
    "pidfile": ("p", True),
    "username": ("u", True),
    "version": ("v", False),
}
_METHODS = ("syslog", "stderr_syslog", "stderr", "stderr_clean", "logfile", "none")
DEFAULT_CONFIG = "/etc/radvd.conf"  # `radvd --version`: default config file
DEFAULT_PID = "/run/radvd.pid"
DEFAULT_LOG = "/var/log/radvd.log"


def _refused(word: str, why: str) -> UsageError:
    return UsageError(
        f"radvd's option {word} {why}, so radvd would refuse to start; fix COMMAND "
        "(`radvd --help` lists its options)."
    )


def argv_options(argv: Sequence[str]) -> dict[str, list[str]]:
    """Each option letter's values as glibc's getopt_long reads radvd's argv: short options
    combine (-nu radvd), long ones take `=VALUE` or the next word and may be shortened to a
    unique prefix, options may follow other words (it permutes) until `--`."""
    return getopt_long(argv, _SHORT, _LONG, _refused, permute=True, exact_wins=True).options


def _log_method(options: Mapping[str, list[str]]) -> str:
    """radvd's log method: -m's last value, else stderr_syslog when it daemonizes, else stderr;
    an unknown one is radvd's own refusal."""
    method = last(options, "m")
    if method and method not in _METHODS:
        raise UsageError(
            f'radvd would refuse to start: "unknown log method: {method}"; give one of '
            f"{', '.join(_METHODS)}."
        )
    return method or ("stderr" if "n" in options else "stderr_syslog")


def _jail_of(chroot: str) -> str:
    """chroot(-t) is radvd's first act, from the directory it started in (jailshim's own)."""
    path = chroot if chroot.startswith("/") else os.path.join(os.getcwd(), chroot)
    return os.path.normpath(path)


def jail_user(jail: str, user: str) -> tuple[int, int] | None:
    """(uid, gid) of ``user`` in the jail's etc/passwd as glibc's files module reads it (the
    first `name:x:uid:gid:…` line), or None. Neither etc nor passwd is followed if a symlink
    (the jail's user may own both: with O_NOFOLLOW on passwd alone, an etc linked out of the
    jail had root read OUTSIDE/passwd and take its ids for the jail's); a non-file is none."""
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        jail_fd = os.open(jail, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            etc = os.open("etc", os.O_PATH | os.O_DIRECTORY | nofollow, dir_fd=jail_fd)
        finally:
            os.close(jail_fd)
        try:
            data = read_regular("passwd", 4 << 20, dir_fd=etc, nofollow=True)
        finally:
            os.close(etc)
    except OSError:
        return None
    if data is not None:
        for raw in data.splitlines():
            fields = raw.decode(errors="replace").split(":")
            if len(fields) >= 4 and fields[0] == user:
                try:
                    return int(fields[2]), int(fields[3])
                except ValueError:
                    return None
    return None


class _Radvd(Adapter):
    """radvd: -t and -u from its argv; its config is inside the jail; `radvd -c` checks."""

    name = "radvd"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        options = argv_options(argv)
        chroot = last(options, "t")
        user = last(options, "u") or None
        method = _log_method(options)
        config = last(options, "C", DEFAULT_CONFIG)
        if chroot and not user:
            raise ConfigError(
                'radvd would refuse to start: "Chroot as root is not safe, exiting" (-t '
                f"{chroot} without -u); give radvd its user with -u."
            )
        jail = _jail_of(chroot) if chroot else None
        where = f" inside {jail}" if jail else ""
        read = [("config", f"{config}{where}"), ("pidfile", last(options, "p", DEFAULT_PID))]
        read.append(("logmethod", method))
        notes = []
        if method == "logfile" and jail:
            log = last(options, "l", DEFAULT_LOG)
            notes.append(f"radvd opens its log file {log} inside the jail ({jail}{log})")
        return DaemonPlan(
            files=(f"{config}{where}",),
            chroot=jail,
            user=user,
            sockets=("/dev/log",) if method in ("syslog", "stderr_syslog") else (),
            notes=tuple(notes),
            read=tuple(read),
        )

    def check_config(self, argv: Sequence[str]) -> None:
        check = [argv[0], "-c", *argv[1:]]
        code, output = checkconf.run(check, "radvd")
        if code != 0:
            lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
            words = " | ".join(lines[-3:]) or f"exit status {code}"
            raise ConfigError(
                f"radvd rejected its configuration (`{' '.join(check)}`, exit {code}): {words}",
                radvd_output=lines[-20:],
            )
        options = argv_options(argv)
        chroot, user = last(options, "t"), last(options, "u")
        if chroot and user:
            _user_in_jail(_jail_of(chroot), user)


def _user_in_jail(jail: str, user: str) -> None:
    """radvd finds its user with getpwnam() after the chroot, in the jail's etc/passwd; the
    check proves the host's: both must name the same uid and gid."""
    import pwd

    inside = jail_user(jail, user)
    if inside is None:
        raise ConfigError(
            f"radvd looks its user up inside its jail, and {jail}/etc/passwd has no {user!r} "
            f"(radvd would exit: \"Couldn't find user '{user}'\"); copy its line from the "
            "host's /etc/passwd (and its group's from /etc/group) into the jail.",
            chroot=jail,
        )
    try:
        host = pwd.getpwnam(user)
    except KeyError:
        return  # a user only the jail knows: the identity check already spoke of it
    if inside != (host.pw_uid, host.pw_gid):
        raise ConfigError(
            f"{jail}/etc/passwd gives {user!r} uid {inside[0]} and gid {inside[1]}, the host "
            f"uid {host.pw_uid} and gid {host.pw_gid}; radvd takes the jail's and jailshim "
            "checked the host's. Make them the same.",
            chroot=jail,
        )


ADAPTER = _Radvd()
