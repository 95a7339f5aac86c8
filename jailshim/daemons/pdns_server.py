"""PowerDNS Authoritative Server 4.7: `chroot=`, `setuid=`, `setgid=` as pdns_server reads them.

Read from pdns/auth-main.cc (tag auth-4.7.3; receiver.cc and common_startup.cc were merged
into it): main() parses argv laxly, then CONFIG-DIR/pdns.conf (pdns-NAME.conf with
--config-name) and its include-dir, then argv again (the command line wins); it loads the
backends' modules (BackendMakers().launch, as root), and `--config=diff` prints every setting
that differs from its default and exits, `--config=check` re-reads file and argv strictly (an
unknown setting is refused) and exits; neither binds, chroots nor opens a backend. Settings
and their format are shared with the recursor (pdns_common).

Backends' own settings (bind-config…) are declared by launch(), after the lax reads dropped
them as unknown: `--config=diff` never shows them (seen with 4.7.3: Debian's bind-config is
missing from it), so jailshim reads them from the same files and argv itself.

What pdns_server does with them: dns_random_init() (rng=auto: getrandom(); rng=urandom or
kiss open entropy-source, /dev/urandom, then — before the chroot, the fd is kept) and the
backend modules are loaded first; it binds its UDP/TCP sockets, makes its control socket and
pid file in CHROOT/socket-dir (CHROOT itself when socket-dir is unset; socket-dir defaults to
$RUNTIME_DIRECTORY, so under systemd CHROOT/run/pdns; one mkdir 0700, as root), then
mainthread(): with a chroot and $NOTIFY_SOCKET it exits ("Unable to chroot when running from
systemd", HAVE_SYSTEMD); dropGroupPrivs (setgid, initgroups; none without a non-zero setgid),
chroot(), chdir("/"), setuid; only then are the backends instantiated (UeberBackend: the bind
backend parses bind-config and its zone files — inside the jail, as the setuid user; a missing
bind-config is fatal: "Unable to open '…'"). Syslog (/dev/log) unless disable-syslog. With
guardian=yes the process jailshim hands over to stays root outside the jail and exec's a
`pdns_server-instance` that chroots (the dump never shows guardian or daemon: main() sets
both to no for --config, so guardian is read from the files). The "Reading random entropy
from '/dev/urandom'" line of older releases is not in 4.7's source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from jailshim.daemons import DaemonPlan, read_regular
from jailshim.daemons.pdns_common import (
    PdnsAdapter,
    config_file,
    file_words,
    identity_settings,
    include_files,
    jail_of,
    missing_inside,
    must_do,
    refuse_notify_socket,
    settings_of,
    socket_directory,
    wait_targets,
)
from jailshim.errors import ConfigError

__all__ = ["ADAPTER", "backend_settings", "bind_configs"]

_DEFAULTS = {"local-address": "0.0.0.0, ::", "local-port": "53"}  # auth-main.cc, 4.7


def backend_settings(argv: Sequence[str], file: str | None, include_dir: str) -> dict[str, str]:
    """Every setting of FILE, include-dir's files and argv, in the order pdns_server reads
    them (the last wins): what its strict re-read gives the backends. ``file`` None:
    --no-config. Unreadable files give nothing (the dump would have said)."""
    found: dict[str, str] = {}
    files = [file, *include_files(include_dir)] if file else []
    for path in files:
        # the dump read them a moment ago, but whoever writes include-dir can have renamed a
        # FIFO or a link to /dev/zero over one since: read_regular never blocks nor reads on
        data = read_regular(path, 4 << 20)
        if data is not None:
            settings_of(["", *file_words(data.decode("utf-8", errors="replace"))], found)
    return settings_of(argv, found)


def bind_configs(launch: str, settings: Mapping[str, str]) -> list[tuple[str, str]]:
    """(setting, path) of each bind backend in `launch` (items `bind` or `bind:NAME`, whose
    settings are bind-config or bind-NAME-config: BackendMakerClass::launch)."""
    found = []
    for item in launch.replace(",", " ").split():
        module, _, name = item.partition(":")
        if module == "bind":
            setting = f"bind-{name}-config" if name else "bind-config"
            if settings.get(setting):
                found.append((setting, settings[setting]))
    return found


def _in_jail(chroot: str, path: str) -> str:
    """PATH as the chrooted server opens it (its working directory is the jail's /)."""
    return os.path.normpath(os.path.join(chroot, path.lstrip("/")))


class _PdnsServer(PdnsAdapter):
    """pdns_server: chroot, setuid, setgid from `--config=diff`; `--config=check` checks."""

    name = "pdns_server"
    stem = "pdns"
    package = "pdns-server"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        given = settings_of(argv)
        file = None if must_do(given.get("no-config", "no")) else config_file(argv, "pdns")
        values = self.settings(argv)
        where = file or "its command line"
        chroot = jail_of(values.get("chroot", ""))
        refuse_notify_socket("pdns_server", chroot, where, env)
        include_dir = values.get("include-dir", "")
        settings = backend_settings(argv, file, include_dir)
        read = [("tool", f"{argv[0]} --config=diff")]
        notes: list[str] = []
        if chroot and os.path.isdir(chroot):  # else jailshim's own "the jail does not exist"
            sockets_in = socket_directory(values, env, chroot, "/var/run/pdns")
            read.append(("socket_dir", sockets_in))
            if not os.path.isdir(os.path.dirname(sockets_in.rstrip("/")) or "/"):
                # Under Debian's pdns.service the operator never wrote that path: say where it
                # came from (a start under systemd named only CHROOT/run/pdns)
                from_unit = not values.get("socket-dir") and env.get("RUNTIME_DIRECTORY")
                raise ConfigError(
                    f"pdns_server makes its control socket in {sockets_in} (socket-dir inside "
                    f"chroot={chroot}"
                    + (
                        f"; socket-dir is $RUNTIME_DIRECTORY={env['RUNTIME_DIRECTORY']}, "
                        "systemd's RuntimeDirectory=, when unset"
                        if from_unit
                        else ""
                    )
                    + ") before it chroots, and would exit 'Unable to create socket directory': "
                    f"{os.path.dirname(sockets_in)} does not exist; make it, or set socket-dir "
                    "to a directory the jail has (socket-dir=/: the jail's root, where "
                    "pdns_control finds it).",
                    chroot=chroot,
                )
            for setting, path in bind_configs(values.get("launch", ""), settings):
                inside = _in_jail(chroot, path)
                read.append((setting.replace("-", "_"), inside))
                if missing_inside(chroot, path):
                    raise ConfigError(
                        f"pdns_server reads {setting}={path} after its chroot, so from "
                        f'{inside}, which is not a file: it would exit "Unable to open '
                        f"'{path}'\". Put it (and its zone files) in the jail {chroot}."
                    )
            others = [
                item
                for item in values.get("launch", "").replace(",", " ").split()
                if item.partition(":")[0] != "bind"
            ]
            if others:
                notes.append(
                    f"backends {', '.join(others)} start after the chroot to {chroot}: the "
                    "files and sockets they open must be inside it"
                )
            # the dump itself runs with guardian=no (main() sets it for --config): read it
            if must_do(settings.get("guardian", "no")):
                notes.append(
                    "guardian=yes: the process jailshim hands over to stays root outside the "
                    "jail; only the instance it starts chroots"
                )
        user, group, said = identity_settings("pdns_server", values, where)
        targets, more = wait_targets(values, where, _DEFAULTS)
        syslog = not must_do(values.get("disable-syslog", "no"))
        return DaemonPlan(
            files=tuple([file, *include_files(include_dir)] if file else ()),
            chroot=chroot,
            user=user,
            group=group,
            sockets=("/dev/log",) if syslog else (),
            wait_targets=targets,
            notes=(*said, *notes, *more),
            read=tuple(read),
        )


ADAPTER = _PdnsServer()
