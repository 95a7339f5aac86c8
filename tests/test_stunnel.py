"""`jailshim run -- stunnel4 FILE`: Debian's stunnel, its jail and user from its global section."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jailshim.daemons.stunnel import identity_as_set
from jailshim.spec import Identity
from tests.daemons import (
    EchoServer,
    daemon_pid,
    echo_server,
    free_port,
    make_certificate,
    status_field,
    stop,
    tls_echo,
    wait_for_tls,
)
from tests.stock import copy_of, host_state, in_stock_layout, strategies
from tests.support import NSRUN, jailshim_argv, need, run, spawn


@pytest.fixture
def backend(own_network: None) -> Iterator[EchoServer]:
    with echo_server() as server:
        yield server


def write_stunnel_config(
    area: Path, jail: Path, port: int, backend: int, extra: str = "", *, setgid: bool = True
) -> Path:
    """TLS on 127.0.0.1:``port`` to a plain echo backend; chroot and identity in `global`."""
    pem = make_certificate(area)
    config = area / "stunnel.conf"
    config.write_text(
        "; global section\n"
        f"chroot = {jail}\n"
        "setuid = stunnel4\n"
        f"{'setgid = stunnel4' if setgid else ''}\n"
        "foreground = yes\n"
        "syslog = no\n"
        "pid =\n"
        f"{extra}"
        "[tls]\n"
        f"accept = 127.0.0.1:{port}\n"
        f"connect = 127.0.0.1:{backend}\n"
        f"cert = {pem}\n"
    )
    return config


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_stunnel_serves_tls_from_the_jail_its_config_names(
    area: Path, stunnel_bin: str, backend: EchoServer, where: str
) -> None:
    """No --chroot/--user: chroot, setuid, setgid from stunnel's global section; a TLS client
    gets its bytes echoed through stunnel; stunnel's root is the jail, its uid stunnel4."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    port = free_port()
    config = write_stunnel_config(area, jail, port, backend.port)
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    proc = spawn([*wrap, *jailshim_argv("run", "--", stunnel_bin, str(config))])
    try:
        wait_for_tls(port, proc)
        _, echoed = tls_echo(port, b"through stunnel")
        assert echoed == b"through stunnel"
        pid = daemon_pid(proc, "stunnel4")
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        uid = str(pwd.getpwnam("stunnel4").pw_uid)
        assert status_field(pid, "Uid").split() == [uid] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    read = [line for line in stderr.splitlines() if '"stunnel.config"' in line]
    assert read and f'"chroot": "{jail}"' in read[0] and '"user": "stunnel4"' in read[0], stderr
    # a user namespace forbids mknod: the bind rung of the ladder
    assert strategies(stderr) == ({"bind"} if wrap else {"mknod"}), stderr


def test_broken_config_exits_78_with_file_and_line(area: Path, stunnel_bin: str) -> None:
    """A line stunnel would refuse: exit 78 naming file:line; nothing prepared, no stunnel."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    config = write_stunnel_config(area, jail, free_port(), 9, extra="bogus line\n")
    result = run("run", "--", stunnel_bin, str(config))
    assert result.code == 78, result.stderr
    assert f"{config}:8" in result.error and "invalid line 'bogus line'" in result.error
    assert not (jail / "dev").exists()
    leftover = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, check=False)
    assert leftover.stdout == b""


def test_without_setgid_stunnel_keeps_root_gid_and_the_check_runs_so(
    area: Path, stunnel_bin: str, backend: EchoServer
) -> None:
    """`setuid =` without `setgid =`: stunnel 5.68 never touches its gid (drop_privileges()),
    so it runs with gid 0 and the groups it started with; the check ran as exactly that."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    port = free_port()
    config = write_stunnel_config(area, jail, port, backend.port, setgid=False)
    proc = spawn(jailshim_argv("run", "--", stunnel_bin, str(config)))
    try:
        wait_for_tls(port, proc)
        assert tls_echo(port, b"gid 0")[1] == b"gid 0"
        uid = str(pwd.getpwnam("stunnel4").pw_uid)
        assert status_field(proc.pid, "Uid").split() == [uid] * 4
        assert status_field(proc.pid, "Gid").split() == ["0"] * 4
        groups = sorted(int(g) for g in status_field(proc.pid, "Groups").split())
    finally:
        _, stderr = stop(proc)
    assert groups == sorted(set(os.getgroups()))
    privileges = [ln for ln in stderr.splitlines() if '"check": "privileges"' in ln]
    assert privileges and "gid 0/0/0/0" in privileges[0], stderr


