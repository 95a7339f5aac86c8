"""PowerDNS Recursor: `chroot=`, `setuid=`, `setgid=` as pdns_recursor itself reads them.

`pdns_recursor ARGS --config=diff` prints every setting that differs from its default after
reading the same file and command line a start reads (pdns/recursordist/rec-main.cc, 4.8:
laxFile(configname) then laxParse(argc, argv); the file is CONFIG-DIR/recursor.conf, or
recursor-NAME.conf with --config-name). `--config=check` is the checker: the file and argv
parsed strictly (an unknown setting is refused), nothing opened. Settings on the command line
are `--name=value` (pdns/arguments.cc, ArgvMap::parseOne); a later one wins. What it shares
with pdns_server (settings, dump, identity rule, the Type=notify refusal) is in pdns_common.

What pdns_recursor does with them (rec-main.cc, 4.8): the listening sockets, the Lua config,
auth-zones and the hint file are read first; then dropGroupPrivs() sets `setgid` and the
setuid user's groups (initgroups) — only when a non-zero setgid is given: without one it keeps
the gid and groups it started with (pdns/unix_utility.cc) —, chroot(), chdir("/"); the pid file
and the control socket are made in `socket-dir`, which is "/" inside the jail when it is unset;
then setuid. It logs to syslog (/dev/log, inside the jail from then on) unless
`disable-syslog`. With a chroot and $NOTIFY_SOCKET set it refuses to start ("Unable to chroot
when running from systemd", HAVE_SYSTEMD): a chrooted recursor cannot run under Type=notify,
whatever is in its jail, so jailshim refuses that run before preparing anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from jailshim.daemons import DaemonPlan
from jailshim.daemons.pdns_common import (
    PdnsAdapter,
    identity_as_set,
    identity_settings,
    jail_of,
    local_addresses,
    missing_inside,
    must_do,
    parse_diff,
    refuse_notify_socket,
    settings_of,
    socket_directory,
    wait_targets,
)
from jailshim.daemons.pdns_common import config_file as _config_file
from jailshim.errors import ConfigError

__all__ = [
    "ADAPTER",
    "config_file",
    "identity_as_set",
    "local_addresses",
    "opened_in_jail",
    "parse_diff",
    "settings_of",
]

_DEFAULTS = {"local-address": "127.0.0.1", "local-port": "53"}  # rec-main.cc, 4.8
_TRUST_ANCHORS = re.compile(r"""readTrustAnchorsFromFile\(\s*["']([^"']+)["']""")
_DOFILE = re.compile(r"""dofile\(\s*["']([^"']+)["']""")


def opened_in_jail(values: Mapping[str, str]) -> tuple[str, ...]:
    """Host files the chrooted recursor opens again at the same path inside its jail:
    `hint-file` (each thread primes the root hints from it after the chroot, and again at
    every root refresh: Debian's /usr/share/dns/root.hints missing there killed the threads,
    "Exception in RecursorThread: Unable to open file", and nothing was answered), and the
    files its Lua config names in readTrustAnchorsFromFile() (re-read every 24 h by default,
    inside the jail). The Lua config is read as text, not run: its file and the files it
    dofile()s, one level (Debian's recursor.lua dofile()s rootkeys.lua)."""
    found = [values["hint-file"]] if values.get("hint-file") else []
    lua = _lua_text(values.get("lua-config-file", ""))
    for included in _DOFILE.findall(lua):
        lua += "\n" + _lua_text(included)
    found.extend(_TRUST_ANCHORS.findall(lua))
    return tuple(dict.fromkeys(os.path.normpath("/" + p.lstrip("/")) for p in found))


_LUA_MAX = 1 << 20  # Debian's recursor.lua and rootkeys.lua are a few KiB


def _lua_text(path: str) -> str:
    """A Lua file's text without its line comments (`-- …`: Debian's files hold commented
    examples); "" when unset, unreadable or no regular file (the recursor's checker judges
    that). Opened non-blocking, at most 1 MiB: the recursor's dump never opens it, and a FIFO
    there held jailshim (root) in open() for ever, a dofile("/dev/zero") read without end."""
    from jailshim.daemons import read_regular

    text = (read_regular(path, _LUA_MAX) or b"").decode(errors="replace") if path else ""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def config_file(argv: Sequence[str]) -> str:
    """The file pdns_recursor reads (rec-main.cc: configname)."""
    return _config_file(argv, "recursor")


class _PdnsRecursor(PdnsAdapter):
    """pdns_recursor: chroot, setuid, setgid from `--config=diff`; `--config=check` checks."""

    name = "pdns_recursor"
    stem = "recursor"
    package = "pdns-recursor"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        file = config_file(argv)
        values = self.settings(argv)
        chroot = jail_of(values.get("chroot", ""))
        refuse_notify_socket("pdns_recursor", chroot, file, env)
        if chroot and values.get("api-config-dir"):
            raise ConfigError(
                "pdns_recursor would refuse to start: 'Using chroot and enabling the API is not "
                f"possible' (chroot={chroot}, api-config-dir={values['api-config-dir']} in "
                f"{file}); give one of them."
            )
        syslog = not must_do(values.get("disable-syslog", "no"))
        read = [("tool", f"{argv[0]} --config=diff")]
        if chroot:
            # its pid file and control socket, made there as root before its setuid; the
            # recursor makes no directory for them (rec-main.cc checkSocketDir)
            sockets_in = socket_directory(values, env, chroot, "/var/run/pdns-recursor")
            read.append(("socket_dir", sockets_in))
            in_jail = sockets_in.removeprefix(chroot.rstrip("/")) or "/"
            if os.path.isdir(chroot) and missing_inside(chroot, in_jail, directory=True):
                raise ConfigError(
                    "pdns_recursor would exit 'Problem with socket directory' (it does not "
                    f"exist or cannot access): it makes its control socket in {sockets_in} "
                    f"after chroot={chroot}"
                    + (
                        f" (socket-dir is $RUNTIME_DIRECTORY={env['RUNTIME_DIRECTORY']}, "
                        "systemd's RuntimeDirectory=, when unset)"
                        if not values.get("socket-dir") and env.get("RUNTIME_DIRECTORY")
                        else ""
                    )
                    + "; set socket-dir=/ (the jail's root), or make that directory.",
                    chroot=chroot,
                )
        reread = opened_in_jail(values) if chroot else ()
        if reread:
            read.append(("jail_files", ", ".join(reread)))
        user, group, said = identity_settings("pdns_recursor", values, file)
        targets, more = wait_targets(values, file, _DEFAULTS)
        return DaemonPlan(
            files=(file,),
            chroot=chroot,
            user=user,
            group=group,
            sockets=("/dev/log",) if syslog else (),
            wait_targets=targets,
            notes=(*said, *more),
            read=tuple(read),
            jail_files=reread,
        )


ADAPTER = _PdnsRecursor()
