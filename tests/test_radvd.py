"""`jailshim run -- radvd -n -t JAIL -u radvd`: radvd's jail and user from its own argv, its
router advertisement seen by rdisc6 across a veth pair in the test's own network namespace."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jailshim.daemons.radvd import argv_options, jail_user
from jailshim.errors import UsageError
from tests.daemons import children, own_network, status_field, stop
from tests.stock import strategies
from tests.support import NSRUN, assert_ran, jailshim_argv, need, run, spawn

__all__ = ["own_network"]  # a fixture (tests/daemons.py) the fixtures here use

RADVD = "/usr/sbin/radvd"
PREFIX = "2001:db8:1::/64"
CONFIG = (
    "interface rv0 {\n"
    "  AdvSendAdvert on;\n"
    "  MinRtrAdvInterval 3;\n"
    "  MaxRtrAdvInterval 4;\n"
    f"  prefix {PREFIX} {{}};\n"
    "};\n"
)


@pytest.fixture
def radvd_bin(root: None, own_network: None) -> str:
    """Debian's radvd and its radvd user, rdisc6 (ndisc6) as the client, and a veth pair
    rv0 (radvd's) - rv1 (rdisc6's) in the test's own network namespace, gone with it."""
    need(os.access(RADVD, os.X_OK), "needs radvd (Debian package radvd)")
    need(shutil.which("rdisc6") is not None, "needs rdisc6 (Debian package ndisc6)")
    try:
        pwd.getpwnam("radvd")
    except KeyError:
        need(False, "needs the user radvd (Debian package radvd creates it)")
    for command in (
        ["ip", "link", "add", "rv0", "type", "veth", "peer", "name", "rv1"],
        # no duplicate address detection: the link-local addresses are usable at once
        ["sysctl", "-qw", "net.ipv6.conf.rv0.accept_dad=0", "net.ipv6.conf.rv1.accept_dad=0"],
        ["ip", "link", "set", "rv0", "up"],
        ["ip", "link", "set", "rv1", "up"],
    ):
        assert_ran(subprocess.run(command, capture_output=True, check=False))
    return RADVD


def make_jail(area: Path, config: str = CONFIG, user: str = "radvd") -> Path:
    """What radvd reads after its chroot: its config, etc/passwd and etc/group for its user
    (the host's lines), and run/ for its pid file — the operator's part of the jail."""
    jail = area / "jail"
    (jail / "etc").mkdir(parents=True)
    (jail / "run").mkdir()
    host = Path("/etc/passwd").read_text().splitlines()
    (jail / "etc/passwd").write_text(
        "\n".join(ln for ln in host if ln.split(":")[0] in ("root", user)) + "\n"
    )
    groups = Path("/etc/group").read_text().splitlines()
    (jail / "etc/group").write_text(
        "\n".join(ln for ln in groups if ln.split(":")[0] in ("root", "nogroup")) + "\n"
    )
    (jail / "etc/radvd.conf").write_text(config)
    for path in (jail, *jail.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return jail


def advertised(proc: subprocess.Popen[str]) -> str:
    """rdisc6's report of the router advertisement that answers its solicitation on rv1."""
    deadline = time.monotonic() + 20
    seen = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = stop(proc)
            raise AssertionError(f"exited with {proc.returncode}: {err}")
        done = subprocess.run(
            ["rdisc6", "-1", "-w", "1000", "rv1"], capture_output=True, text=True, check=False
        )
        seen = done.stdout
        if done.returncode == 0 and "Prefix" in seen:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"no router advertisement on rv1: {seen!r}")


def test_radvd_advertises_from_the_jail_its_argv_names(area: Path, radvd_bin: str) -> None:
    """No --chroot/--user: -t and -u from radvd's argv; rdisc6 on the veth's other end sees
    the prefix of the config inside the jail; radvd's root is the jail, its uid radvd's (its
    privsep child stays root, in the jail); `-m syslog` asks for /dev/log."""
    jail = make_jail(area)
    argv = [radvd_bin, "-n", "-m", "syslog", "--chrootdir", str(jail), "-u", "radvd"]
    proc = spawn(jailshim_argv("run", "--", *argv))
    try:
        report = advertised(proc)
        assert f"Prefix                   : {PREFIX}" in report, report
        assert os.readlink(f"/proc/{proc.pid}/root") == str(jail)
        assert status_field(proc.pid, "Uid").split() == [str(pwd.getpwnam("radvd").pw_uid)] * 4
        privsep = children(proc.pid)
        assert privsep and os.readlink(f"/proc/{privsep[0]}/root") == str(jail)
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    read = [json.loads(ln) for ln in stderr.splitlines() if '"radvd.config"' in ln]
    assert read and read[0]["chroot"] == str(jail) and read[0]["user"] == "radvd", stderr
    assert read[0]["log_sockets"] == ["/dev/log"]
    assert read[0]["files"] == [f"/etc/radvd.conf inside {jail}"]
    assert strategies(stderr) == {"mknod"}, stderr


_IN_USERNS = """
set -e
ip link set lo up
ip link add rv0 type veth peer name rv1
sysctl -qw net.ipv6.conf.rv0.accept_dad=0 net.ipv6.conf.rv1.accept_dad=0
ip link set rv0 up
ip link set rv1 up
"$@" 2> "$JAILSHIM_ERR" &
daemon=$!
for attempt in $(seq 100); do
    if rdisc6 -1 -w 500 rv1 > "$RDISC_OUT" 2>&1 && grep -q Prefix "$RDISC_OUT"; then break; fi
    kill -0 "$daemon"
    sleep 0.2
done
echo "root=$(readlink /proc/$daemon/root)"
echo "uid=$(awk '/^Uid:/ {print $2}' /proc/$daemon/status)"
kill "$daemon"
wait "$daemon" || true
"""


