"""PowerDNS Recursor: `chroot=`, `setuid=`, `setgid=` as pdns_recursor itself reads them.

`pdns_recursor ARGS --config=diff` prints every setting that differs from its default after
reading the same file and command line a start reads (pdns/recursordist/rec-main.cc, 4.8:
laxFile(configname) then laxParse(argc, argv); the file is CONFIG-DIR/recursor.conf, or
recursor-NAME.conf with --config-name). `--config=check` is the checker: the file and argv
parsed strictly (an unknown setting is refused), nothing opened. Settings on the command line
are `--name=value` (pdns/arguments.cc, ArgvMap::parseOne); a later one wins.

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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from jailshim.daemons import Adapter, DaemonPlan, checkconf
from jailshim.errors import ConfigError

if TYPE_CHECKING:
    from jailshim.spec import Identity, WaitTarget

__all__ = [
    "ADAPTER",
    "config_file",
    "identity_as_set",
    "local_addresses",
    "parse_diff",
    "settings_of",
]

DEFAULT_CONFIG_DIR = "/etc/powerdns"  # Debian's SYSCONFDIR build: `pdns_recursor --config`
_DEFAULTS = {"local-address": "127.0.0.1", "local-port": "53"}  # rec-main.cc, 4.8
_NOTIFY_REFUSAL = (
    "Unable to chroot when running from systemd. Please disable chroot= or set the 'Type' for "
    "this service to 'simple'"
)


def settings_of(argv: Sequence[str]) -> dict[str, str]:
    """The `--name=value` settings of pdns_recursor's command line (`--name` alone is "";
    `--name+=value` appends), as ArgvMap::parseOne reads them; other words are passed over."""
    found: dict[str, str] = {}
    for word in argv[1:]:
        if not word.startswith("--"):
            continue
        name, equals, value = word[2:].partition("=")
        value = value.lstrip(" \t")
        if name.endswith("+") and equals:
            name = name[:-1].strip()
            found[name] = f"{found[name]}, {value}" if found.get(name) else value
            continue
        found[name.strip()] = value
    return found


def config_file(argv: Sequence[str]) -> str:
    """The file pdns_recursor reads (rec-main.cc: configname)."""
    settings = settings_of(argv)
    directory = settings.get("config-dir") or DEFAULT_CONFIG_DIR
    name = settings.get("config-name", "")
    path = f"{directory}/recursor-{name}.conf" if name else f"{directory}/recursor.conf"
    return os.path.normpath(path)


def parse_diff(text: str) -> dict[str, str]:
    """`--config=diff`'s lines: `name=value` (ArgvMap::configstring), `#` a comment."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def local_addresses(value: str, port: str) -> list[tuple[str, str]]:
    """(IP text, the item as written) for each of `local-address`'s items: separated by spaces
    or commas, each an address or ADDRESS:PORT ([v6]:PORT), as ComboAddress reads them."""
    found = []
    for item in value.replace(",", " ").split():
        host = item
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        found.append((host, item if item != host else f"{item} (port {port})"))
    return found


def _rejected(argv: Sequence[str], code: int, output: str) -> ConfigError:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    # its structured log lines start with a syslog-style stamp: "Dec 05 01:41:21 msg=…"
    lines = [ln.split(" ", 3)[3] if ln[:3].isalpha() and ln.count(" ") >= 3 else ln for ln in lines]
    words = " | ".join(lines[-3:]) or f"exit status {code}"
    return ConfigError(
        f"pdns_recursor rejected its configuration (`{' '.join(argv)}`, exit {code}): {words}",
        pdns_output=lines[-20:],
    )


def _jail_of(chroot: str) -> str | None:
    """chroot(chroot) from the directory it started in: daemonize() does not move it
    (rec-main.cc), so a relative jail is taken from jailshim's own, which exec keeps."""
    if not chroot:
        return None
    path = chroot if chroot.startswith("/") else os.path.join(os.getcwd(), chroot)
    return os.path.normpath(path)


