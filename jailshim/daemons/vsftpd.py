"""vsftpd: its jail is `secure_chroot_dir`, read from its config files as parseconf.c reads them.

vsftpd (3.0.x, main.c) takes config files and `-oNAME=VALUE` settings from argv, in order
(any word not starting with "-" is a file; `-v` prints the version; another option is
"unrecognise option: "); with no file it loads /etc/vsftpd.conf if it exists. parseconf.c
reads each line: empty, `#…` or all-space lines are skipped, leading space is dropped, the
line splits at the first "=", the name must match exactly (case-sensitive), a boolean is
YES/TRUE/1 or NO/FALSE/0 in any case. The listener stays root and unchrooted; each
connection's pre-login process chroot()s into secure_chroot_dir (default /usr/share/empty)
as nopriv_user (twoprocess.c: lstat() first, "vsftpd: not found: directory given in
'secure_chroot_dir':" — the OOPS of containers whose /run is empty) and refuses a root it can
write (secutil.c: "refusing to run with writable root inside chroot()"). Local time is cached
in $TZ before any chroot (sysutil.c vsf_sysutil_tzset), so no etc/localtime is needed; syslog
(syslog_enable or tcp_wrappers) is opened without LOG_NDELAY (sysutil.c vsf_sysutil_openlog)
and so connects on first use, inside the jail: /dev/log there. Users' own jails
(chroot_local_user: their homes) are the operator's and are not prepared.

vsftpd has no checker; jailshim runs vsftpd itself over the same argv with `-olisten=NO
-olisten_ipv6=NO` appended and a pipe as its stdin: it parses every file and setting, loads
its TLS certificate (ssl_init) and stops at "not configured for standalone, must be started
from inetd" (main.c do_sanity_checks) — it binds nothing and chroots nowhere; any other "500
OOPS" (which it writes to fd 0, the command connection) is the config's fault, in its words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from jailshim.daemons import Adapter, DaemonPlan, checkconf, read_file
from jailshim.errors import ConfigError, UsageError

__all__ = ["ADAPTER", "read_settings", "truthy"]

DEFAULT_CONFIG = "/etc/vsftpd.conf"  # defs.h VSFTP_DEFAULT_CONFIG
DEFAULT_SECURE_CHROOT_DIR = "/usr/share/empty"  # tunables.c
CONF_FILE_MAX = 100000  # defs.h VSFTP_CONF_FILE_MAX: str_fileread reads no more
# main.c do_sanity_checks: the sentence the checker stops at when the config is sound
STANDALONE_NOT_SET = "not configured for standalone, must be started from inetd"


def truthy(value: str) -> bool | None:
    """parseconf.c's boolean: YES/TRUE/1 or NO/FALSE/0 in any case; None for anything else."""
    upper = value.upper()
    if upper in ("YES", "TRUE", "1"):
        return True
    if upper in ("NO", "FALSE", "0"):
        return False
    return None


def _setting(line: str, settings: dict[str, str]) -> None:
    """vsf_parseconf_load_setting: leading space dropped, split at the first "="."""
    name, _, value = line.lstrip(" \t\n\v\f\r").partition("=")
    settings[name] = value


def _load_file(path: str, settings: dict[str, str]) -> None:
    try:
        text = read_file(path, CONF_FILE_MAX).decode(errors="replace")
    except OSError:
        raise ConfigError(
            f'vsftpd would refuse to start: "cannot read config file: {path}".'
        ) from None
    for line in text.split("\n"):
        if not line or line.startswith("#") or line.isspace():
            continue
        _setting(line, settings)


