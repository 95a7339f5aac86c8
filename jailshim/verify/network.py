"""Network readiness: the addresses the daemon will bind exist, are up, and are not tentative.

haproxy fails at start with "cannot bind socket" when an address is not assigned yet, or is an
IPv6 address still in duplicate address detection (bind answers EADDRNOTAVAIL for 1-3 s, and for
ever if DAD failed). The fast path is one throwaway bind to (address, port 0): microseconds, no
effect on the daemon's ports, and a ready host never imports pyroute2. Only when that fails does
netlink (pyroute2, in verify/netlink.py) say exactly why: absent, on a link that is down,
tentative, or dadfailed.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import TYPE_CHECKING

from jailshim.errors import UsageError
from jailshim.spec import WaitTarget  # re-exported: it was defined here
from jailshim.verify.findings import Finding

if TYPE_CHECKING:
    from jailshim.logs import Logger

__all__ = [
    "WILDCARDS",
    "WaitTarget",
    "ip_literal",
    "network_findings",
    "parse_wait_addr",
]

IFF_UP = 0x1
WILDCARDS = {"", "*", "0.0.0.0", "::"}  # noqa: S104 (names, not a bind)


def ip_literal(text: str, *, has_port: bool = False) -> str | None:
    """The IP in 'ip', 'ip:port', '[ip6]:port' or 'ip6:port'; None when it is no IP literal.

    With ``has_port`` (haproxy bind lines, where the port is mandatory) the port is always
    after the last colon, as haproxy reads it; otherwise a whole valid IP wins.
    """
    text = text.strip()
    if text.startswith("["):
        host = text[1 : text.find("]")] if "]" in text else ""
    else:
        if not has_port:
            try:
                return str(ipaddress.ip_address(text))
            except ValueError:
                pass
        host = text.rsplit(":", 1)[0] if ":" in text else text
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def parse_wait_addr(text: str) -> WaitTarget:
    """--wait-addr ADDR: an IP literal, optionally with a port; anything else is a usage error."""
    ip = ip_literal(text)
    if ip is None or ip in WILDCARDS:
        raise UsageError(
            f"--wait-addr {text!r} is not a specific IP address; give one such as 192.0.2.10, "
            "[2001:db8::1]:443 or 127.0.0.1:8443."
        )
    port = _port_of(text.strip())
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        # [::1]:99999 was accepted: a port no daemon can bind is a typo in the address
        raise UsageError(
            f"--wait-addr {text!r}: {port!r} is not a port from 1 to 65535; give one such as "
            "127.0.0.1:8443, or the address alone."
        )
    return WaitTarget(ip, "--wait-addr")


def _port_of(text: str) -> str | None:
    """The port written after an IP literal ('ip:port', '[ip6]:port'); None when there is none."""
    if text.startswith("["):
        rest = text[text.find("]") + 1 :]
        return rest.removeprefix(":") if rest else None
    try:
        ipaddress.ip_address(text)  # a whole address (also an IPv6 one, full of colons)
        return None
    except ValueError:
        return text.rpartition(":")[2] if ":" in text else None


SIOCGIFFLAGS = 0x8913


def _lo_up() -> bool:
    """Whether lo is up, by one ioctl (no netlink, no pyroute2)."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            answer = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0))
        except OSError:
            return True  # cannot tell: let bind decide
    return bool(struct.unpack("16sH14x", answer)[1] & IFF_UP)


def _bind_errno(target: WaitTarget) -> int:
    """0 when a throwaway socket can bind (ip, 0) now, else the errno.

    A loopback address also needs lo up: Linux lets 127.0.0.1 be bound while lo is down (a
    fresh network namespace), but nothing can then connect to it.
    """
    if ipaddress.ip_address(target.ip).is_loopback and not _lo_up():
        return errno.ENETDOWN
    with socket.socket(target.family, socket.SOCK_STREAM) as s:
        try:
            s.bind((target.ip, 0))
        except OSError as exc:
            return exc.errno or errno.EIO
    return 0


def _nonlocal_bind(family: int) -> bool:
    name = "ipv6" if family == socket.AF_INET6 else "ipv4"
    try:
        with open(f"/proc/sys/net/{name}/ip_nonlocal_bind", encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def network_findings(
    targets: list[WaitTarget], ensure_loopback: bool, log: Logger
) -> list[Finding]:
    """One finding per target: ready, not waited for (nonlocal bind), or why not ready."""
    findings: dict[str, Finding] = {}
    failing: list[tuple[WaitTarget, int]] = []
    for target in targets:
        check = f"address {target.ip}"
        if target.transparent or _nonlocal_bind(target.family):
            why = (
                f"`transparent` on the bind line ({target.source})"
                if target.transparent
                else "net."
                + ("ipv6" if target.family == socket.AF_INET6 else "ipv4")
                + ".ip_nonlocal_bind=1"
            )
            findings[target.ip] = Finding(
                check,
                True,
                f"not waited for: {why} lets the daemon bind it before it exists",
                warning=True,
            )
            continue
        err = _bind_errno(target)
        if err == 0:
            findings[target.ip] = Finding(check, True, f"bindable now ({target.source})")
        else:
            failing.append((target, err))
    if failing:
        # Only now: a ready host never pays for netlink, pyroute2 or the judgement's types
        from jailshim.verify.netlink import diagnose, judge_address

        facts = diagnose([t for t, _ in failing], ensure_loopback, log)
        for (target, err), fact in zip(failing, facts, strict=True):
            if _bind_errno(target) == 0:  # e.g. --ensure-loopback has just brought lo up
                findings[target.ip] = Finding(f"address {target.ip}", True, "bindable now")
                continue
            verdict = judge_address(fact, err)
            log.info(
                "network.address",
                address=target.ip,
                source=target.source,
                interface=fact.ifname or None,
                state=verdict.detail,
            )
            findings[target.ip] = verdict
    return [findings[t.ip] for t in targets if t.ip in findings]
