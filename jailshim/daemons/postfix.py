"""postfix: its jail, user and chrooted services as postfix itself reads them, through postconf.

`postfix [-Dv] [-c DIR] COMMAND` (getopt "+c:Dv": options end at COMMAND); the last `-c DIR`
wins over $MAIL_CONFIG, which wins over postconf's compiled-in default (/etc/postfix).
`postconf -c DIR -hx NAME...` prints main.cf values, expanded, one line each, in the order
asked; `postconf -c DIR -F '*/*/chroot' '*/*/command'` prints master.cf's columns.

Which services chroot: master.cf's chroot column says `y` or `n`; `-` is postfix's default,
which depends on `compatibility_level` (postfix 3.x master_ent.c: `y` below level 1, else `n`).
Debian's postfix 3.7 builds that code unchanged: its master logs "using backwards-compatible
default setting chroot=y" only below level 1, and Debian's own start script
(/usr/lib/postfix/configure-instance.sh) decides by the same rule. tests/test_postfix.py
checks the rule against the installed master (its children's `-c` flag and /proc/PID/root).

A chrooted postfix daemon enters `queue_directory` as root, calls initgroups(mail_owner) and
setuid(mail_owner) (chroot_uid.c); after that it opens the resolver's files, the time zone and
etc/services inside the jail, so those are the jail's file sets. It logs to syslog (/dev/log)
unless `maillog_file` is set: then postlogd, not chrooted, writes the file.

The checker is `postfix check`. It logs to its stderr only when that is a terminal (postfix.c,
postlog.c: isatty(STDERR_FILENO)), else only to syslog or maillog_file, which may be lost: it
runs on a pseudo-terminal so its words can be shown. Like `postfix start`, it creates missing
queue directories.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from jailshim.daemons import Adapter, DaemonPlan, checkconf
from jailshim.daemons.getopt import GetoptError, getopt
from jailshim.errors import ConfigError

__all__ = ["ADAPTER", "MasterService", "chroot_default", "chrooted", "parse_argv", "parse_master"]

_GETOPT = "c:Dv"  # postfix.c: GETOPT(argc, argv, "c:Dv"), "+" on Linux (no permutation)
# main.cf parameters read, in this order (postconf -h prints one line per name)
_ASKED = (
    "config_directory",
    "queue_directory",
    "mail_owner",
    "maillog_file",
    "compatibility_level",
    "mail_version",
    "smtp_tls_CApath",
    "smtpd_tls_CApath",
    "local_recipient_maps",
    "data_directory",
)
_FILE_SETS = ("time", "resolver", "services")
_STARTS = ("start", "start-fg")


class MasterService(NamedTuple):
    """One master.cf service: `name/type`, its chroot column as written, its program."""

    service: str
    chroot: str  # "y", "n" or "-"
    program: str


def parse_argv(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The config directory postfix will use (its last -c, else $MAIL_CONFIG, else None:
    postconf's default) and its COMMAND (None when there is none)."""
    try:
        parsed = getopt(argv, _GETOPT)
    except GetoptError as exc:
        if exc.missing:
            raise ConfigError(
                "postfix's -c needs its configuration directory; give `postfix -c "
                "/etc/postfix start-fg`."
            ) from None
        raise ConfigError(
            f"postfix does not know the option -{exc.letter} (it takes -c DIR, -D and -v); "
            "give `postfix [-c DIR] start-fg`."
        ) from None
    config_dir: str | None = None
    for letter, value in parsed.options:
        if letter == "c":
            if not value.startswith("/"):
                raise ConfigError(
                    f"postfix -c {value!r}: postfix requires an absolute path; give the "
                    "configuration directory as /PATH."
                )
            config_dir = value
    i = parsed.rest
    command = argv[i] if i < len(argv) else None
    if config_dir is None:
        config_dir = env.get("MAIL_CONFIG") or None
    return config_dir, command


