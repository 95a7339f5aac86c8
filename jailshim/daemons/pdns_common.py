"""What PowerDNS's Authoritative Server (4.7) and Recursor (4.8) share: one settings format
(pdns/arguments.cc, ArgvMap, the same file in both), the same dump and checker modes
(`--config=diff`, `--config=check`), the same jail and identity settings (`chroot=`,
`setuid=`, `setgid=`; pdns/unix_utility.cc dropGroupPrivs) and the same refusal of a chroot
under systemd's Type=notify. Each daemon's module says what it does with them.

Settings are `--name=value` words on the command line and `name=value` lines in the file
(ArgvMap::parseOne: `--name` alone is "", `-name` too, `--name+=value` appends, a later one
wins); ArgvMap::parseFile strips a `#` comment (first `#` only, at the start or after a
space), joins `\\`-continued lines and trims; ArgvMap::file then reads include-dir's `*.conf`
(no dot files), sorted case-insensitively.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from jailshim.daemons import Adapter
from jailshim.errors import ConfigError

if TYPE_CHECKING:
    from jailshim.daemons import DaemonPlan
    from jailshim.spec import Identity, WaitTarget

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "PdnsAdapter",
    "config_argv",
    "config_file",
    "file_words",
    "identity_as_set",
    "identity_settings",
    "include_files",
    "jail_of",
    "local_addresses",
    "missing_inside",
    "must_do",
    "parse_diff",
    "refuse_notify_socket",
    "rejected",
    "settings_of",
    "socket_directory",
    "wait_targets",
]

DEFAULT_CONFIG_DIR = "/etc/powerdns"  # Debian's SYSCONFDIR build: `--config=default`
NOTIFY_REFUSAL = (
    "Unable to chroot when running from systemd. Please disable chroot= or set the 'Type' for "
    "this service to 'simple'"
)
# their log lines start with a syslog-style stamp unless --log-timestamp=no: "Dec 05 01:41:21 "
_STAMP = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")


def settings_of(argv: Sequence[str], found: dict[str, str] | None = None) -> dict[str, str]:
    """The settings of a command line (argv[0] passed over), as ArgvMap::parseOne reads them:
    `--name=value`, `--name` and `-name` ("" then), `--name+=value` appended with ", ";
    other words (commands) are passed over. ``found``: settings read before, updated."""
    found = {} if found is None else found
    for word in argv[1:]:
        if word.startswith("--") and "+=" in word:
            name, _, value = word[2:].partition("+=")
            name, value = name.strip(), value.lstrip(" \t")
            found[name] = f"{found[name]}, {value}" if found.get(name) else value
            continue
        if word.startswith("--"):
            name, _, value = word[2:].partition("=")
        elif word.startswith("-") and len(word) > 1:
            name, value = word[1:], ""
        else:
            continue
        found[name.strip()] = value.lstrip(" \t")
    return found


def file_words(text: str) -> list[str]:
    """A settings file's lines as the `--name=value` words ArgvMap::parseFile makes of them."""
    words: list[str] = []
    line = ""
    for raw in text.splitlines():
        part = raw.rstrip()
        if part.endswith("\\"):
            line += part[:-1]
            continue
        line += part
        hash_at = line.find("#")
        if hash_at == 0 or (hash_at > 0 and line[hash_at - 1].isspace()):
            line = line[:hash_at]
        line = line.strip(" \t\r\n")
        if line:
            words.append(f"--{line}")
        line = ""
    return words


def include_files(directory: str) -> list[str]:
    """include-dir's `*.conf` files (no dot files), sorted case-insensitively
    (ArgvMap::gatherIncludes); an unreadable directory gives none (the dump said why)."""
    try:
        names = [n for n in os.listdir(directory) if not n.startswith(".") and n.endswith(".conf")]
    except OSError:
        return []
    return sorted((f"{directory}/{n}" for n in names), key=str.lower)


def must_do(value: str) -> bool:
    """ArgvMap::mustDo: anything but "no" and "off" is yes."""
    return value not in ("no", "off")


