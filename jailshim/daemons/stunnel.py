"""stunnel: `chroot =`, `setuid =`, `setgid =` from its config's global section.

stunnel has no config checker, so its file is read here as stunnel reads it (options.c): one
`option = value` per line, blanks around both trimmed, option names case-insensitive; `;` and
`#` start comment lines; `[name]` starts a service, ending the global section. A line that is
none of these is stunnel's "Invalid line" and ours: exit 78 with file:line. The file is
stunnel's first argument (default /etc/stunnel/stunnel.conf); `-fd N` is passed over.
stunnel logs to syslog (/dev/log) unless `syslog = no`.

Its identity is set as drop_privileges() (src/stunnel.c, 5.68) sets it: only a non-zero gid is
set, with setgid(gid) and setgroups(1, [gid]); without one (no `setgid =`, or root's) it keeps
the gid and groups it started with, so the check runs with jailshim's own (root's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from jailshim.daemons import Adapter, DaemonPlan, read_file
from jailshim.errors import ConfigError

if TYPE_CHECKING:
    from jailshim.spec import Identity, WaitTarget

__all__ = ["ADAPTER", "DEFAULT_CONFIG", "identity_as_set", "parse"]

DEFAULT_CONFIG = "/etc/stunnel/stunnel.conf"


_SPACE = " \t\n\v\f\r"  # C isspace() in the C locale, what stunnel trims
_BOM = "\ufeff"  # a UTF-8 byte order mark, skipped on line 1 (Debian's sample starts with one)


def parse(path: str, text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The global section's options (last one wins, names lower-cased) and every service's
    `accept` with its file:line; a line stunnel would refuse is a ConfigError with file:line."""
    options: dict[str, str] = {}
    accepts: list[tuple[str, str]] = []
    in_global = True
    for number, raw in enumerate(text.split("\n"), 1):
        line = (raw.removeprefix(_BOM) if number == 1 else raw).strip(_SPACE)
        if not line or line[0] in ";#":
            continue
        where = f"{path}:{number}"
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"stunnel configuration {where}: invalid service name {line!r}.")
            in_global = False
            continue
        if "=" not in line:
            raise ConfigError(
                f"stunnel configuration {where}: invalid line {line!r} (stunnel wants "
                "`option = value`)."
            )
        name, value = (part.strip(_SPACE) for part in line.split("=", 1))
        if in_global:
            options[name.lower()] = value
        elif name.lower() == "accept":
            accepts.append((value, where))
    return options, accepts


def _jail_of(chroot: str) -> str | None:
    """The directory stunnel chroots to: change_root() (src/stunnel.c) runs chroot() in
    main_configure(), before daemonize() moves to / (src/ui_unix.c, main_unix), so a relative
    chroot is taken from the directory stunnel starts in (jailshim's own, kept by exec)."""
    if not chroot:
        return None
    path = chroot if chroot.startswith("/") else os.path.join(os.getcwd(), chroot)
    return path.rstrip("/") or "/"


def config_file(argv: Sequence[str]) -> str | None:
    """stunnel's configuration file: its first argument unless an option; None: -fd N."""
    if len(argv) < 2:
        return DEFAULT_CONFIG
    if argv[1] == "-fd":
        return None
    return argv[1] if not argv[1].startswith("-") else DEFAULT_CONFIG


class _Stunnel(Adapter):
    """stunnel: its global section's chroot, setuid, setgid; its own parse errors, 78."""

    name = "stunnel"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        path = config_file(argv)
        if path is None:
            raise ConfigError(
                "stunnel reads its configuration from a file descriptor (-fd), which jailshim "
                "cannot read ahead; give stunnel a configuration file."
            )
        try:
            data = read_file(path, 16 << 20)  # never a FIFO's open(), nor an endless read
            text = (
                data.decode("utf-8", errors="surrogateescape")
                .replace("\r\n", "\n")
                .replace("\r", "\n")
            )  # as universal newlines
        except OSError as exc:
            raise ConfigError(
                f"stunnel's configuration {path} cannot be read ({exc.strerror}); give its "
                "file as stunnel's first argument."
            ) from None
        options, accepts = parse(path, text)
        notes = []
        if "include" in options:
            notes.append(f"{path}: include = {options['include']} is not read; flags win")
        targets, more = _targets(accepts)
        syslog = options.get("syslog", "yes").lower() != "no"
        return DaemonPlan(
            files=(path,),
            chroot=_jail_of(options.get("chroot", "")),
            user=options.get("setuid") or None,
            group=options.get("setgid") or None,
            sockets=("/dev/log",) if syslog else (),
            wait_targets=targets,
            notes=(*notes, *more),
        )

    def config_argv(self, command: str, path: str) -> list[str]:
        return [command, path]

    def identity(self, identity: Identity, config: DaemonPlan, *, group_given: bool) -> Identity:
        return identity_as_set(identity, group_given=group_given)


def identity_as_set(identity: Identity, *, group_given: bool) -> Identity:
    """The uid, gid and groups stunnel really runs with (see the module's docstring)."""
    if group_given and identity.gid != 0:
        return identity._replace(groups=(identity.gid,))
    return identity._replace(gid=os.getgid(), groups=tuple(sorted(set(os.getgroups()))))


def _targets(
    accepts: Sequence[tuple[str, str]],
) -> tuple[tuple[WaitTarget, ...], tuple[str, ...]]:
    """The IPs of `accept = HOST:PORT` lines to wait for (a bare port binds every address)."""
    from jailshim.daemons import ip_wait_targets

    return ip_wait_targets(
        (value.rsplit(":", 1)[0].strip("[]"), f"{where}: accept", f"{where}: accept = {value}")
        for value, where in accepts
        if ":" in value  # a port alone: every address
    )


ADAPTER = _Stunnel()