def test_radvd_advertises_from_its_jail_in_a_user_namespace(area: Path, radvd_bin: str) -> None:
    """The same in a user namespace (nsrun's 0-65535 map) with a mount namespace and a network
    namespace of its own (radvd's raw ICMPv6 socket needs CAP_NET_RAW over the network
    namespace, which root of a user namespace has only for one it owns): its own veth pair,
    jailshim binds the nodes (no mknod there), rdisc6 sees the prefix, radvd's root is the
    jail and its uid radvd's."""
    jail = make_jail(area)
    err, out = area / "jailshim.err", area / "rdisc6.out"
    argv = [radvd_bin, "-n", "-m", "stderr", "-t", str(jail), "-u", "radvd"]
    wrap = [sys.executable, NSRUN, "--mount", "--", "unshare", "--net", "sh", "-c", _IN_USERNS]
    done = subprocess.run(
        [*wrap, "sh", *jailshim_argv("run", "--", *argv)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAILSHIM_ERR": str(err), "RDISC_OUT": str(out)},
        check=False,
    )
    stderr = err.read_text() if err.exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + stderr
    assert f"Prefix                   : {PREFIX}" in out.read_text(), stderr
    assert f"root={jail}" in done.stdout
    assert f"uid={pwd.getpwnam('radvd').pw_uid}" in done.stdout
    assert "Traceback" not in stderr
    assert strategies(stderr) == {"bind"}, stderr


def test_chroot_without_user_is_refused_in_radvds_words(area: Path, radvd_bin: str) -> None:
    """radvd refuses -t without -u ("Chroot as root is not safe"): 78 when its argv is read,
    before its checker would chroot as root (`radvd -c` says the same, later)."""
    jail = make_jail(area)
    result = run("run", "--", radvd_bin, "-n", "-t", str(jail))
    assert result.code == 78, result.stderr
    assert "Chroot as root is not safe, exiting" in result.error
    assert result.error.startswith("radvd would refuse to start"), result.error
    assert not (jail / "dev").exists()


def test_broken_config_exits_78_in_radvds_words(area: Path, radvd_bin: str) -> None:
    """A config radvd cannot parse, read by `radvd -c` inside the jail: 78 with its words;
    what was prepared is taken back."""
    jail = make_jail(area, CONFIG.replace("AdvSendAdvert on;", "AdvSendAdvert maybe;"))
    result = run("run", "--", radvd_bin, "-n", "-m", "stderr", "-t", str(jail), "-u", "radvd")
    assert result.code == 78, result.stderr
    assert "radvd rejected its configuration" in result.error
    assert "syntax error" in result.error, result.error
    assert not (jail / "dev").exists()


def test_a_user_the_jail_does_not_know_is_refused(area: Path, radvd_bin: str) -> None:
    """radvd looks -u up after its chroot: a jail whose etc/passwd lacks the user would make it
    exit once started ("Couldn't find user"); 78 before the hand-over, in those words."""
    jail = make_jail(area, user="nobody-else")
    result = run("run", "--", radvd_bin, "-n", "-m", "stderr", "-t", str(jail), "-u", "radvd")
    assert result.code == 78, result.stderr
    assert "Couldn't find user 'radvd'" in result.error
    assert f"{jail}/etc/passwd has no 'radvd'" in result.error
    assert not (jail / "dev").exists()


def test_argv_is_read_as_getopt_long_reads_it(area: Path) -> None:
    """Long options with `=` or the next word, a unique prefix (--chroot), short ones combined,
    options after a stray word (glibc permutes) up to `--`; radvd's refusals are sentences."""
    assert argv_options(["radvd", "--chroot=/j", "stray", "-nu", "radvd", "--logm", "syslog"]) == {
        "t": ["/j"],
        "n": [""],
        "u": ["radvd"],
        "m": ["syslog"],
    }
    assert argv_options(["radvd", "-C/etc/x", "--", "-t", "/j"]) == {"C": ["/etc/x"]}
    with pytest.raises(UsageError, match="is ambiguous"):
        argv_options(["radvd", "--c", "x"])  # config, configtest
    with pytest.raises(UsageError, match="-f is not one it takes"):
        argv_options(["radvd", "-f", "3"])  # only --facility: "f" is not in OPTIONS_STR
    with pytest.raises(UsageError, match="needs a value"):
        argv_options(["radvd", "-t"])
    passwd = area / "etc" / "passwd"
    passwd.parent.mkdir()
    passwd.write_text("root:x:0:0::/root:/bin/sh\nradvd:x:108:65534::/run/radvd:/bin/false\n")
    assert jail_user(str(area), "radvd") == (108, 65534)
    assert jail_user(str(area), "nobody") is None


def test_log_method_decides_the_log_socket() -> None:
    """radvd's log method: syslog and stderr_syslog (its default when it daemonizes) want
    /dev/log in the jail, stderr (the default with -n) and logfile do not; an unknown one is
    radvd's own refusal."""
    from jailshim.daemons import load

    adapter = load("radvd")
    base = ["radvd", "-t", "/j", "-u", "radvd"]
    assert adapter.read(base, {}).sockets == ("/dev/log",)
    assert adapter.read([*base, "-n"], {}).sockets == ()
    assert adapter.read([*base, "-n", "-m", "stderr_syslog"], {}).sockets == ("/dev/log",)
    logfile = adapter.read([*base, "-m", "logfile", "-l", "/log/radvd.log"], {})
    assert logfile.sockets == () and "/j/log/radvd.log" in logfile.notes[0]
    with pytest.raises(UsageError, match='"unknown log method: loud"'):
        adapter.read([*base, "-m", "loud"], {})