def parse_master(text: str) -> list[MasterService]:
    """`postconf -F '*/*/chroot' '*/*/command'` output as services, in master.cf order."""
    chroots: dict[str, str] = {}
    programs: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        parts = key.rsplit("/", 2)
        if not sep or len(parts) != 3:
            continue
        service = f"{parts[0]}/{parts[1]}"
        if parts[2] == "chroot":
            chroots[service] = value.strip()
        elif parts[2] == "command":
            words = value.split()
            programs[service] = words[0] if words else ""
    return [MasterService(s, c, programs.get(s, "")) for s, c in chroots.items()]


def chroot_default(compatibility_level: str) -> bool:
    """What master.cf's `-` in the chroot column means: y below compatibility level 1."""
    major = compatibility_level.strip().split(".", 1)[0]
    if not (major.isascii() and major.isdigit()):
        raise ConfigError(
            f"postfix's compatibility_level {compatibility_level!r} is not a level such as "
            "3.6; fix main.cf (postfix would refuse it too)."
        )
    return int(major) < 1


def chrooted(services: Sequence[MasterService], default: bool, where: str) -> list[str]:
    """The `name/type` of every service that runs chrooted; a column postfix would refuse
    (master_ent.c takes only y, n and -) is a ConfigError."""
    found = []
    for svc in services:
        if svc.chroot not in ("y", "n", "-"):
            raise ConfigError(
                f"{where}: service {svc.service} has chroot {svc.chroot!r}; postfix takes only "
                "y, n or - there. Fix that column."
            )
        if svc.chroot == "y" or (svc.chroot == "-" and default):
            found.append(svc.service)
    return found


def _postconf(argv: Sequence[str]) -> str:
    """postconf beside the postfix that will run, else the one on PATH."""
    beside = os.path.join(os.path.dirname(argv[0]), "postconf")
    if os.path.dirname(argv[0]) and os.access(beside, os.X_OK):
        return beside
    return "postconf"


def _unreadable(argv: Sequence[str], code: int, output: str) -> ConfigError:
    lines = list(dict.fromkeys(ln.strip() for ln in output.splitlines() if ln.strip()))
    words = " | ".join(lines[-4:]) or f"exit status {code}"
    shown = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))
    return ConfigError(
        f"postfix's configuration cannot be read ({shown}, exit {code}): {words}",
        postfix_output=lines[-20:],
    )


def _notes(
    values: Mapping[str, str], services: Sequence[MasterService], jailed: Sequence[str]
) -> list[str]:
    """What Debian's start script copies into the spool that a jail of files does not hold."""
    queue = values["queue_directory"].rstrip("/")
    programs = {svc.program for svc in services if svc.service in jailed}
    notes = []
    for name, users in (("smtpd_tls_CApath", {"smtpd"}), ("smtp_tls_CApath", {"smtp", "lmtp"})):
        path = values[name]
        inside = path == queue or path.startswith(queue + "/")
        if path and not inside and programs & users:
            notes.append(
                f"{name} = {path} is read after chroot, so the chrooted "
                f"{'/'.join(sorted(programs & users))} cannot see it; copy it to {queue}{path} "
                f"or use {name.replace('CApath', 'CAfile')}, which is read before chroot"
            )
    maps = values["local_recipient_maps"].split()
    plain = [m for m in maps if m.strip(",").startswith("unix:passwd.byname")]
    if plain and "smtpd" in programs:
        notes.append(
            "local_recipient_maps has unix:passwd.byname: the chrooted smtpd cannot read "
            "/etc/passwd; write proxy:unix:passwd.byname (Debian's default) instead"
        )
    return notes


