"""unbound: its jail and identity as unbound itself reads them, through unbound-checkconf.

`unbound-checkconf -o OPTION [FILE]` prints one option's value after reading FILE exactly as
unbound does (includes, defaults compiled in); FILE is unbound's `-c FILE`, else its default.
One option per run, so the questions are asked side by side. `unbound-checkconf FILE` is the
checker. unbound opens syslog (/dev/log) before it chroots and sends READY=1 to
$NOTIFY_SOCKET after, so both must be reachable inside the jail.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from jailshim.daemons import Adapter, DaemonPlan, checkconf
from jailshim.daemons.getopt import options_of
from jailshim.errors import ConfigError

__all__ = ["ADAPTER", "config_file", "relative_chroot"]

_GETOPT = "c:dhpvw:V"  # unbound.c's getopt string
_ASKED = ("chroot", "username", "directory", "use-syslog", "interface")


def config_file(argv: Sequence[str]) -> str | None:
    """The FILE of unbound's last `-c FILE` (getopt: -cFILE, -dc FILE), or None (its default)."""
    files = options_of("unbound", argv, _GETOPT).get("c")
    return files[-1] if files else None


def _checkconf(argv: Sequence[str]) -> str:
    """unbound-checkconf beside the unbound that will run, else the one on PATH."""
    beside = os.path.join(os.path.dirname(argv[0]), "unbound-checkconf")
    if os.path.dirname(argv[0]) and os.access(beside, os.X_OK):
        return beside
    return "unbound-checkconf"


def _rejected(tool: str, file: str | None, code: int, output: str) -> ConfigError:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln and not ln.startswith("read ")]
    words = " | ".join(errors or lines[-3:]) or f"exit status {code}"
    return ConfigError(
        f"unbound rejected its configuration ({os.path.basename(tool)} "
        f"{file or '(its default file)'}, exit {code}): {words}",
        unbound_output=lines[-20:],
    )


def relative_chroot(chroot: str, file: str | None) -> ConfigError:
    """The refusal of a relative `chroot:`: unbound takes it from a directory jailshim cannot
    know. Each `directory:` statement chdir()s there as the file is parsed (server_directory,
    util/configparser.y: "change there right away for includes relative to this"), then
    perform_setup() (daemon/unbound.c) does chdir(chroot) and chroot(chroot) from wherever that
    left it: `chroot: ".."` from /a/b/c is /a with no `directory:`, and / with `directory:
    ".."` — and unbound-checkconf -o prints only the last `directory:`, or the compiled-in
    default that was never entered."""
    return ConfigError(
        f"unbound's chroot {chroot!r} ({file or 'its default file'}) is a relative path, which "
        "unbound takes from the directory its `directory:` lines and the chroot itself lead "
        "to, not from where it starts; give the jail as an absolute path."
    )


class _Unbound(Adapter):
    """unbound: chroot, username and directory from unbound-checkconf -o; it is the checker."""

    name = "unbound"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        tool, file = _checkconf(argv), config_file(argv)
        tail = [file] if file is not None else []
        values, failed = checkconf.ask(tool, _ASKED, tail, "unbound")
        if failed is not None:
            raise _rejected(tool, file, *failed)

        def one(opt: str) -> str | None:
            return values[opt][-1] if values[opt] else None

        chroot, user, directory = one("chroot"), one("username"), one("directory")
        syslog = one("use-syslog") == "yes"
        targets, notes = checkconf.ip_targets(
            values["interface"], file or "unbound.conf", "interface"
        )
        if chroot and not chroot.startswith("/"):
            raise relative_chroot(chroot, file)
        read = [("tool", tool), ("directory", directory or "")]
        if syslog:
            read.append(("use_syslog", "yes"))
        return DaemonPlan(
            files=(file or "(unbound's default file)",),
            chroot=chroot or None,  # "" is no chroot
            user=user or None,  # "" is no change of user
            sockets=("/dev/log",) if syslog else (),
            wait_targets=targets,
            notes=notes,
            read=tuple(read),
            notify=True,
        )

    def check_config(self, argv: Sequence[str]) -> None:
        tool, file = _checkconf(argv), config_file(argv)
        code, output = checkconf.run([tool, *([file] if file is not None else [])], "unbound")
        if code != 0:
            raise _rejected(tool, file, code, output)

    def config_argv(self, command: str, path: str) -> list[str]:
        return [command, "-c", path]


ADAPTER = _Unbound()