def _targets(
    values: Mapping[str, str], where: str
) -> tuple[tuple[WaitTarget, ...], tuple[str, ...]]:
    from jailshim.daemons import ip_wait_targets

    port = values.get("local-port", _DEFAULTS["local-port"])
    addresses = local_addresses(values.get("local-address", _DEFAULTS["local-address"]), port)
    return ip_wait_targets(
        (host, f"{where}: local-address {item}", f"{where}: local-address {item}")
        for host, item in addresses
    )


class _PdnsRecursor(Adapter):
    """pdns_recursor: chroot, setuid, setgid from `--config=diff`; `--config=check` checks."""

    name = "pdns_recursor"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        file = config_file(argv)
        dump = [argv[0], *argv[1:], "--config=diff"]
        code, out, err = checkconf.Tool(dump, "pdns-recursor").communicate(argv[0])
        if code != 0:
            raise _rejected(dump, code, out + err)
        values = parse_diff(out)
        chroot = _jail_of(values.get("chroot", ""))
        if chroot and env.get("NOTIFY_SOCKET"):
            raise ConfigError(
                f"pdns_recursor would refuse to start: {_NOTIFY_REFUSAL!r} (chroot={chroot} in "
                f"{file}, and $NOTIFY_SOCKET is set); run it as Type=simple, as it says.",
                chroot=chroot,
            )
        if chroot and values.get("api-config-dir"):
            raise ConfigError(
                "pdns_recursor would refuse to start: 'Using chroot and enabling the API is not "
                f"possible' (chroot={chroot}, api-config-dir={values['api-config-dir']} in "
                f"{file}); give one of them."
            )
        syslog = values.get("disable-syslog", "no") in ("no", "off")  # ArgvMap::mustDo
        socket_dir = values.get("socket-dir") or ("/" if chroot else "")
        read = [("tool", f"{argv[0]} --config=diff")]
        if chroot:
            # its pid file and control socket, made there as root before its setuid
            read.append(("socket_dir", os.path.normpath(f"{chroot}/{socket_dir}")))
        targets, more = _targets(values, file)
        return DaemonPlan(
            files=(file,),
            chroot=chroot,
            user=values.get("setuid") or None,
            group=values.get("setgid") or None,
            sockets=("/dev/log",) if syslog else (),
            wait_targets=targets,
            notes=more,
            read=tuple(read),
        )

    def check_config(self, argv: Sequence[str]) -> None:
        check = [argv[0], *argv[1:], "--config=check"]
        code, output = checkconf.run(check, "pdns-recursor")
        if code != 0:
            raise _rejected(check, code, output)

    def config_argv(self, command: str, path: str) -> list[str]:
        """pdns_recursor names its file by directory and name: CONFIG-DIR/recursor.conf or
        CONFIG-DIR/recursor-NAME.conf, nothing else."""
        directory, name = os.path.split(os.path.abspath(path))
        if name == "recursor.conf":
            return [command, f"--config-dir={directory}"]
        if name.startswith("recursor-") and name.endswith(".conf"):
            config_name = name.removeprefix("recursor-").removesuffix(".conf")
            return [command, f"--config-dir={directory}", f"--config-name={config_name}"]
        raise ConfigError(
            f"pdns_recursor reads only DIR/recursor.conf or DIR/recursor-NAME.conf, not {path}; "
            "name its file so."
        )

    def identity(self, identity: Identity, config: DaemonPlan, *, group_given: bool) -> Identity:
        return identity_as_set(identity, group_given=group_given)


def identity_as_set(identity: Identity, *, group_given: bool) -> Identity:
    """The uid, gid and groups pdns_recursor really runs with: dropGroupPrivs() acts only on a
    non-zero `setgid`, then initgroups(user, gid) — the user's memberships, what jailshim
    resolves; without one it keeps the gid and groups it started with (root's here)."""
    if group_given and identity.gid != 0:
        return identity
    return identity._replace(gid=os.getgid(), groups=tuple(sorted(set(os.getgroups()))))


ADAPTER = _PdnsRecursor()