class _Postfix(Adapter):
    """postfix: queue_directory, mail_owner and master.cf's chroot column via postconf."""

    name = "postfix"
    check_writes = True

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        config_dir, command = parse_argv(argv, env)
        tool = _postconf(argv)
        dir_args = ["-c", config_dir] if config_dir else []
        main_argv = [tool, *dir_args, "-hx", *_ASKED]
        master_argv = [tool, *dir_args, "-F", "*/*/chroot", "*/*/command"]
        main, master = checkconf.run_all([main_argv, master_argv], "postfix")
        for asked, (code, out, err) in ((main_argv, main), (master_argv, master)):
            if code != 0:
                raise _unreadable(asked, code, out + err)
        lines = main[1].split("\n")
        if len(lines) < len(_ASKED):
            raise _unreadable(main_argv, main[0], main[1] + main[2])
        values = dict(zip(_ASKED, (ln.strip() for ln in lines), strict=False))
        where = values["config_directory"] or config_dir or "postfix's configuration"
        queue = values["queue_directory"]
        if not queue.startswith("/"):
            # master.c chdir()s to it; each chrooted daemon (single_server.c and the other
            # *_server.c) chdir()s to it again from there and chroot_uid() (chroot_uid.c)
            # chroots to it from there: one name, a different directory for every step.
            raise ConfigError(
                f"postfix's queue_directory {queue!r} ({where}/main.cf) is a relative path, "
                "which every postfix program takes from a different directory; give it as an "
                "absolute path."
            )
        default = chroot_default(values["compatibility_level"])
        services = parse_master(master[1])
        jailed = chrooted(services, default, f"{where}/master.cf")
        level = values["compatibility_level"]
        read = [
            ("tool", tool),
            ("mail_version", values["mail_version"]),
            ("compatibility_level", level),
            (
                "chroot_default",
                f"{'y' if default else 'n'} (master.cf '-' at compatibility_level {level}: "
                "y below level 1, else n)",
            ),
        ]
        notes: list[str] = []
        if command is not None and command not in _STARTS:
            notes.append(
                f"postfix {command} does not start postfix; jailshim prepares its jail anyway "
                "(`postfix start-fg` runs it in the foreground)"
            )
        files = (f"{where}/main.cf", f"{where}/master.cf")
        if not jailed:
            read.append(("chrooted", "none: every service reads the host's files, no jail"))
            return DaemonPlan(
                files=files,
                user=values["mail_owner"] or None,
                notes=tuple(notes),
                read=tuple(read),
                checker_dirs=(queue, values["data_directory"]),
            )
        read.append(("chrooted", " ".join(jailed)))
        maillog = values["maillog_file"]
        if maillog:
            read.append(("logging", f"maillog_file {maillog}: postlogd writes it, no /dev/log"))
        else:
            read.append(("logging", f"syslog: /dev/log at {queue.rstrip('/')}/dev/log"))
        notes += _notes(values, services, jailed)
        return DaemonPlan(
            files=files,
            chroot=queue.rstrip("/") or "/",
            user=values["mail_owner"] or None,
            sockets=() if maillog else ("/dev/log",),
            notes=tuple(notes),
            read=tuple(read),
            file_sets=_FILE_SETS,
            # postfix check (postfix-script check-fatal, check-warn) makes missing queue
            # directories and data_directory (post-install create-missing) and runs find over
            # both: data_directory = / walked all of /
            checker_dirs=(queue, values["data_directory"]),
        )

    def check_config(self, argv: Sequence[str]) -> None:
        config_dir, _ = parse_argv(argv, os.environ)
        check = [argv[0], *(["-c", config_dir] if config_dir else []), "check"]
        code, output = checkconf.run_on_terminal(check, "postfix")
        lines = list(dict.fromkeys(ln.strip() for ln in output.splitlines() if ln.strip()))
        if code != 0:
            complaints = [ln for ln in lines if "fatal" in ln or "error" in ln] or lines[-3:]
            raise ConfigError(
                f"postfix rejected its configuration (postfix {' '.join(check[1:])}, exit "
                f"{code}): {' | '.join(complaints) or f'exit status {code}'}",
                postfix_output=lines[-20:],
            )
        if lines:
            from jailshim.log import get_logger

            logger = get_logger()
            for line in lines:
                logger.warning("postfix.check", said=line)


ADAPTER = _Postfix()
