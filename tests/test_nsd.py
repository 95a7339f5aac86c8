"""`jailshim run -- nsd`: Debian's nsd, its jail and user read through nsd-checkconf."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemons import (
    SyslogSocket,
    descendants,
    free_port,
    status_field,
    stop,
    wait_for_dns,
)
from tests.stock import copy_of, host_state, in_stock_layout, strategies
from tests.support import NSRUN, clean_env, jailshim_argv, need, run, spawn

ANSWER = "192.0.2.54"


def write_nsd_config(jail: Path, port: int, extra: str = "") -> Path:
    """A config chrooted at ``jail`` serving zone jailshim.test on 127.0.0.1:``port``; what
    nsd writes (xfrd state, zone list) goes to jail/var, owned by nsd."""
    var = jail / "var"
    var.mkdir()
    nsd = pwd.getpwnam("nsd")
    os.chown(var, nsd.pw_uid, nsd.pw_gid)
    (jail / "jailshim.test.zone").write_text(
        "$ORIGIN jailshim.test.\n$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n"
        f"@ IN NS ns\nns IN A 127.0.0.1\nanswer IN A {ANSWER}\n"
    )
    config = jail / "nsd.conf"
    config.write_text(
        "server:\n"
        f'    chroot: "{jail}"\n'
        '    username: "nsd"\n'
        f"    ip-address: 127.0.0.1@{port}\n"
        "    do-ip6: no\n"
        f'    zonesdir: "{jail}"\n'
        '    database: ""\n'
        '    pidfile: ""\n'
        f'    xfrdfile: "{var}/xfrd.state"\n'
        f'    zonelistfile: "{var}/zone.list"\n'
        f'    xfrdir: "{var}"\n'
        "    server-count: 1\n"
        f"{extra}"
        "remote-control:\n"
        "    control-enable: no\n"
        "zone:\n"
        '    name: "jailshim.test"\n'
        '    zonefile: "jailshim.test.zone"\n'
    )
    return config


def nsd_servers(proc: subprocess.Popen[str]) -> list[int]:
    """nsd's children (xfrd and the server): they are the ones that chroot and drop to nsd."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = []
        for pid in [proc.pid, *descendants(proc.pid)]:
            try:
                exe = Path(f"/proc/{pid}/exe").resolve().name
                if exe == "nsd" and status_field(pid, "Uid").split()[0] != "0":
                    found.append(pid)
            except OSError:  # gone meanwhile
                continue
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("no nsd process running as nsd")


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_nsd_answers_from_the_jail_its_config_names(area: Path, nsd_bin: str, where: str) -> None:
    """No --chroot/--user: the jail and user come from nsd-checkconf; kdig gets the zone's
    answer; nsd's serving processes have the jail as root and run as user nsd."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    port = free_port()
    config = write_nsd_config(jail, port)
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    proc = spawn([*wrap, *jailshim_argv("run", "--", nsd_bin, "-d", "-c", str(config))])
    try:
        wait_for_dns(port, proc, ANSWER)
        uid = str(pwd.getpwnam("nsd").pw_uid)
        for pid in nsd_servers(proc):
            assert os.readlink(f"/proc/{pid}/root") == str(jail)
            assert status_field(pid, "Uid").split() == [uid] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    read = [line for line in stderr.splitlines() if '"nsd.config"' in line]
    assert read and f'"chroot": "{jail}"' in read[0] and '"user": "nsd"' in read[0], stderr
    # a user namespace forbids mknod: the bind rung of the ladder
    assert strategies(stderr) == ({"bind"} if wrap else {"mknod"}), stderr


def test_broken_config_exits_78_with_nsd_checkconfs_words(area: Path, nsd_bin: str) -> None:
    """nsd-checkconf rejects the config: exit 78 with its words; nothing prepared, no nsd."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    config = write_nsd_config(jail, free_port(), extra="    bogus-option: yes\n")
    result = run("run", "--", nsd_bin, "-d", "-c", str(config))
    assert result.code == 78, result.stderr
    assert "bogus-option" in result.error and f"{config}" in result.error
    assert not (jail / "dev").exists()
    leftover = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, check=False)
    assert leftover.stdout == b""