def config_file(argv: Sequence[str], program: str) -> str:
    """The file the daemon reads: CONFIG-DIR/PROGRAM.conf or PROGRAM-NAME.conf (PROGRAM is
    "pdns" or "recursor"; config-dir and config-name from the command line only)."""
    settings = settings_of(argv)
    directory = settings.get("config-dir") or DEFAULT_CONFIG_DIR
    name = settings.get("config-name", "")
    path = f"{directory}/{program}-{name}.conf" if name else f"{directory}/{program}.conf"
    return os.path.normpath(path)


def config_argv(daemon: str, program: str, command: str, path: str) -> list[str]:
    """The command line that reads ``path``: the daemon names its file by directory and
    name only (CONFIG-DIR/PROGRAM.conf or CONFIG-DIR/PROGRAM-NAME.conf), nothing else."""
    directory, name = os.path.split(os.path.abspath(path))
    if name == f"{program}.conf":
        return [command, f"--config-dir={directory}"]
    if name.startswith(f"{program}-") and name.endswith(".conf"):
        config_name = name.removeprefix(f"{program}-").removesuffix(".conf")
        return [command, f"--config-dir={directory}", f"--config-name={config_name}"]
    raise ConfigError(
        f"{daemon} reads only DIR/{program}.conf or DIR/{program}-NAME.conf, not {path}; "
        "name its file so."
    )


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


def wait_targets(
    values: Mapping[str, str], where: str, defaults: Mapping[str, str]
) -> tuple[tuple[WaitTarget, ...], tuple[str, ...]]:
    """The local-address IPs to wait for (0.0.0.0 and :: need no wait: ip_wait_targets)."""
    from jailshim.daemons import ip_wait_targets

    port = values.get("local-port", defaults["local-port"])
    addresses = local_addresses(values.get("local-address", defaults["local-address"]), port)
    return ip_wait_targets(
        (host, f"{where}: local-address {item}", f"{where}: local-address {item}")
        for host, item in addresses
    )


def rejected(daemon: str, argv: Sequence[str], code: int, output: str) -> ConfigError:
    """The daemon's own last words on its configuration, as one ConfigError (78)."""
    lines = [_STAMP.sub("", ln.strip()) for ln in output.splitlines() if ln.strip()]
    words = " | ".join(lines[-3:]) or f"exit status {code}"
    return ConfigError(
        f"{daemon} rejected its configuration (`{' '.join(argv)}`, exit {code}): {words}",
        pdns_output=lines[-20:],
    )


def jail_of(chroot: str) -> str | None:
    """chroot(chroot) from the directory it started in (neither daemon moves before it), so a
    relative jail is taken from jailshim's own, which exec keeps."""
    if not chroot:
        return None
    path = chroot if chroot.startswith("/") else os.path.join(os.getcwd(), chroot)
    return os.path.normpath(path)


def refuse_notify_socket(
    daemon: str, chroot: str | None, file: str, env: Mapping[str, str]
) -> None:
    """Both exit when chrooted with $NOTIFY_SOCKET set (HAVE_SYSTEMD builds, Debian's): no
    notify socket in the jail can help, so the run is refused before anything is prepared."""
    if chroot and env.get("NOTIFY_SOCKET"):
        raise ConfigError(
            f"{daemon} would refuse to start: {NOTIFY_REFUSAL!r} (chroot={chroot} in {file}, "
            "and $NOTIFY_SOCKET is set); run it as Type=simple, as it says.",
            chroot=chroot,
        )


def identity_settings(
    daemon: str, values: Mapping[str, str], where: str
) -> tuple[str | None, str | None, list[str]]:
    """`setuid` and `setgid` as jailshim's user and group (both read a name first, then a
    number: strToUID, strToGID). A setgid alone leaves the daemon uid 0 (dropUserPrivs(0) does
    nothing) with that gid: jailshim takes no group without a user, so it checks as root and
    says so."""
    user = values.get("setuid") or None
    group = values.get("setgid") or None
    if group and not user:
        note = (
            f"{where}: setgid={group} without setuid=: {daemon} keeps uid 0 (root) in its jail "
            "(unix_utility.cc); jailshim checks the jail as root"
        )
        return None, None, [note]
    return user, group, []


