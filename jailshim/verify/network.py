"""Network readiness: the addresses the daemon will bind exist, are up, and are not tentative.

haproxy fails at start with "cannot bind socket" when an address is not assigned yet, or is an
IPv6 address still in duplicate address detection (bind answers EADDRNOTAVAIL for 1-3 s, and for
ever if DAD failed). The fast path is one throwaway bind to (address, port 0): microseconds, no
effect on the daemon's ports, and a ready host never imports pyroute2. Only when that fails does
netlink (pyroute2) say exactly why: absent, on a link that is down, tentative, or dadfailed.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any, NamedTuple

from jailshim.errors import UsageError
from jailshim.spec import WaitTarget  # re-exported: it was defined here
from jailshim.verify.findings import Finding

__all__ = [
    "AddressFacts",
    "WaitTarget",
    "haproxy_targets",
    "judge_address",
    "network_findings",
    "parse_wait_addr",
]

IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
IFF_UP = 0x1
_WILDCARDS = {"", "*", "0.0.0.0", "::"}  # noqa: S104 (names, not a bind)
# str2sa_range() (haproxy 2.6, src/tools.c): these name no IP address to wait for
_NON_IP_PREFIXES = ("unix@", "uxdg@", "uxst@", "abns@", "fd@", "sockpair@")
# ...and these name an IP address (TCP, UDP or QUIC), stripped before the address
_IP_PREFIXES = (
    "ipv4@",
    "ipv6@",
    "ip@",
    "tcp4@",
    "tcp6@",
    "tcp@",
    "udp4@",
    "udp6@",
    "udp@",
    "quic4@",
    "quic6@",
)


def _ip(text: str, *, has_port: bool = False) -> str | None:
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
    ip = _ip(text)
    if ip is None or ip in _WILDCARDS:
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


def haproxy_targets(binds: Iterable[Any]) -> tuple[list[WaitTarget], list[str]]:
    """The IPs to wait for from haproxy bind lines, and notes on what was passed over.

    Linear in the number of addresses: each IP is kept once, at its first bind line.
    """
    targets: dict[str, WaitTarget] = {}
    notes: list[str] = []
    for bind in binds:
        for raw in bind.addresses or (bind.address,):
            text = raw
            for kind in ("stream+", "dgram+"):
                text = text.removeprefix(kind)
            if text.startswith(_NON_IP_PREFIXES) or text.startswith("/"):
                continue
            for prefix in _IP_PREFIXES:
                if text.startswith(prefix):
                    text = text[len(prefix) :]
                    break
            host = text[1 : text.find("]")] if text.startswith("[") else text.rsplit(":", 1)[0]
            if host in _WILDCARDS:
                continue
            ip = _ip(text, has_port=True)
            if ip is None:
                notes.append(f"{bind.where}: {raw} is not an IP literal; not waited for")
                continue
            if ip in _WILDCARDS or ip in targets:
                continue
            namespace = getattr(bind, "namespace", "")
            if namespace:
                notes.append(
                    f"{bind.where}: {raw} is bound in network namespace {namespace}; not waited for"
                )
                continue
            targets[ip] = WaitTarget(ip, bind.where, bind.transparent)
    return list(targets.values()), notes


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


class AddressFacts(NamedTuple):
    """What netlink says about one address."""

    ip: str
    present: bool = False
    ifname: str = ""
    link_up: bool = True
    tentative: bool = False
    dadfailed: bool = False
    loopback_down: bool = False  # a loopback address while lo is down (fresh namespace)


def judge_address(facts: AddressFacts, bind_errno: int) -> Finding:
    """Pure: why the daemon could not bind this address now, and whether waiting can help."""
    check = f"address {facts.ip}"
    err = errno.errorcode.get(bind_errno, str(bind_errno))
    if facts.dadfailed:
        return Finding(
            check,
            False,
            f"dadfailed on {facts.ifname}: another host on the link has the same IPv6 address",
            "give this host a unique address (duplicate address detection will not retry)",
        )
    if facts.loopback_down:
        return Finding(
            check,
            False,
            "lo is down (a fresh network namespace): loopback addresses do not exist yet",
            "pass --ensure-loopback, or bring lo up before starting the daemon",
            transient=True,
        )
    if not facts.present:
        return Finding(
            check,
            False,
            f"absent: no interface has this address yet (bind: {err})",
            "wait for the network to be configured, or fix the address in the daemon's config",
            transient=True,
        )
    if not facts.link_up:
        return Finding(
            check,
            False,
            f"on {facts.ifname}, which is down (bind: {err})",
            f"bring {facts.ifname} up",
            transient=True,
        )
    if facts.tentative:
        return Finding(
            check,
            False,
            f"tentative on {facts.ifname}: IPv6 duplicate address detection is still running "
            f"(bind: {err})",
            "wait for DAD to finish (about 2 s once the link has carrier), or set "
            "net.ipv6.ip_nonlocal_bind=1, or disable DAD on that interface",
            transient=True,
        )
    return Finding(
        check,
        False,
        f"on {facts.ifname} but bind still fails ({err})",
        "check the address and firewall/LSM rules",
        transient=True,
    )


def _diagnose(targets: list[WaitTarget], ensure_loopback: bool, log: Any) -> list[AddressFacts]:
    """Ask netlink about each address that the fast path could not bind, with the stop
    signals held: pyroute2's bare `except:` swallowed their exception (a SIGTERM during the
    address wait was lost, and `run` waited out its --timeout)."""
    from jailshim.stopsignals import signals_deferred

    with signals_deferred():
        return _ask_netlink(targets, ensure_loopback, log)


def _ask_netlink(targets: list[WaitTarget], ensure_loopback: bool, log: Any) -> list[AddressFacts]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = {link["index"]: link for link in ipr.get_links()}
        lo = next((i for i, link in links.items() if link.get_attr("IFLA_IFNAME") == "lo"), None)
        lo_up = lo is not None and bool(links[lo]["flags"] & IFF_UP)
        if ensure_loopback and lo is not None and not lo_up:
            ipr.link("set", index=lo, state="up")
            log.info("network.loopback", outcome="brought lo up")
            links = {link["index"]: link for link in ipr.get_links()}
            lo_up = True
        found = {str(ipaddress.ip_address(a.get_attr("IFA_ADDRESS"))): a for a in ipr.get_addr()}
        facts = []
        for target in targets:
            addr = found.get(target.ip)
            if ipaddress.ip_address(target.ip).is_loopback and not lo_up:
                facts.append(AddressFacts(target.ip, loopback_down=True))
                continue
            if addr is None:
                facts.append(AddressFacts(target.ip))
                continue
            flags = addr.get_attr("IFA_FLAGS") or addr["flags"]
            link = links.get(addr["index"])
            facts.append(
                AddressFacts(
                    target.ip,
                    present=True,
                    ifname=link.get_attr("IFLA_IFNAME") if link else str(addr["index"]),
                    link_up=bool(link and link["flags"] & IFF_UP),
                    tentative=bool(flags & IFA_F_TENTATIVE),
                    dadfailed=bool(flags & IFA_F_DADFAILED),
                )
            )
        return facts


def network_findings(targets: list[WaitTarget], ensure_loopback: bool, log: Any) -> list[Finding]:
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
        facts = _diagnose([t for t, _ in failing], ensure_loopback, log)
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