def test_chrooted_nsd_reaches_the_notify_socket(area: Path, nsd_bin: str) -> None:
    """Debian's nsd.service is Type=notify: nsd's xfrd sends READY=1 from inside the jail as
    user nsd; NOTIFY_SOCKET (a path) is bound there, checked as nsd, and the datagram arrives."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    port = free_port()
    config = write_nsd_config(jail, port)
    listener = SyslogSocket(area / "notify.sock")
    env = clean_env(NOTIFY_SOCKET=str(listener.path))
    proc = spawn(jailshim_argv("run", "--", nsd_bin, "-d", "-c", str(config)), env)
    try:
        wait_for_dns(port, proc, ANSWER)
        said = listener.receive(timeout=10)
        assert any("READY=1" in datagram.split("\n") for datagram in said), said
    finally:
        _, stderr = stop(proc)
        listener.close()
    checks = [ln for ln in stderr.splitlines() if '"check": "notify socket"' in ln]
    assert checks and '"ok": true' in checks[0], stderr


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_stock_debian_nsd_in_var_lib_nsd_answers(area: Path, nsd_bin: str, where: str) -> None:
    """Debian's own /etc/nsd/nsd.conf, with one file in its nsd.conf.d: the chroot (Debian's
    /var/lib/nsd, owned by nsd, where the stock database, xfrd state and zone list already
    are), what nsd requires inside a chroot (zonesdir, xfrdir; no pidfile, as nsd.service's
    -P ""), a test address and a zone to serve. Started as Debian's nsd.service starts it
    (`nsd -d -P ""`) under `jailshim run` with no flags: the jail is accepted as nsd's own,
    prepared (mknod; bind in a user namespace), and nsd answers kdig from it. Copies stand at
    /etc/nsd and /var/lib/nsd in a private mount namespace; the host's are left as they were."""
    stock = ("/etc/nsd", "/var/lib/nsd")
    need(Path("/etc/nsd/nsd.conf").exists(), "needs Debian's /etc/nsd/nsd.conf (package nsd)")
    need(
        Path("/var/lib/nsd").stat().st_uid == pwd.getpwnam("nsd").pw_uid,
        "needs Debian's /var/lib/nsd, owned by nsd",
    )
    host_before = host_state(stock)
    etc, var = copy_of("/etc/nsd", area), copy_of("/var/lib/nsd", area)
    port = free_port()
    (var / "jailshim.test.zone").write_text(
        "$ORIGIN jailshim.test.\n$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n"
        f"@ IN NS ns\nns IN A 127.0.0.1\nanswer IN A {ANSWER}\n"
    )
    (etc / "nsd.conf.d" / "jailshim-test.conf").write_text(
        "server:\n"
        '    chroot: "/var/lib/nsd"\n'
        '    zonesdir: "/var/lib/nsd"\n'
        '    xfrdir: "/var/lib/nsd"\n'
        '    pidfile: ""\n'
        f"    ip-address: 127.0.0.1@{port}\n"
        "zone:\n"
        '    name: "jailshim.test"\n'
        '    zonefile: "jailshim.test.zone"\n'
    )
    argv = in_stock_layout(
        {"/etc/nsd": etc, "/var/lib/nsd": var},
        jailshim_argv("run", "--", nsd_bin, "-d", "-P", ""),
        userns=where == "userns",
    )
    proc = spawn(argv)
    try:
        wait_for_dns(port, proc, ANSWER)
        uid = str(pwd.getpwnam("nsd").pw_uid)
        servers = nsd_servers(proc)
        for pid in servers:
            assert os.readlink(f"/proc/{pid}/root") == "/var/lib/nsd"
            assert status_field(pid, "Uid").split() == [uid] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    assert strategies(stderr) == ({"bind"} if where == "userns" else {"mknod"}), stderr
    read = [json.loads(ln) for ln in stderr.splitlines() if '"nsd.config"' in ln]
    assert read and read[0]["chroot"] == "/var/lib/nsd" and read[0]["user"] == "nsd", stderr
    assert read[0]["files"] == ["/etc/nsd/nsd.conf"] and read[0]["log_sockets"] == ["/dev/log"]
    assert '"jail.writable"' in stderr and "daemon's own user or group (nsd)" in stderr
    assert host_state(stock) == host_before


@pytest.mark.parametrize("socket_set", [False, True], ids=["no-notify-socket", "notify-socket"])
def test_config_event_says_notify_capable_apart_from_the_socket(
    area: Path, nsd_bin: str, socket_set: bool
) -> None:
    """nsd.config said `"notify": true` with NOTIFY_SOCKET unset: now notify_capable (xfrd
    sends READY=1 from inside) and notify_socket (null without one)."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    config = write_nsd_config(jail, free_port())
    socket_path = str(area / "notify.sock")
    env = clean_env(NOTIFY_SOCKET=socket_path) if socket_set else clean_env()
    result = run("run", "--dry-run", "--", nsd_bin, "-d", "-c", str(config), env=env)
    assert result.code == 0, result.stderr
    read = result.named("nsd.config")[0]
    assert "notify" not in read and read["notify_capable"] is True, read
    assert read["notify_socket"] == (socket_path if socket_set else None), read
