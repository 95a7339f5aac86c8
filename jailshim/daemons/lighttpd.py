"""lighttpd: `server.chroot`, `server.username`, `server.groupname` as lighttpd itself reads them.

`lighttpd -p -f FILE` prints the configuration lighttpd parsed (includes, include_shell and
variables resolved, values type-checked: a bad value is refused there, exit 255), and returns
before anything is opened (src/server.c, server_main_setup, lighttpd 1.4.69: `if (test_config
|| print_config) return 0` precedes config_set_defaults). `lighttpd -tt -f FILE` is the checker,
the one Debian's lighttpd.service runs as ExecStartPre=: as root it loads the modules and their
certificates, then sets its group, chroot()s and drops to its user as a start does (server.c:
the `i_am_root` block runs in preflight too) — so the jail is judged before it runs.

What lighttpd does with them (server.c, 1.4.69): the listening sockets are bound and the
modules' set_defaults (mod_openssl's ssl.pemfile) run before the chroot (plugin.c,
plugins_call_init); then setgid(server.groupname, else the user's primary group),
setgroups(0), initgroups(username, gid) — the user's memberships, what jailshim gives a user
without --group —, tzset(), chroot(), chdir("/"), setuid(). Its error log is opened after that
(config_log_error_open): a file is opened inside the jail as the user, and with
`server.errorlog-use-syslog` openlog() connects to /dev/log inside the jail. lighttpd's own
random source prefers getentropy() and falls back to /dev/urandom "in chroot environment"
(src/rand.c), as OpenSSL does for TLS; tzset() runs before the chroot, but glibc reads
/etc/localtime again when TZ changes and a CGI child starts afresh inside the jail.

lighttpd reads its argv with glibc's getopt ("f:m:i:hvVD1pt", options anywhere among the
words); only one -f is accepted ("Can only read one config file").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from jailshim.daemons import Adapter, DaemonPlan, checkconf, ip_wait_targets
from jailshim.daemons.getopt import getopt, options_of
from jailshim.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from jailshim.spec import WaitTarget

__all__ = ["ADAPTER", "Dump", "argv_options", "parse_dump", "truthy"]

_GETOPT = "f:m:i:hvVD1pt"  # server.c (1.4.69), server_main_setup
_TOP_LEVEL = re.compile(r"^    ([A-Za-z0-9_.\-]+) *= (.*)$")  # `config {` block, depth 1
_SOCKET = re.compile(r'^\s*(?:else )?\$SERVER\["socket"\] == "((?:[^"\\]|\\.)*)" \{$')
# log_error()'s prefix on what lighttpd prints: its time stamp, not its words
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: ")


def argv_options(argv: Sequence[str]) -> dict[str, list[str]]:
    """Each option letter's values as glibc's getopt reads lighttpd's argv: it permutes, so
    options after a word that is not one still count, up to `--`."""
    found: dict[str, list[str]] = {}
    words = list(argv[1:])
    while words:
        head = [argv[0], *words]
        for letter, values in options_of("lighttpd", head, _GETOPT).items():  # or its refusal
            found.setdefault(letter, []).extend(values)
        rest = getopt(head, _GETOPT).rest  # where that read stopped
        if rest >= len(head) or head[rest - 1] == "--":
            break
        words = head[rest + 1 :]  # a word that is no option: passed over
    return found


class Dump(NamedTuple):
    """What `lighttpd -p` printed that jailshim uses: the global scope's values, unquoted
    (lighttpd prints a string in double quotes with each `"` escaped, src/configfile.c,
    config_print_string), and every `$SERVER["socket"] == "…"` condition."""

    values: dict[str, str]
    sockets: tuple[str, ...]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value  # a number, or an array's opening: used as printed


def parse_dump(text: str) -> Dump:
    """The global scope of `lighttpd -p`'s output: `config {` then one `KEY = VALUE` per line
    indented by four spaces (config_print_config); conditions and arrays are deeper."""
    values: dict[str, str] = {}
    sockets: list[str] = []
    for line in text.splitlines():
        if match := _TOP_LEVEL.match(line):
            values[match.group(1)] = _unquote(match.group(2))
        elif match := _SOCKET.match(line):
            sockets.append(match.group(1).replace('\\"', '"'))
    return Dump(values, tuple(sockets))


# lighttpd's TLS modules: each links its library, which lighttpd itself does not (mod_openssl
# brings libcrypto at run time, plugin.c's dlopen)
_TLS_MODULES = ("mod_openssl", "mod_gnutls", "mod_mbedtls", "mod_wolfssl", "mod_nss")
_MODULES = re.compile(r"^    server\.modules\s*= \((.*?)\)", re.MULTILINE | re.DOTALL)
_MODULE_DIR = "/usr/lib/lighttpd"  # lighttpd -h: "-m <name>  module directory (default: …)"


def tls_libraries(binary: str, dump_text: str, module_dir: str) -> tuple[str, ...]:
    """The crypto libraries lighttpd's TLS modules (in its dumped server.modules) load, as
    lighttpd's own loader resolves them (`ld.so --list MODULE`, no code of theirs run): the
    libraries the probe must reseed, since `ld.so --list lighttpd` finds none."""
    from jailshim.verify.libfind import CommandLibraries

    listed = _MODULES.search(dump_text)
    names = re.findall(r'"([^"]+)"', listed.group(1)) if listed else []
    paths: list[str] = []
    for name in names:
        if name in _TLS_MODULES:
            libs, _ = CommandLibraries(f"{module_dir}/{name}.so", program=binary).result()
            paths += [lib.path for lib in libs if not lib.static]
    return tuple(dict.fromkeys(paths))


def truthy(value: str | None) -> bool:
    """lighttpd's boolean (configfile-glue.c, config_plugin_value_tobool): enable, enabled,
    true, 1 (any case), or a non-zero number; the dump only holds values it accepted."""
    if value is None:
        return False
    if value.lstrip("-").isdigit():
        return int(value) != 0
    return value.lower() in ("enable", "enabled", "true", "1")


def _config_file(argv: Sequence[str]) -> tuple[str, list[str]]:
    """lighttpd's -f FILE and the -m DIR its checker needs, or lighttpd's own refusal."""
    options = argv_options(argv)
    files = options.get("f", [])
    if not files:
        raise UsageError(
            'lighttpd would refuse to start: "No configuration available. Try using -f '
            'option."; give its configuration as `lighttpd -D -f FILE`.'
        )
    if len(files) > 1:
        raise UsageError(
            'lighttpd would refuse to start: "Can only read one config file. Use the include '
            f'command to use multiple config files." (-f {" -f ".join(files)}); give one -f.'
        )
    modules = options.get("m", [])
    return files[0], (["-m", modules[-1]] if modules else [])


def _rejected(argv: Sequence[str], code: int, output: str) -> ConfigError:
    lines = [_STAMP.sub("", ln.strip()) for ln in output.splitlines() if ln.strip()]
    lines = list(dict.fromkeys(lines))
    words = " | ".join(lines[-4:]) or f"exit status {code}"
    return ConfigError(
        f"lighttpd rejected its configuration (`{' '.join(argv)}`, exit {code}): {words}",
        lighttpd_output=lines[-20:],
    )


def _jail_of(chroot: str) -> str | None:
    """The directory lighttpd chroots to: chroot(server.chroot) from the directory it started
    in (with -D it never moves before; daemonize() comes after), so a relative one is taken
    from jailshim's own, which exec keeps."""
    if not chroot:
        return None
    path = chroot if chroot.startswith("/") else os.path.join(os.getcwd(), chroot)
    return os.path.normpath(path)


