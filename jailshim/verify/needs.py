"""What a daemon reads after chroot besides /dev, proved in the probe child as its user: the
time zone (etc/localtime), name resolution (getaddrinfo) and service names (etc/services).

``Needs`` says what to prove; ``prepare_before_chroot`` reads the host's zone; ``start_lookups``
starts the lookups before chroot; ``gather`` runs after chroot and the drop, and makes no NSS
lookup as root (see there). The ``judge_*`` functions are pure.
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

from jailshim.verify.findings import Finding

__all__ = [
    "Needs",
    "gather",
    "judge_resolve",
    "judge_services",
    "judge_time",
    "not_looked_up_as_root",
    "prepare_before_chroot",
    "start_lookups",
]

_TIME_REMEDY = "prepare the jail with --files time (etc/localtime from the host)"
_RESOLVER_FILES = ("/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/hosts")


class Needs(NamedTuple):
    time_strict: bool = False  # --files time: a zone mismatch fails (else: a warning)
    resolve: tuple[str, ...] = ()  # names getaddrinfo must resolve
    services: bool = False  # --files services: getservbyname("smtp", "tcp") must work


class Zone(NamedTuple):
    name: str
    offset: int  # seconds east of UTC

    def describe(self) -> str:
        sign = "+" if self.offset >= 0 else "-"
        hours, minutes = divmod(abs(self.offset) // 60, 60)
        return f"{self.name} (UTC{sign}{hours:02d}:{minutes:02d})"


def _zone(at: float) -> Zone:
    t = time.localtime(at)
    return Zone(t.tm_zone, t.tm_gmtoff)


def _missing(path: str) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def judge_time(host: Zone, jail: Zone, localtime_missing: bool, *, strict: bool) -> Finding:
    if host == jail:
        return Finding("time", True, f"the jail's local time is {jail.describe()}, as the host's")
    why = (
        "etc/localtime is missing in the jail, so glibc uses UTC"
        if localtime_missing
        else "the jail's etc/localtime is another zone than the host's"
    )
    detail = f"the jail's local time is {jail.describe()}, the host's {host.describe()}: {why}"
    if strict:
        return Finding("time", False, detail, _TIME_REMEDY)
    return Finding("time", True, f"{detail} (logs will be stamped so)", _TIME_REMEDY, warning=True)


def judge_resolve(name: str, addresses: list[str], error: str, missing: list[str]) -> Finding:
    check = f"resolve {name}"
    if addresses:
        shown = ", ".join(addresses[:4]) + (" …" if len(addresses) > 4 else "")
        return Finding(check, True, f"getaddrinfo({name!r}) gives {shown}")
    detail = f"getaddrinfo({name!r}) failed: {error}"
    if "/etc/resolv.conf" in missing:
        return Finding(
            check,
            False,
            f"{detail}; etc/resolv.conf is missing in the jail, so glibc asks 127.0.0.1:53 only",
            "prepare the jail with --files resolver (etc/resolv.conf from the host)",
        )
    if missing:
        detail += f"; missing in the jail: {', '.join(p.lstrip('/') for p in missing)}"
    # the resolver named in resolv.conf may come up later: worth waiting for within --timeout
    return Finding(
        check,
        False,
        detail,
        "check the resolver etc/resolv.conf names (reachable from the daemon's network?) and "
        "that it knows the name",
        transient=True,
    )


def judge_services(port: int, error: str, services_missing: bool) -> Finding:
    if port:
        return Finding("services", True, f"getservbyname('smtp', 'tcp') gives port {port}")
    why = "; etc/services is missing in the jail" if services_missing else ""
    return Finding(
        "services",
        False,
        f"getservbyname('smtp', 'tcp') failed ({error}){why}",
        "prepare the jail with --files services (etc/services and etc/protocols)",
    )


def prepare_before_chroot() -> tuple[float, Zone]:
    """Read the host's zone for one instant, before chroot. (The lookups, which need socket
    and the idna codec from the host, run in their own interpreter, start_lookups: the probe
    child no longer loads them, ~1 ms of its critical path before chroot, issue 28.)"""
    now = time.time()
    return now, _zone(now)


def _reload_zone() -> None:
    """glibc reads etc/localtime again only when TZ changes: change it and put it back."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "JAILSHIM0"
    time.tzset()
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


_AS_ROOT_REMEDY = "give --user (the daemon's user) to look it up as that user"
_AS_ROOT = (
    "not looked up: the probe runs as root (no --user, or a daemon that runs as root), and a "
    "lookup in the jail would load, as root, the NSS modules its etc/nsswitch.conf names from "
    f"the jail's lib/; {_AS_ROOT_REMEDY}"
)


def not_looked_up_as_root(needs: Needs) -> list[Finding]:
    """The rows of the lookups a root probe skips: warnings saying why and how to get them."""
    checks = [f"resolve {name}" for name in needs.resolve] + (
        ["services"] if needs.services else []
    )
    return [Finding(check, True, _AS_ROOT, _AS_ROOT_REMEDY, warning=True) for check in checks]