def test_identity_is_the_one_drop_privileges_sets() -> None:
    """With a non-zero setgid: that gid alone (setgroups(1, [gid])), the user's other groups
    gone; with none, or gid 0 (which stunnel skips): the starting gid and groups."""
    user = Identity("stunnel4", 995, 995, (27, 995))
    assert identity_as_set(user, group_given=True) == Identity("stunnel4", 995, 995, (995,))
    keeps = user._replace(gid=os.getgid(), groups=tuple(sorted(set(os.getgroups()))))
    assert identity_as_set(user, group_given=False) == keeps
    assert identity_as_set(user._replace(gid=0), group_given=True) == keeps


SAMPLE = Path("/usr/share/doc/stunnel4/examples/stunnel.conf-sample")


def _from_sample(port: int, backend: int) -> str:
    """Debian's sample with its chroot and identity enabled (Debian's /var/lib/stunnel4, owned
    by stunnel4), `foreground = yes` (Debian's stunnel@.service needs it), and its commented
    server example enabled on a test port; its TLS client services to gmail.com are left out
    (they resolve and reach the internet)."""
    text = SAMPLE.read_text(encoding="utf-8")
    start, end = text.index("[gmail-pop3]"), text.index("; Encrypted HTTP proxy")
    text = text[:start] + text[end:]
    edits = {
        ";setuid = stunnel4": "setuid = stunnel4",
        ";setgid = stunnel4": "setgid = stunnel4\nchroot = /var/lib/stunnel4/",
        ";foreground = yes": "foreground = yes",
        ";[https]\n;accept  = 443\n;connect = 80\n": (
            f"[https]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend}\n"
        ),
        '\n;cert = /etc/stunnel/stunnel.pem\n; "TIMEOUTclose': (
            '\ncert = /etc/stunnel/stunnel.pem\n; "TIMEOUTclose'
        ),
    }
    for old, new in edits.items():
        assert text.count(old) == 1, f"Debian's sample changed: {old!r}"
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_stock_debian_stunnel_from_its_sample_serves_tls(
    area: Path, stunnel_bin: str, backend: EchoServer, where: str
) -> None:
    """Debian's stunnel.conf-sample (its UTF-8 byte order mark included) with the chroot and
    identity enabled, as /etc/stunnel/jailshim-test.conf, started as stunnel@jailshim-test
    starts it (`stunnel4 /etc/stunnel/jailshim-test.conf`) under `jailshim run` with no flags:
    Debian's /var/lib/stunnel4 (owned by stunnel4) is accepted as its own, prepared (mknod;
    bind in a user namespace), checked as stunnel4, and TLS reaches the echo backend. Copies
    stand at /etc/stunnel and /var/lib/stunnel4 in a private mount namespace."""
    stock = ("/etc/stunnel", "/var/lib/stunnel4")
    need(SAMPLE.exists(), f"needs Debian's {SAMPLE} (package stunnel4)")
    need(
        Path("/var/lib/stunnel4").stat().st_uid == pwd.getpwnam("stunnel4").pw_uid,
        "needs Debian's /var/lib/stunnel4, owned by stunnel4",
    )
    host_before = host_state(stock)
    etc, var = copy_of("/etc/stunnel", area), copy_of("/var/lib/stunnel4", area)
    port = free_port()
    shutil.copyfile(make_certificate(area), etc / "stunnel.pem")
    (etc / "stunnel.pem").chmod(0o600)
    (etc / "jailshim-test.conf").write_text(_from_sample(port, backend.port), encoding="utf-8")
    argv = in_stock_layout(
        {"/etc/stunnel": etc, "/var/lib/stunnel4": var},
        jailshim_argv("run", "--", stunnel_bin, "/etc/stunnel/jailshim-test.conf"),
        userns=where == "userns",
    )
    proc = spawn(argv)
    try:
        wait_for_tls(port, proc)
        assert tls_echo(port, b"from the sample")[1] == b"from the sample"
        pid = daemon_pid(proc, "stunnel4")
        assert os.readlink(f"/proc/{pid}/root") == "/var/lib/stunnel4"
        ids = pwd.getpwnam("stunnel4")
        assert status_field(pid, "Uid").split() == [str(ids.pw_uid)] * 4
        assert status_field(pid, "Gid").split() == [str(ids.pw_gid)] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    assert strategies(stderr) == ({"bind"} if where == "userns" else {"mknod"}), stderr
    read = [json.loads(ln) for ln in stderr.splitlines() if '"stunnel.config"' in ln]
    assert read and read[0]["chroot"] == "/var/lib/stunnel4", stderr
    assert read[0]["user"] == "stunnel4" and read[0]["group"] == "stunnel4"
    assert read[0]["files"] == ["/etc/stunnel/jailshim-test.conf"]
    assert "daemon's own user or group (stunnel4)" in stderr
    assert host_state(stock) == host_before
