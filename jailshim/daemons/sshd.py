"""sshd: the sftp jails of its `Match` blocks (ChrootDirectory), resolved by `sshd -T` itself.

sshd (OpenSSH 9.2) never chroot()s at start: each session does, as it sets the user's
context (session.c do_setusercontext): the ChrootDirectory in force for that connection
(per `Match`; "none" is none) is tilde-expanded for the user (misc.c tilde_expand_filename),
its tokens %h (home), %u (name), %U (uid) and %% expanded (percent_expand), and
safely_chroot() refuses it unless the path is absolute and every component of it (each
prefix, stat() following symlinks) is a root-owned directory no group or other can write:
"bad ownership or modes for chroot directory [component ]"PATH"" — a fatal() that ends the
session after the user logged in. The session then runs the ForceCommand (`internal-sftp`,
in-process: sftp-server.c) and logs through syslog (log.c: openlog/syslog/closelog per
message, so it connects after the chroot): /dev/log inside the jail. sshd's own parser
answers the rest: `sshd -ddd -T ARGV` prints the effective global config on stdout and, on
stderr, every Match line it read, includes followed (servconf.c match_cfg_line: "checking
syntax for 'Match …'"); `sshd -T ARGV -C user=U` prints the config for a connection of user U
(Match blocks that test only User, or Group, apply; ones that test Address, Host, LocalAddress,
LocalPort or RDomain do not, as no such value is given), with chrootdirectory unexpanded.
That same `sshd -T` is also sshd's checker: sshd.c main() loads and checks everything for `-t`
and `-T` alike (host keys; /run/sshd, the privilege separation directory: "Missing privilege
separation directory: /run/sshd"; every Match line's syntax) and only then dumps and exits;
`sshd -t` would run the same code again, so no separate checker runs (its failure is 78 in
sshd's words from the read itself, --no-config-check or not).

(`sshd -T` chroots nowhere and opens nothing in a jail, so it runs before any jail is judged.)

What `run` resolves: the jail of each user named literally in a `Match User` line (no
wildcard, no negation) and a global ChrootDirectory without tokens; every one is judged by
sshd's rule before anything is prepared: one sshd would refuse is a warning in sshd's words and
is not prepared, and sshd still starts (it ends only that user's sessions: refusing the whole
start would lock every other user out). So is a jail its named user cannot search (sshd takes
a 0700 jail; the session then sees nothing in it and logs nothing through its dev/log).
The engine prepares one jail per run: the first good one (config order), with /dev/log;
each other is named in a note with the `jailshim prepare` line that prepares it (as is each
Match line run cannot resolve).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence

from jailshim.daemons import Adapter, DaemonPlan, checkconf, ip_wait_targets
from jailshim.errors import ConfigError

__all__ = ["ADAPTER", "expand_chroot", "literal_users", "match_lines", "refusal", "unenterable"]

_MATCH_LINE = re.compile(r"checking syntax for 'Match (.*)'$")
_TOKEN = re.compile(r"%(.)")
PATH_MAX = 4096


def match_lines(debug: str) -> list[str]:
    """Every Match line's criteria as sshd read them (its debug3 lines), in config order."""
    found = []
    for line in debug.splitlines():
        hit = _MATCH_LINE.search(line.strip())
        if hit:
            found.append(hit.group(1))
    return found


def literal_users(criteria: str) -> tuple[list[str], bool]:
    """The user names a Match line names literally, and whether the line tests only User
    (so `-C user=NAME` alone decides it). A pattern or a negation names nobody."""
    words = criteria.split("#", 1)[0].split()
    users: list[str] = []
    only_user = bool(words)
    for attribute, value in zip(words[::2], words[1::2], strict=False):
        if attribute.lower() != "user":
            only_user = False
            continue
        for name in value.split(","):
            if name and not any(c in name for c in "*?!"):
                users.append(name)
            else:
                only_user = False
    return users, only_user and len(words) % 2 == 0


def expand_chroot(template: str, user: str, uid: int, home: str) -> str:
    """session.c's expansion: `~` to the user's home (`~NAME` to NAME's), then %h %u %U %%;
    another token is refused in sshd's words."""
    if template.startswith("~"):
        head, sep, tail = template[1:].partition("/")
        if head:
            import pwd

            try:
                base = pwd.getpwnam(head).pw_dir
            except KeyError:
                raise ConfigError(
                    f'sshd would end {user}\'s session: "tilde_expand: No such user {head}" '
                    f"(ChrootDirectory {template}); fix the ChrootDirectory."
                ) from None
        else:
            base = home
        template = base.rstrip("/") + "/" + tail if sep else base

    def token(hit: re.Match[str]) -> str:
        key = hit.group(1)
        value = {"h": home, "u": user, "U": str(uid), "%": "%"}.get(key)
        if value is None:
            raise ConfigError(
                f'sshd would end {user}\'s session: "percent_expand: unknown key %{key}" '
                f"(ChrootDirectory {template}); use %h, %u, %U or %%."
            )
        return value

    return _TOKEN.sub(token, template)