def identity_as_set(identity: Identity, *, group_given: bool) -> Identity:
    """The uid, gid and groups the daemon really runs with: dropGroupPrivs() acts only on a
    non-zero `setgid`, then initgroups(user, gid) — the user's memberships, what jailshim
    resolves; without one it keeps the gid and groups it started with (root's here)."""
    if group_given and identity.gid != 0:
        return identity
    return identity._replace(gid=os.getgid(), groups=tuple(sorted(set(os.getgroups()))))


def socket_directory(
    values: Mapping[str, str], env: Mapping[str, str], chroot: str | None, unjailed: str
) -> str:
    """Where either daemon makes its control socket and pid file (DynListener, writePid):
    socket-dir, whose default is $RUNTIME_DIRECTORY when that is set (so under systemd
    RuntimeDirectory=, never in the diff: it is the default), under the jail as text (chroot +
    socket-dir); the jail itself when neither; ``unjailed`` (its build's LOCALSTATEDIR one)
    without a chroot. A recursor under Debian's unit looked for CHROOT/run/pdns-recursor and
    exited "Problem with socket directory" where jailshim had said the jail's root."""
    socket_dir = values.get("socket-dir") or env.get("RUNTIME_DIRECTORY", "")
    if chroot:
        return os.path.normpath(chroot + "/" + socket_dir)
    return os.path.normpath(socket_dir) if socket_dir else unjailed


def missing_inside(chroot: str, path: str, *, directory: bool = False) -> bool:
    """PATH is surely absent from the jail as the chrooted daemon would see it: a component
    is missing, or the last is no regular file (no directory, with ``directory``). Walked
    with lstat only: a symlink on the way resolves inside the jail for the daemon, not on the
    host, so it is left to the daemon to judge (False), and nothing of a jail not yet judged
    is ever followed."""
    import stat

    parts = [p for p in os.path.normpath("/" + path).split("/") if p]
    current = chroot
    for index, part in enumerate(parts):
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return True
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
        last = index == len(parts) - 1
        kind = stat.S_ISDIR if directory else stat.S_ISREG
        if (last and not kind(mode)) or (not last and not stat.S_ISDIR(mode)):
            return True
    return False


class PdnsAdapter(Adapter):
    """What both PowerDNS adapters do alike: `--config=diff` for the settings,
    `--config=check` over the command line read,
    the file named by directory and name (CONFIG-DIR/STEM.conf or STEM-NAME.conf), and the
    identity dropGroupPrivs() sets. ``stem`` and ``package`` name the daemon's file and
    Debian package."""

    stem = ""
    package = ""

    def settings(self, argv: Sequence[str]) -> dict[str, str]:
        """Every setting that differs from its default, from `ARGV --config=diff`: the file,
        include-dir and command line read as a start reads them; its refusal is 78."""
        from jailshim.daemons import checkconf

        dump = [argv[0], *argv[1:], "--config=diff"]
        code, out, err = checkconf.Tool(dump, self.package).communicate(argv[0])
        if code != 0:
            raise rejected(self.name, dump, code, out + err)
        return parse_diff(out)

    def check_config(self, argv: Sequence[str]) -> None:
        from jailshim.daemons import checkconf

        check = [argv[0], *argv[1:], "--config=check"]
        code, output = checkconf.run(check, self.package)
        if code != 0:
            raise rejected(self.name, check, code, output)

    def config_argv(self, command: str, path: str) -> list[str]:
        return config_argv(self.name, self.stem, command, path)

    def identity(self, identity: Identity, config: DaemonPlan, *, group_given: bool) -> Identity:
        return identity_as_set(identity, group_given=group_given)
