"""Network readiness against real network namespaces (no traffic leaves the machine)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jailshim.daemons.haproxy import haproxy_targets, parse_config
from jailshim.errors import UsageError
from jailshim.verify.netlink import AddressFacts, judge_address
from jailshim.verify.network import parse_wait_addr
from tests.daemons import stop, write_haproxy_config
from tests.handshake import WAIT, EventReader, wait_until
from tests.support import Result, assert_ran, clean_env, jailshim_argv, need, run, spawn

ADDR6 = "2001:db8::1"  # documentation range, only ever inside the test's own namespaces


def ip(*args: str) -> None:
    assert_ran(subprocess.run(["ip", *args], check=False, capture_output=True))


def _clear_dead_runs_namespaces() -> None:
    """Namespaces a killed run left (named jstest-PID-…): deleted when that PID runs no pytest."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        found = re.match(r"(jstest-(\d+)-\S+)", line)
        if not found:
            continue
        try:
            alive = b"pytest" in Path(f"/proc/{found.group(2)}/cmdline").read_bytes()
        except OSError:
            alive = False
        if not alive:
            subprocess.run(["ip", "netns", "del", found.group(1)], check=False, capture_output=True)


@pytest.fixture
def netns(root: None) -> Iterator[str]:
    """A fresh network namespace (lo down), deleted afterwards."""
    need(shutil.which("ip") is not None, "needs ip(8) from iproute2")
    _clear_dead_runs_namespaces()
    name = f"jstest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ip("netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def tentative_ns(netns: str) -> str:
    """lo up; veth v0 (up) <-> v1 (down); ADDR6 on v0 stays tentative until v1 goes up."""
    ip("-n", netns, "link", "set", "lo", "up")
    ip("-n", netns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ip("-n", netns, "link", "set", "v0", "up")
    ip("-n", netns, "addr", "add", f"{ADDR6}/64", "dev", "v0")
    return netns


def in_ns(ns: str, *args: str, timeout: float = 60) -> Result:
    return run(*args, wrap=["ip", "netns", "exec", ns])


def popen_in_ns(ns: str, *args: str) -> subprocess.Popen[str]:
    return spawn(["ip", "netns", "exec", ns, *jailshim_argv(*args)])


def waiting(reason: str) -> Callable[[dict[str, Any]], bool]:
    """The event of check's first failed attempt, for ``reason``: jailshim now waits. The
    change the test makes comes after it (it came after a fixed 1 s, which a slow start on a
    loaded machine outlasted: the first attempt then found the address ready)."""
    return lambda e: e["event"] == "check.attempt" and not e["ok"] and reason in str(e["reason"])


def test_tentative_address_is_waited_for(tentative_ns: str) -> None:
    """Tentative while the peer is down; the peer comes up during the wait; check passes."""
    argv = ("check", "--wait-addr", f"[{ADDR6}]:443", "--timeout", str(WAIT))
    with EventReader(popen_in_ns(tentative_ns, *argv)) as check:
        check.wait_for(waiting("tentative on v0"), "check to find the address tentative")
        ip("-n", tentative_ns, "link", "set", "v1", "up")
        result = check.finish()
    assert result.code == 0, result.stderr
    attempts = result.named("check.attempt")
    assert len(attempts) > 1 and "tentative on v0" in str(attempts[0]["reason"])
    assert attempts[-1]["ok"] is True


def test_tentative_with_short_budget_exits_69(tentative_ns: str) -> None:
    """The budget runs out while still tentative: 69 naming the address and 'tentative'."""
    result = in_ns(tentative_ns, "check", "--wait-addr", ADDR6, "--timeout", "1")
    assert result.code == 69
    assert f"address {ADDR6}" in result.error and "tentative" in result.error


def test_dadfailed_fails_at_once(netns: str, root: None) -> None:
    """Another namespace on the link holds the same address: dadfailed, no retry."""
    other = f"{netns}-b"
    ip("netns", "add", other)
    try:
        ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", netns, "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", other)
        ip("-n", other, "link", "set", "b0", "up")
        ip("-n", other, "addr", "add", f"{ADDR6}/64", "dev", "b0", "nodad")
        ip("-n", netns, "link", "set", "a0", "up")
        ip("-n", netns, "addr", "add", f"{ADDR6}/64", "dev", "a0")

        def dad_failed() -> bool:
            shown = subprocess.run(
                ["ip", "-n", netns, "addr", "show", "a0"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert_ran(shown)
            return "dadfailed" in shown.stdout

        # the kernel's verdict first (the wait's end was not checked: a slow DAD left the
        # address tentative, and check then waited instead of failing at once)
        wait_until(dad_failed, "the kernel to mark the duplicate address dadfailed")
        result = in_ns(netns, "check", "--wait-addr", ADDR6, "--timeout", "30")
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False, capture_output=True)
    assert result.code == 69
    assert "dadfailed" in result.error
    assert len(result.named("check.attempt")) == 1


def test_absent_address_appears_during_the_wait(netns: str) -> None:
    """The address is added by someone else while check waits: it passes."""
    ip("-n", netns, "link", "set", "lo", "up")
    ip("-n", netns, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
    ip("-n", netns, "link", "set", "d0", "up")
    ip("-n", netns, "link", "set", "d1", "up")
    argv = ("check", "--wait-addr", "192.0.2.7:80", "--timeout", str(WAIT))
    with EventReader(popen_in_ns(netns, *argv)) as check:
        check.wait_for(waiting("absent"), "check to find the address absent")
        ip("-n", netns, "addr", "add", "192.0.2.7/24", "dev", "d0")
        result = check.finish()
    assert result.code == 0, result.stderr
    assert "absent" in str(result.named("check.attempt")[0]["reason"])


def test_loopback_down_is_reported_and_fixed_by_ensure_loopback(netns: str) -> None:
    """A fresh namespace: lo is down; --ensure-loopback brings it up."""
    down = in_ns(netns, "check", "--wait-addr", "127.0.0.1", "--timeout", "0.5")
    assert down.code == 69 and "lo is down" in down.error and "--ensure-loopback" in down.error
    fixed = in_ns(netns, "check", "--wait-addr", "127.0.0.1", "--ensure-loopback", "--timeout", "5")
    assert fixed.code == 0, fixed.stderr
    assert fixed.named("network.loopback")


def test_nonlocal_bind_sysctl_means_no_waiting(netns: str) -> None:
    """net.ipv6.ip_nonlocal_bind=1: the daemon can bind an absent address; jailshim says so."""
    ip("-n", netns, "link", "set", "lo", "up")
    subprocess.run(
        ["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1"], check=True
    )
    result = in_ns(netns, "check", "--wait-addr", ADDR6, "--timeout", "5")
    assert result.code == 0, result.stderr
    finding = next(e for e in result.events if e.get("check") == f"address {ADDR6}")
    assert "not waited for: net.ipv6.ip_nonlocal_bind=1" in finding["detail"]
    assert len(result.named("check.attempt")) == 1


def test_haproxy_starts_only_after_dad(tentative_ns: str, area: Path) -> None:
    """run -- haproxy with a bind on a tentative address: waits, then haproxy accepts there."""
    haproxy = shutil.which("haproxy")
    need(haproxy is not None, "needs haproxy")
    assert haproxy is not None
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    # any port: haproxy listens in the test's own namespace, where nothing else binds
    setup = write_haproxy_config(area, jail, 9, bind_address=ADDR6, port=8443)
    argv = ("run", "--timeout", str(WAIT), "--", haproxy, "-f", str(setup.config), "-db")
    # the client tries until haproxy answers, for as long as a slow start may take
    client = (
        "import ssl, socket, sys, time\n"
        "ctx = ssl.create_default_context(); ctx.check_hostname = False\n"
        "ctx.verify_mode = ssl.CERT_NONE\n"
        f"deadline = time.monotonic() + {WAIT}\n"
        "while time.monotonic() < deadline:\n"
        "    try:\n"
        f"        s = socket.create_connection(('{ADDR6}', {setup.port}), timeout=2)\n"
        "        print(ctx.wrap_socket(s).version()); sys.exit(0)\n"
        "    except OSError: time.sleep(0.1)\n"
        "sys.exit(1)\n"
    )
    with EventReader(popen_in_ns(tentative_ns, *argv)) as jailshim:
        # the peer comes up once jailshim has said it waits (it came after a fixed 1.5 s)
        jailshim.wait_for(waiting("tentative on v0"), "run to find the bind address tentative")
        ip("-n", tentative_ns, "link", "set", "v1", "up")
        answer = subprocess.run(
            ["ip", "netns", "exec", tentative_ns, sys.executable, "-c", client],
            capture_output=True,
            text=True,
            timeout=WAIT * 2,
            check=False,
        )
        _, rest = stop(jailshim.proc)
    stderr = jailshim.output()[1] + rest
    assert answer.stdout.strip() == "TLSv1.3", stderr
    assert "tentative" in stderr and '"handover"' in stderr
    assert "cannot bind socket" not in stderr


def test_ready_run_imports_neither_pyroute2_nor_tenacity(jail: Path) -> None:
    """All addresses ready: the fast path decides, and the heavy modules are never imported."""
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "jailshim",
            "run",
            "--chroot",
            str(jail),
            "--wait-addr",
            "127.0.0.1",
            "--",
            "/bin/true",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    imported = [line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line]
    assert "jailshim.verify.network" in imported  # the check did run
    assert not [m for m in imported if m.startswith(("pyroute2", "tenacity"))]


def test_haproxy_bind_lines_give_targets() -> None:
    """Wildcards, unix sockets and fd@ are skipped; prefixes, brackets, lists are understood."""
    cfg = parse_config(
        [
            (
                "h.cfg",
                "frontend f\n"
                "  bind *:80\n  bind :::443\n  bind 0.0.0.0:1\n  bind /run/h.sock\n  bind unix@x\n"
                "  bind fd@3\n  bind ipv4@192.0.2.1:80-85 ssl crt x\n"
                "  bind 192.0.2.2:80,[2001:db8::2]:80\n"
                "  bind 192.0.2.3:80,192.0.2.4:80 transparent\n  bind ipv6@2001:db8::5:443\n"
                "  bind myhost:80\n",
            )
        ],
        {},
    )
    targets, notes = haproxy_targets(cfg.binds)
    assert [(t.ip, t.transparent) for t in targets] == [
        ("192.0.2.1", False),
        ("192.0.2.2", False),
        ("2001:db8::2", False),
        ("192.0.2.3", True),
        ("192.0.2.4", True),
        ("2001:db8::5", False),
    ]
    assert notes == ["h.cfg:12: myhost:80 is not an IP literal; not waited for"]


def test_wait_addr_forms() -> None:
    """--wait-addr takes an IP with or without port; wildcards and names are usage errors."""
    assert parse_wait_addr("[2001:db8::1]:443").ip == "2001:db8::1"
    assert parse_wait_addr("2001:db8::1").ip == "2001:db8::1"
    assert parse_wait_addr("127.0.0.1:8443").ip == "127.0.0.1"
    for bad in ("0.0.0.0", "*:80", "example.org", ""):  # noqa: S104 (text, not a bind)
        with pytest.raises(UsageError):
            parse_wait_addr(bad)


def test_address_verdicts() -> None:
    """dadfailed is permanent; tentative, absent, link down and lo down are worth waiting for."""
    notavail = errno.EADDRNOTAVAIL  # what bind says for an address no interface has
    dadfailed = judge_address(
        AddressFacts("x", present=True, dadfailed=True, ifname="v0"), notavail
    )
    assert not dadfailed.ok and not dadfailed.transient
    for facts in (
        AddressFacts("x", present=True, tentative=True, ifname="v0"),
        AddressFacts("x"),
        AddressFacts("x", present=True, link_up=False, ifname="v0"),
        AddressFacts("x", loopback_down=True),
    ):
        verdict = judge_address(facts, notavail)
        assert not verdict.ok and verdict.transient, verdict
    # bind's errno is named (not a bare number) where it says why the address is not there yet
    assert "(bind: EADDRNOTAVAIL)" in judge_address(AddressFacts("x"), notavail).detail


def test_run_without_a_jail_still_waits_for_addresses(netns: str) -> None:
    """No chroot anywhere: nothing to prepare (warned), but the addresses are still checked."""
    blocked = in_ns(netns, "run", "--wait-addr", "127.0.0.1", "--timeout", "0.3", "--", "/bin/true")
    assert blocked.code == 69 and "lo is down" in blocked.error
    assert blocked.named("no_jail")
    fixed = in_ns(netns, "run", "--wait-addr", "127.0.0.1", "--ensure-loopback", "--", "/bin/true")
    assert fixed.code == 0, fixed.stderr
    assert fixed.named("checked") and fixed.named("handover")