def refusal(path: str) -> str:
    """safely_chroot()'s fatal for ``path`` as sshd would say it, or "" when sshd accepts it:
    each prefix up to and including each "/" (then the whole path) must stat() as a directory
    owned by root that neither group nor other can write."""
    if not path.startswith("/"):
        return "chroot path does not begin at root"
    if len(path) >= PATH_MAX:
        return "chroot path too long"
    cut = 0
    while True:
        slash = path.find("/", cut)
        last = slash < 0
        component = path if last else path[: slash + 1]
        cut = slash + 1
        kind = "" if last else "component "
        try:
            st = os.stat(component)
        except OSError as exc:
            return f'safely_chroot: stat("{component}"): {exc.strerror}'
        if st.st_uid != 0 or st.st_mode & 0o022:
            return f'bad ownership or modes for chroot directory {kind}"{component}"'
        if not stat.S_ISDIR(st.st_mode):
            return f'chroot path {kind}"{component}" is not a directory'
        if last:
            return ""


def unenterable(path: str, user: str, uid: int, groups: Sequence[int]) -> str:
    """Why ``user`` cannot search the jail ``path`` itself, or "" when it can. sshd's rule lets
    a jail be 0700 root's, but after the chroot the session runs as the user from the jail's
    "/": without search permission there internal-sftp opens nothing and its log lines through
    dev/log are lost, while jailshim's checks, as root, passed (seen under ssh.service: "Can't
    ls: "/files" not found", and no internal-sftp line in the journal)."""
    try:
        st = os.stat(path)
    except OSError:
        return ""  # refusal() has said it
    if uid == 0:
        return ""
    bit = 0o010 if st.st_gid in groups else 0o001
    if st.st_mode & bit:
        return ""
    return (
        f"{user} cannot enter the jail {path} (mode {stat.S_IMODE(st.st_mode):04o}, group "
        f"{st.st_gid}; {user} is uid {uid}): after the chroot internal-sftp finds no file and "
        "its log lines through dev/log are lost"
    )


def _dump(lines: str) -> dict[str, list[str]]:
    """`sshd -T`'s output: keyword -> its values (a keyword may repeat: listenaddress)."""
    found: dict[str, list[str]] = {}
    for line in lines.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            found.setdefault(key, []).append(value)
    return found


def _failed(argv: Sequence[str], code: int, output: str) -> ConfigError:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("debug")]
    words = " | ".join(lines[-3:]) or f"exit status {code}"
    return ConfigError(
        f"sshd rejected its configuration (`{' '.join(argv)}`, exit {code}): {words}",
        sshd_output=lines[-20:],
    )


def _host_address(value: str) -> str:
    """`listenaddress 0.0.0.0:22` / `[::1]:22` / `host:22 rdomain R`: the host part."""
    address = value.split(maxsplit=1)[0]
    if address.startswith("["):
        return address[1 : address.find("]")]
    return address.rpartition(":")[0] or address


