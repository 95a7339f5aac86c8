"""nsd: its jail and identity as nsd reads them, through nsd-checkconf; its argv wins.

`nsd-checkconf -o OPTION FILE` prints one option's value as nsd reads FILE (nsd's `-c FILE`,
else /etc/nsd/nsd.conf); nsd's own `-t DIR` and `-u USER` override the file, as in nsd.
`nsd-checkconf FILE` is the checker. nsd logs to syslog (/dev/log) unless `logfile:` is set.
Debian's nsd.service is Type=notify, and nsd 4.6 sends READY=1 from xfrd (the parent after the
fork, so the unit's main PID), chrooted and as its user: $NOTIFY_SOCKET must be in the jail.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from jailshim.daemons import Adapter, DaemonPlan, checkconf
from jailshim.daemons.getopt import options_of
from jailshim.errors import ConfigError

__all__ = ["ADAPTER", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = "/etc/nsd/nsd.conf"  # nsd -h: "instead of /etc/nsd/nsd.conf"
_GETOPT = "46a:c:df:hi:I:l:N:n:P:p:s:u:t:X:V:v"  # nsd.c (4.6), as nsd -h lists them
_ASKED = ("chroot", "username", "logfile", "ip-address")


def _checkconf(argv: Sequence[str]) -> str:
    """nsd-checkconf beside the nsd that will run, else the one on PATH."""
    beside = os.path.join(os.path.dirname(argv[0]), "nsd-checkconf")
    if os.path.dirname(argv[0]) and os.access(beside, os.X_OK):
        return beside
    return "nsd-checkconf"


def _rejected(tool: str, file: str, code: int, output: str) -> ConfigError:
    lines = list(dict.fromkeys(ln.strip() for ln in output.splitlines() if ln.strip()))
    words = " | ".join(lines[-4:]) or f"exit status {code}"
    return ConfigError(
        f"nsd rejected its configuration ({os.path.basename(tool)} {file}, exit {code}): {words}",
        nsd_output=lines[-20:],
    )


class _Nsd(Adapter):
    """nsd: chroot and username from nsd-checkconf -o (nsd's -t/-u win); it is the checker."""

    name = "nsd"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        tool, opts = _checkconf(argv), options_of("nsd", argv, _GETOPT)
        file = opts.get("c", [DEFAULT_CONFIG])[-1]
        values, failed = checkconf.ask(tool, _ASKED, [file], "nsd")
        if failed is not None:
            raise _rejected(tool, file, *failed)

        def one(opt: str, letter: str) -> str | None:
            if letter in opts:  # nsd's command line wins over its config
                return opts[letter][-1]
            return values[opt][-1] if values[opt] else None

        chroot, user = one("chroot", "t"), one("username", "u")
        if chroot and not chroot.startswith("/"):
            # nsd.c (main): chdir(zonesdir), then "zonesdir has to be an absolute path that
            # starts with the chroot path", then chroot(chroot) from inside zonesdir: a relative
            # chroot names one directory to nsd's check and another to chroot(2).
            raise ConfigError(
                f"nsd's chroot {chroot!r} ({'-t' if 't' in opts else file}) is a relative path, "
                "which nsd takes from its zonesdir, not from where it starts; give the jail as "
                "an absolute path."
            )
        logfile = one("logfile", "l")
        addresses = opts.get("a") or values["ip-address"]
        targets, notes = checkconf.ip_targets(addresses, file, "ip-address")
        read = [("tool", tool)]
        read += [(f"argv_{k}", opts[k][-1]) for k in ("t", "u") if k in opts]
        if logfile:
            read.append(("logfile", logfile))
        return DaemonPlan(
            files=(file,),
            chroot=(chroot.rstrip("/") or "/") if chroot else None,  # nsd-checkconf adds a /
            user=user or None,
            sockets=() if logfile else ("/dev/log",),
            wait_targets=targets,
            notes=notes,
            read=tuple(read),
            notify=True,
        )

    def check_config(self, argv: Sequence[str]) -> None:
        tool = _checkconf(argv)
        file = options_of("nsd", argv, _GETOPT).get("c", [DEFAULT_CONFIG])[-1]
        code, output = checkconf.run([tool, file], "nsd")
        if code != 0:
            raise _rejected(tool, file, code, output)

    def config_argv(self, command: str, path: str) -> list[str]:
        return [command, "-c", path]


ADAPTER = _Nsd()
