"""Why an address the daemon will bind cannot be bound yet: netlink's facts (pyroute2) and the
judgement. Imported only when the fast path in network.py (one throwaway bind) fails, so a
ready host never loads it.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import TYPE_CHECKING, NamedTuple

from jailshim.verify.findings import Finding

if TYPE_CHECKING:
    from jailshim.logs import Logger
    from jailshim.spec import WaitTarget

__all__ = ["AddressFacts", "diagnose", "judge_address"]

# <net/if.h>; also in network.py, which imports this module only on its slow path: this one
# importing that one back made the two an import cycle
IFF_UP = 0x1
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40


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


def diagnose(targets: list[WaitTarget], ensure_loopback: bool, log: Logger) -> list[AddressFacts]:
    """Ask netlink about each address that the fast path could not bind, with the stop
    signals held: pyroute2's bare `except:` swallowed their exception (a SIGTERM during the
    address wait was lost, and `run` waited out its --timeout)."""
    from jailshim.stopsignals import signals_deferred

    with signals_deferred():
        return _ask_netlink(targets, ensure_loopback, log)


def _ask_netlink(
    targets: list[WaitTarget], ensure_loopback: bool, log: Logger
) -> list[AddressFacts]:
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