def _templates(
    argv: Sequence[str], config: Mapping[str, list[str]], matches: Sequence[str]
) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(user, ChrootDirectory) pairs in config order ("" for every user: a global one without
    tokens), the users Match lines name literally, and notes on what is not resolved. Each
    user's ChrootDirectory is sshd's answer to `sshd -T ARGV -C user=NAME`."""
    tail = list(argv[1:])
    notes: list[str] = []
    wanted: list[tuple[str, str]] = []
    everyone = config.get("chrootdirectory", ["none"])[0]
    if everyone.lower() != "none":
        if "%" in everyone or everyone.startswith("~"):
            notes.append(
                f"ChrootDirectory {everyone} (for every user) has a jail per user; run "
                "prepares only those of users named in Match User lines"
            )
        else:
            wanted.append(("", everyone))
    users: list[str] = []
    for criteria in matches:
        named, only_user = literal_users(criteria)
        users += [u for u in named if u not in users]
        if not only_user:
            notes.append(
                f"Match {criteria}: not resolved for users it does not name literally (a "
                "pattern, a negation or a criterion other than User); prepare their jails "
                "with `jailshim prepare --chroot JAIL --log-socket /dev/log`"
            )
    asks = [[argv[0], "-T", *tail, "-C", f"user={u}"] for u in users]
    for user, ask, (code, out, err) in zip(
        users, asks, checkconf.run_all(asks, "openssh-server"), strict=True
    ):
        if code != 0:
            raise _failed(ask, code, out + err)
        template = _dump(out).get("chrootdirectory", ["none"])[0]
        if template.lower() != "none":
            wanted.append((user, template))
    return wanted, users, notes


def _jails(wanted: Sequence[tuple[str, str]], notes: list[str]) -> dict[str, list[str]]:
    """Each jail (expanded as session.c does, judged by sshd's rule) -> the users it is for,
    in config order; a jail sshd would refuse, and a user unknown here, get a note in sshd's
    words instead."""
    import pwd

    jails: dict[str, list[str]] = {}
    for user, template in wanted:
        path = template
        if user:
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                notes.append(
                    f"Match User {user}: no such user on this host (sshd would refuse the "
                    "login); its jail is not prepared"
                )
                continue
            path = expand_chroot(template, user, pw.pw_uid, pw.pw_dir)
        why = refusal(path)
        if user and not why:
            locked = unenterable(path, user, pw.pw_uid, os.getgrouplist(user, pw.pw_gid))
            if locked:
                notes.append(
                    f"{user}'s sessions will see nothing: {locked}; this jail is not prepared: "
                    "let its user search it (0755 root's, as sshd allows)."
                )
                continue
        if why:
            # A warning, not a refusal: sshd itself starts and ends only this user's sessions;
            # refusing the start (78) locked every other user out too, admins on Debian's
            # ssh.service included.
            notes.append(
                f'sshd will end {user or "every user"}\'s sessions after login: "{why}" '
                f"(ChrootDirectory {template}); this jail is not prepared: make every component "
                "of its path root's and not writable by group or others."
            )
            continue
        host = _host_directory(path)
        if host:
            # sshd accepts it (root's, 0755) and jailshim makes nothing there: handed to the
            # engine, its refusal (78) locked every user out (tests/test_attack_longtail.py)
            notes.append(
                f"ChrootDirectory {template} for {user or 'every user'} is {host}, the host's "
                "own: jailshim prepares no jail there (no /dev/log for those sessions); sshd "
                "still starts"
            )
            continue
        jails.setdefault(os.path.normpath(path), []).append(user or "every user")
    return jails


def _host_directory(path: str) -> str:
    """ "/" or the host's system directory ``path`` is (jail/hostdirs.py); "" for a jail of its
    own or one that cannot be opened (sshd's own refusal covers that)."""
    from jailshim.jail.hostdirs import host_directory

    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        return "/" if real == "/" else host_directory(os.fstat(fd), real) or ""
    finally:
        os.close(fd)


class _Sshd(Adapter):
    """sshd: the jails its Match blocks name, resolved with `sshd -T -C user=…`."""

    name = "sshd"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        tail = list(argv[1:])
        code, out, err = checkconf.run_all([[argv[0], "-ddd", "-T", *tail]], "openssh-server")[0]
        if code != 0:
            raise _failed([argv[0], "-T", *tail], code, out + err)
        config = _dump(out)
        wanted, users, notes = _templates(argv, config, match_lines(err))
        jails = _jails(wanted, notes)
        listen = [
            (_host_address(v), "sshd -T: listenaddress", v) for v in config.get("listenaddress", [])
        ]
        targets, address_notes = ip_wait_targets(listen)
        order = list(jails)
        for other in order[1:]:
            notes.append(
                f"the jail {other} (for {', '.join(jails[other])}) is not prepared by this run "
                f"(it prepares one: {order[0]}); prepare it with `jailshim prepare --chroot "
                f"{other} --log-socket /dev/log`"
            )
        read = [("jails", " ".join(f"{j} ({', '.join(u)})" for j, u in jails.items()) or "none")]
        read.append(("match_users", " ".join(users) or "none"))
        return DaemonPlan(
            files=(f"{argv[0]} -T",),
            chroot=order[0] if order else None,
            # the session logs through syslog after its chroot: /dev/log in the jail
            sockets=("/dev/log",) if order else (),
            wait_targets=targets,
            notes=(*notes, *address_notes),
            read=tuple(read),
        )


ADAPTER = _Sshd()