# Run by a fresh interpreter (exec'd, so none of jailshim's memory: prepare had read the host's
# --file there, and the jail's NSS module found the key in a forked probe's heap, review2 F1):
# chroot, drop to the daemon's user, look the names up as the daemon will, print the answers.
_LOOKUPS = r"""
import encodings.idna, errno, json, os, pwd, socket, sys  # idna: getaddrinfo's, from the host
jail, uid, gid, groups, names, services = json.loads(sys.argv[1])
try:  # as a daemon does before chroot (its user): glibc keeps the host's nsswitch.conf then
    pwd.getpwuid(uid)
except KeyError:
    pass
os.chroot(jail)
os.chdir("/")
os.setgroups(groups)
os.setgid(gid)
os.setuid(uid)
out = {"resolve": [], "services": None}
for name in names:
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        out["resolve"].append([name, list(dict.fromkeys(str(i[4][0]) for i in infos)), ""])
    except socket.gaierror as exc:
        out["resolve"].append([name, [], f"{exc.strerror or exc} (EAI {exc.errno})"])
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, exc.errno)
        out["resolve"].append([name, [], f"{exc.strerror} ({code})"])
if services:
    try:
        out["services"] = [socket.getservbyname("smtp", "tcp"), ""]
    except OSError as exc:
        out["services"] = [0, str(exc)]
sys.stdout.write(json.dumps(out))
"""
_LOOKUP_DEADLINE = 8.0  # inside the probe's own 10 s
_MAX_ANSWER = 1 << 20  # bytes: far above any real answer


class Lookups(NamedTuple):
    """The running lookups: their PID and the read end of their stdout."""

    pid: int
    out: int


def start_lookups(
    needs: Needs, jail: str, uid: int, gid: int, groups: tuple[int, ...]
) -> Lookups | None:
    """Before chroot, as root: start the lookups (getaddrinfo, getservbyname) in a fresh
    interpreter that chroots and drops to the daemon's user itself; None when there are none
    to make. They run the NSS modules the jail's nsswitch.conf names, code its writers chose,
    so they run where nothing of jailshim's is: no host file read, no fd but their pipe
    (posix_spawn, as libfind runs the loader: no subprocess in the probe child, issue 28)."""
    if uid == 0 or not (needs.resolve or needs.services):
        return None
    import json
    import sys

    from jailshim.verify.libfind import inherited_fds

    args = json.dumps([jail, uid, gid, list(groups), list(needs.resolve), needs.services])
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out_write, 1),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        *((os.POSIX_SPAWN_CLOSE, fd) for fd in inherited_fds()),
    ]
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", "-c", _LOOKUPS, args],
            # a resolver that does not answer must not outlast the probe's deadline
            {"RES_OPTIONS": "timeout:2 attempts:1"},
            file_actions=actions,
        )
    except BaseException:
        os.close(out_read)
        raise
    finally:
        os.close(out_write)
    return Lookups(pid, out_read)


def _answers(lookups: Lookups) -> dict[str, Any]:
    """What the lookups printed, read up to a bound and a deadline: they run the jail's NSS
    modules, which could print without end into root's memory or never finish."""
    import json
    import select
    import signal

    deadline = time.monotonic() + _LOOKUP_DEADLINE
    fd = lookups.out
    data = b""
    try:
        while len(data) <= _MAX_ANSWER:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
        os.kill(lookups.pid, signal.SIGKILL)  # our own child, gone already when it answered
        _, status = os.waitpid(lookups.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    try:
        answers: dict[str, Any] = json.loads(data) if len(data) <= _MAX_ANSWER else {}
    except ValueError:
        answers = {}
    if code == -9:
        return {"error": f"the lookup did not answer within {_LOOKUP_DEADLINE:.0f} s"}
    if not isinstance(answers, dict) or not answers:
        return {"error": f"the lookup ended without an answer (exit {code})"}
    return answers


def gather(
    needs: Needs, now: float, host: Zone, *, as_root: bool, lookups: Lookups | None = None
) -> list[Finding]:
    """After chroot and the drop: the findings for ``needs``.

    ``as_root``: getaddrinfo and getservbyname are skipped (warnings). NSS never ran before
    chroot, so glibc would dlopen() the modules the jail's nsswitch.conf names from the jail:
    code any writer of the jail (another container's root on its volume) put there ran as root
    (review1 R0). As the daemon's user they are made by ``lookups`` (start_lookups)."""
    _reload_zone()  # tzfile reads only, no NSS: safe as root
    findings = [judge_time(host, _zone(now), _missing("/etc/localtime"), strict=needs.time_strict)]
    if as_root:
        return findings + not_looked_up_as_root(needs)
    answers = _answers(lookups) if lookups is not None else {}
    gone = answers.get("error", "the lookup did not answer within its deadline")
    if needs.resolve:
        missing = [p for p in _RESOLVER_FILES if _missing(p)]
        found = {name: (addresses, error) for name, addresses, error in answers.get("resolve", [])}
        for name in needs.resolve:
            addresses, error = found.get(name, ([], gone))
            findings.append(judge_resolve(name, list(addresses), str(error), missing))
    if needs.services:
        port, error = answers.get("services") or (0, gone)
        findings.append(judge_services(int(port), str(error), _missing("/etc/services")))
    return findings