def read_settings(argv: Sequence[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Every setting as vsftpd's main.c and parseconf.c read ``argv`` (the last one wins),
    and the files read. Names are not checked here: the checker (vsftpd itself) does that."""
    settings: dict[str, str] = {}
    files: list[str] = []
    for word in argv[1:]:
        if not word.startswith("-"):
            files.append(word)
            _load_file(word, settings)
        elif word[1:2] == "o":
            _setting(word[2:], settings)
        else:
            raise UsageError(
                f'vsftpd would refuse to start: "unrecognise option: {word}" (it takes config '
                "files and -oNAME=VALUE); fix COMMAND."
            )
    if not files and os.path.exists(DEFAULT_CONFIG):
        # main.c: the default file is loaded after every -o setting, so its values win
        _load_file(DEFAULT_CONFIG, settings)
        files.append(DEFAULT_CONFIG)
    return settings, tuple(files)


def _flag(settings: Mapping[str, str], name: str) -> bool:
    return truthy(settings.get(name, "")) is True


def _jail_of(directory: str) -> str:
    """The pre-login process chroot()s from the listener's directory (jailshim's own)."""
    return os.path.normpath(
        directory if directory.startswith("/") else os.path.join(os.getcwd(), directory)
    )


class _Vsftpd(Adapter):
    """vsftpd: secure_chroot_dir from its config; vsftpd itself parses, stopping early."""

    name = "vsftpd"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        from jailshim.spec import WaitTarget

        settings, files = read_settings(argv)
        listen, listen6 = _flag(settings, "listen"), _flag(settings, "listen_ipv6")
        if not listen and not listen6:
            raise ConfigError(
                f'vsftpd would exit: "vsftpd: {STANDALONE_NOT_SET}" (neither listen nor '
                "listen_ipv6 is YES); set listen=YES or listen_ipv6=YES for a standalone vsftpd."
            )
        if listen and listen6:
            raise ConfigError(
                'vsftpd would exit: "run two copies of vsftpd for IPv4 and IPv6" (listen and '
                "listen_ipv6 are both YES); set one of them."
            )
        secure = settings.get("secure_chroot_dir", DEFAULT_SECURE_CHROOT_DIR)
        if not secure:
            raise ConfigError(
                'vsftpd would refuse every connection: "vsftpd: not found: directory given in '
                "'secure_chroot_dir':\" (it is set empty); give it a directory."
            )
        jail = _jail_of(secure)
        port = settings.get("listen_port", "21")
        # a wildcard (no listen_address) is usable at once: nothing to wait for
        address = settings.get("listen_address6" if listen6 else "listen_address", "")
        where = files[-1] if files else "vsftpd -o"
        notes = []
        if _flag(settings, "chroot_local_user") or _flag(settings, "chroot_list_enable"):
            notes.append(
                "chroot_local_user/chroot_list_enable: each local user's home is a jail of its "
                "own, the operator's to prepare; vsftpd refuses one its user can write "
                '("refusing to run with writable root inside chroot()") unless '
                "allow_writeable_chroot=YES"
            )
        logs = _flag(settings, "syslog_enable") or _flag(settings, "tcp_wrappers")
        return DaemonPlan(
            files=files,
            chroot=jail,
            sockets=("/dev/log",) if logs else (),
            wait_targets=(WaitTarget(address, f"{where}: listen_port={port}"),) if address else (),
            notes=tuple(notes),
            read=(
                ("secure_chroot_dir", jail),
                ("nopriv_user", settings.get("nopriv_user", "nobody")),
                ("listen_port", port),
            ),
        )

    def check_config(self, argv: Sequence[str]) -> None:
        # vsftpd writes its "500 OOPS" to fd 0 (the FTP command connection): a shell makes
        # its stdin the pipe jailshim reads, which is no socket, so it stops at the sanity check
        check = [
            "/bin/sh",
            "-c",
            'exec "$@" 0>&1',
            "vsftpd",
            *argv,
            "-olisten=NO",
            "-olisten_ipv6=NO",
        ]
        code, output = checkconf.run(check, "vsftpd")
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        if any(STANDALONE_NOT_SET in ln for ln in lines):
            return
        words = " | ".join(lines[-3:]) or f"exit status {code}"
        raise ConfigError(
            f"vsftpd rejected its configuration (`{' '.join(argv)}`, run up to its sanity "
            f"check, exit {code}): {words}",
            vsftpd_output=lines[-20:],
        )


ADAPTER = _Vsftpd()