def _targets(dump: Dump, where: str) -> tuple[tuple[WaitTarget, ...], tuple[str, ...]]:
    """The IPs lighttpd binds: `server.bind` (the global socket) and each `$SERVER["socket"]`
    condition's HOST:PORT (network.c binds one socket per condition); a port alone, 0.0.0.0
    and :: bind every address, a path is a unix socket: nothing to wait for."""
    found: list[tuple[str, str]] = []
    if dump.values.get("server.bind"):
        found.append((dump.values["server.bind"], f"server.bind = {dump.values['server.bind']}"))
    for socket in dump.sockets:
        host = socket.rsplit(":", 1)[0] if ":" in socket else socket
        found.append((host, f'$SERVER["socket"] == "{socket}"'))
    return ip_wait_targets(
        (host.strip("[]"), f"{where}: {said}", f"{where}: {said}")
        for host, said in found
        if host and not host.startswith("/")  # every address, or a unix socket
    )


class _Lighttpd(Adapter):
    """lighttpd: its global server.chroot, server.username, server.groupname from `-p`."""

    name = "lighttpd"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        file, modules = _config_file(argv)
        dump_argv = [argv[0], "-p", "-f", file, *modules]
        code, out, err = checkconf.Tool(dump_argv, "lighttpd").communicate(argv[0])
        if code != 0:
            raise _rejected(dump_argv, code, out + err)
        dump = parse_dump(out)
        values = dump.values
        chroot = _jail_of(values.get("server.chroot", ""))
        user = values.get("server.username") or None
        group = values.get("server.groupname") or None
        notes: list[str] = []
        if group and not user:
            notes.append(
                f"{file}: server.groupname = {group} without server.username: lighttpd keeps "
                "uid 0 (server.c); jailshim checks the jail as root"
            )
            group = None
        syslog = truthy(values.get("server.errorlog-use-syslog")) or truthy(
            values.get("accesslog.use-syslog")
        )
        errorlog = values.get("server.errorlog", "")
        if chroot and errorlog and not truthy(values.get("server.errorlog-use-syslog")):
            notes.append(_errorlog_note(file, errorlog, chroot, user))
        targets, more = _targets(dump, file)
        read = [("tool", f"{argv[0]} -p"), ("port", values.get("server.port", "80"))]
        module_dir = modules[-1] if modules else _MODULE_DIR
        crypto = tls_libraries(argv[0], out, module_dir)
        if crypto:
            read.append(("tls_libraries", ", ".join(crypto)))
        if errorlog:
            read.append(("errorlog", errorlog))
        return DaemonPlan(
            files=(file,),
            chroot=chroot,
            user=user,
            group=group,
            sockets=("/dev/log",) if syslog else (),
            wait_targets=targets,
            notes=(*notes, *more),
            read=tuple(read),
            file_sets=("time",),
            crypto_libs=crypto,
        )

    def check_config(self, argv: Sequence[str]) -> None:
        file, modules = _config_file(argv)
        check = [argv[0], "-tt", "-f", file, *modules]
        code, output = checkconf.run(check, "lighttpd")
        if code != 0:
            raise _rejected(check, code, output)

    def config_argv(self, command: str, path: str) -> list[str]:
        return [command, "-D", "-f", path]


def _errorlog_note(file: str, errorlog: str, chroot: str, user: str | None) -> str:
    """Where lighttpd's error log really goes: opened after the chroot and setuid."""
    who = user or "root"
    if errorlog.startswith("|"):
        return (
            f"{file}: server.errorlog = {errorlog} starts its program inside the jail "
            f"{chroot}, as {who} (after the chroot: server.c, config_log_error_open)"
        )
    inside = os.path.join(chroot, errorlog.lstrip("/"))
    there = "" if os.path.isdir(os.path.dirname(inside)) else "; that directory is missing"
    return (
        f"{file}: server.errorlog = {errorlog} is opened inside the jail, as {inside}, by "
        f"{who} (after the chroot and setuid: server.c, config_log_error_open){there}"
    )


ADAPTER = _Lighttpd()
