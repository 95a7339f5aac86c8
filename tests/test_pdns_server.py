"""`jailshim run -- pdns_server …`: PowerDNS Authoritative Server 4.7 with its bind backend, its
jail and identity from `pdns_server --config=diff`, answering kdig from the jail."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jailshim.daemons.pdns_common import file_words, missing_inside, socket_directory
from jailshim.daemons.pdns_server import backend_settings, bind_configs
from tests.daemons import (
    daemon_pid,
    descendants,
    free_port,
    own_network,
    status_field,
    stop,
    wait_for_dns,
)
from tests.stock import copy_of, host_state, in_stock_layout, strategies
from tests.support import NSRUN, clean_env, jailshim_argv, need, run, spawn

__all__ = ["own_network"]  # a fixture (tests/daemons.py) the fixtures here use

SERVER = "/usr/sbin/pdns_server"
NAMED_CONF = 'zone "example.test" { type master; file "/example.test.zone"; };\n'
ZONE = """$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 300
@ IN NS ns1
ns1 IN A 192.0.2.1
www IN A 192.0.2.80
"""


@pytest.fixture
def server_bin(root: None, own_network: None) -> str:
    """Debian's pdns_server with its bind backend, its pdns user, and kdig as the client."""
    need(os.access(SERVER, os.X_OK), "needs pdns_server (Debian package pdns-server)")
    need(
        Path("/usr/lib/x86_64-linux-gnu/pdns/libbindbackend.so").exists()
        or any(Path("/usr/lib").glob("*/pdns/libbindbackend.so")),
        "needs the bind backend (Debian package pdns-backend-bind)",
    )
    need(shutil.which("kdig") is not None, "needs kdig (Debian package knot-dnsutils)")
    try:
        pwd.getpwnam("pdns")
    except KeyError:
        need(False, "needs the user pdns (Debian package pdns-server creates it)")
    return SERVER


def write_config(area: Path, jail: Path, port: int, extra: str = "") -> Path:
    """CONFIG-DIR/pdns.conf: the jail and identity, the bind backend with its named.conf at the
    jail's root (read after the chroot), one loopback address on a test port; no security poll
    (it would ask the internet)."""
    directory = area / "powerdns"
    directory.mkdir()
    (directory / "pdns.conf").write_text(
        f"chroot={jail}\n"
        "setuid=pdns\n"
        "setgid=pdns\n"
        "launch=bind\n"
        "bind-config=/named.conf\n"
        "local-address=127.0.0.1\n"
        f"local-port={port}\n"
        "security-poll-suffix=\n"
        f"{extra}"
    )
    return directory


def make_jail(area: Path, *, zone: bool = True) -> Path:
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    if zone:
        (jail / "named.conf").write_text(NAMED_CONF)
        (jail / "example.test.zone").write_text(ZONE)
    return jail


def _config_events(stderr: str) -> list[dict[str, object]]:
    events = [json.loads(ln) for ln in stderr.splitlines() if '"pdns_server.config"' in ln]
    return [event for event in events if "files" in event]  # not the notes' warnings


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_server_answers_kdig_from_the_jail_its_config_names(
    area: Path, server_bin: str, where: str
) -> None:
    """No --chroot/--user: chroot, setuid, setgid from `--config=diff`; kdig gets the zone's
    A record from the jailed server, which read its named.conf and zone inside the jail; its
    root is the jail, its uid and gid pdns's; its control socket is in the jail's root."""
    jail = make_jail(area)
    port = free_port()
    directory = write_config(area, jail, port)
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    command = [server_bin, "--daemon=no", "--guardian=no", f"--config-dir={directory}"]
    proc = spawn([*wrap, *jailshim_argv("run", "--", *command)])
    try:
        wait_for_dns(port, proc, "192.0.2.80", name="www.example.test")
        pid = daemon_pid(proc, "pdns_server")
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        ids = pwd.getpwnam("pdns")
        assert status_field(pid, "Uid").split() == [str(ids.pw_uid)] * 4
        assert status_field(pid, "Gid").split() == [str(ids.pw_gid)] * 4
        assert (jail / "pdns.controlsocket").is_socket()
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    read = _config_events(stderr)
    assert read and read[0]["chroot"] == str(jail) and read[0]["user"] == "pdns", stderr
    assert read[0]["group"] == "pdns" and read[0]["log_sockets"] == ["/dev/log"]
    assert read[0]["addresses"] == ["127.0.0.1"] and read[0]["socket_dir"] == str(jail)
    assert read[0]["bind_config"] == str(jail / "named.conf")
    assert read[0]["files"] == [f"{directory}/pdns.conf"]
    assert strategies(stderr) == ({"bind"} if wrap else {"mknod"}), stderr


def test_chroot_under_notify_socket_is_refused_in_the_servers_words(
    area: Path, server_bin: str
) -> None:
    """pdns_server 4.7 exits when chrooted with $NOTIFY_SOCKET set (auth-main.cc,
    mainthread): 78 with its own sentence before anything is prepared."""
    jail = make_jail(area)
    directory = write_config(area, jail, free_port())
    result = run(
        "run",
        "--",
        server_bin,
        "--daemon=no",
        f"--config-dir={directory}",
        env=clean_env(NOTIFY_SOCKET=str(area / "notify")),
    )
    assert result.code == 78, result.stderr
    assert "Unable to chroot when running from systemd" in result.error
    assert "Type=simple" in result.error
    assert not (jail / "dev").exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("bogus-setting=1\n", "Trying to set unknown setting 'bogus-setting'"),
        # a backend's own setting: known only once launch= declared it (the strict re-read)
        ("bind-bogus=1\n", "Trying to set unknown setting 'bind-bogus'"),
    ],
)
def test_broken_config_exits_78_in_the_servers_words(
    area: Path, server_bin: str, extra: str, words: str
) -> None:
    """A setting the server does not know passes `--config=diff` (lax) but not
    `--config=check`: 78 with its words; what was prepared in the jail is taken back."""
    jail = make_jail(area)
    directory = write_config(area, jail, free_port(), extra)
    result = run("run", "--", server_bin, "--daemon=no", f"--config-dir={directory}")
    assert result.code == 78, result.stderr
    assert words in result.error and "--config=check" in result.error
    assert not (jail / "dev").exists()


def test_an_unknown_backend_exits_78_from_the_dump(area: Path, server_bin: str) -> None:
    """launch= naming no backend module: the dump itself fails, 78 with its words."""
    jail = make_jail(area)
    directory = write_config(area, jail, free_port(), "launch=nosuch\n")
    result = run("run", "--", server_bin, "--daemon=no", f"--config-dir={directory}")
    assert result.code == 78, result.stderr
    assert "--config=diff" in result.error and "nosuch" in result.error
    assert not (jail / "dev").exists()


def test_bind_config_missing_from_the_jail_is_refused_before_anything(
    area: Path, server_bin: str
) -> None:
    """The bind backend opens bind-config after the chroot: a named.conf only outside the
    jail (where `--config=check` is content) would end the server with "Unable to open";
    jailshim refuses (78) and names the path inside the jail, preparing nothing."""
    jail = make_jail(area, zone=False)
    (area / "named.conf").write_text(NAMED_CONF)
    directory = write_config(area, jail, free_port(), f"bind-config={area}/named.conf\n")
    result = run("run", "--", server_bin, "--daemon=no", f"--config-dir={directory}")
    assert result.code == 78, result.stderr
    assert f"bind-config={area}/named.conf after its chroot" in result.error
    assert f"{jail}{area}/named.conf" in result.error
    assert not (jail / "dev").exists()


def test_socket_dir_from_runtime_directory_must_have_its_parent_in_the_jail(
    area: Path, server_bin: str
) -> None:
    """Under systemd socket-dir defaults to $RUNTIME_DIRECTORY (/run/pdns), made as
    CHROOT/run/pdns by one mkdir: without CHROOT/run the server would exit; jailshim says so
    (78) before preparing anything, naming $RUNTIME_DIRECTORY as the source (under pdns.service
    the operator never wrote that path), and accepts the run once the jail has run/."""
    jail = make_jail(area)
    directory = write_config(area, jail, free_port())
    argv = ["run", "--dry-run", "--", server_bin, "--daemon=no", f"--config-dir={directory}"]
    result = run(*argv, env=clean_env(RUNTIME_DIRECTORY="/run/pdns"))
    assert result.code == 78, result.stderr
    assert f"{jail}/run/pdns" in result.error and "Unable to create socket directory" in (
        result.error
    )
    # the operator never wrote run/pdns: the sentence says it is systemd's, and the way out
    assert "socket-dir is $RUNTIME_DIRECTORY=/run/pdns, systemd's RuntimeDirectory=" in (
        result.error
    )
    assert "socket-dir=/: the jail's root" in result.error
    (jail / "run").mkdir()
    result = run(*argv, env=clean_env(RUNTIME_DIRECTORY="/run/pdns"))
    assert result.code == 0, result.stderr
    read = _config_events(result.stderr)
    assert read and read[0]["socket_dir"] == f"{jail}/run/pdns", result.stderr


def test_settings_files_are_read_as_argvmap_reads_them(tmp_path: Path) -> None:
    """Comments (`#` at the start or after a space only), continuations, include-dir's *.conf
    in case-insensitive order, argv last; bind and bind:NAME's config settings."""
    assert file_words("a=1 # c\nb=x#y\n  c = 2 \\\n3\n#d=4\n\n") == [
        "--a=1",
        "--b=x#y",
        "--c = 2 3",
    ]
    include = tmp_path / "pdns.d"
    include.mkdir()
    (include / "B.conf").write_text("bind-config=/b\n")
    (include / "a.conf").write_text("bind-config=/a\nbind-two-config=/two\n")
    (include / ".x.conf").write_text("bind-config=/hidden\n")
    (include / "c.txt").write_text("bind-config=/txt\n")
    main = tmp_path / "pdns.conf"
    main.write_text(f"include-dir={include}\nbind-config=/main\n")
    settings = backend_settings(["pdns_server"], str(main), str(include))
    assert settings["bind-config"] == "/b"
    assert (
        backend_settings(["x", "--bind-config=/argv"], str(main), str(include))["bind-config"]
        == "/argv"
    )
    assert bind_configs("bind, bind:two gsqlite3", settings) == [
        ("bind-config", "/b"),
        ("bind-two-config", "/two"),
    ]
    assert socket_directory({}, {}, "/j", "/u") == "/j"
    assert socket_directory({"socket-dir": "/s"}, {"RUNTIME_DIRECTORY": "/r"}, "/j", "/u") == "/j/s"
    assert socket_directory({}, {"RUNTIME_DIRECTORY": "/run/pdns"}, "/j", "/u") == "/j/run/pdns"


# -- Debian's own pdns.conf, pdns.d/bind.conf and named.conf -------------------------------------

UNIT_ARGS = ("--guardian=no", "--daemon=no", "--disable-syslog", "--log-timestamp=no")


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_stock_debian_server_answers_from_its_jail(area: Path, server_bin: str, where: str) -> None:
    """Debian's /etc/powerdns (as shipped: pdns.conf with include-dir=/etc/powerdns/pdns.d,
    whose bind.conf launches bind with bind-config=/etc/powerdns/named.conf) with only chroot
    (Debian's pdns home, /var/spool/powerdns), the identity a chroot needs and a test port
    set, started with Debian's unit's arguments under `jailshim run` with no flags, from copies
    bound at their paths in a private mount namespace. The bind backend reads named.conf after
    the chroot, so the jail holds Debian's named.conf (with one zone added) at
    etc/powerdns/named.conf and the supermaster.conf it includes: kdig gets the zone's A."""
    stock = ("/etc/powerdns", "/var/spool/powerdns")
    need(all(Path(p).is_dir() for p in stock), f"needs Debian's {', '.join(stock)}")
    host_before = host_state(stock)
    etc, spool = copy_of("/etc/powerdns", area), copy_of("/var/spool/powerdns", area)
    port = free_port()
    conf = etc / "pdns.conf"
    text = conf.read_text()
    edits = {
        "# chroot=\n": "chroot=/var/spool/powerdns\n",
        "# setuid=\n": "setuid=pdns\n",
        "# setgid=\n": "setgid=pdns\n",
        "# local-port=53\n": f"local-port={port}\n",
    }
    for old, new in edits.items():
        assert text.count(old) == 1, f"Debian's pdns.conf changed: {old!r}"
        text = text.replace(old, new)
    conf.write_text(text)
    assert "bind-config=/etc/powerdns/named.conf" in (etc / "pdns.d" / "bind.conf").read_text()
    inside = spool / "etc" / "powerdns"
    inside.mkdir(parents=True)
    named = (etc / "named.conf").read_text()
    assert 'include "/var/lib/powerdns/supermaster.conf";' in named
    zone_file = "/etc/powerdns/example.test.zone"
    (inside / "named.conf").write_text(
        named + f'zone "example.test" {{ type master; file "{zone_file}"; }};\n'
    )
    (inside / "example.test.zone").write_text(ZONE)
    (spool / "var" / "lib" / "powerdns").mkdir(parents=True)
    (spool / "var" / "lib" / "powerdns" / "supermaster.conf").write_text("")
    argv = in_stock_layout(
        {"/etc/powerdns": etc, "/var/spool/powerdns": spool},
        jailshim_argv("run", "--", server_bin, *UNIT_ARGS),
        userns=where == "userns",
    )
    proc = spawn(argv)
    try:
        wait_for_dns(port, proc, "192.0.2.80", name="www.example.test")
        pid = daemon_pid(proc, "pdns_server")
        assert os.readlink(f"/proc/{pid}/root") == "/var/spool/powerdns"
        assert status_field(pid, "Uid").split() == [str(pwd.getpwnam("pdns").pw_uid)] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    assert strategies(stderr) == ({"bind"} if where == "userns" else {"mknod"}), stderr
    read = _config_events(stderr)
    assert read and read[0]["chroot"] == "/var/spool/powerdns", stderr
    assert read[0]["files"] == ["/etc/powerdns/pdns.conf", "/etc/powerdns/pdns.d/bind.conf"]
    assert read[0]["log_sockets"] == []
    assert read[0]["bind_config"] == "/var/spool/powerdns/etc/powerdns/named.conf"
    assert "daemon's own user or group (pdns)" in stderr
    assert host_state(stock) == host_before


def test_setgid_without_setuid_keeps_root_and_jailshim_says_so(area: Path, server_bin: str) -> None:
    """`setgid=` alone: the server stays uid 0 in its jail (dropUserPrivs(0) does nothing);
    jailshim, which takes no group without a user, checks as root and says why instead of
    refusing the run as a usage error."""
    jail = make_jail(area)
    directory = area / "powerdns"
    write_config(area, jail, free_port())
    conf = directory / "pdns.conf"
    conf.write_text(conf.read_text().replace("setuid=pdns\n", ""))
    result = run("run", "--dry-run", "--", server_bin, "--daemon=no", f"--config-dir={directory}")
    assert result.code == 0, result.stderr
    assert "setgid=pdns without setuid=: pdns_server keeps uid 0" in result.stderr


def test_guardian_stays_outside_the_jail_and_jailshim_says_so(area: Path, server_bin: str) -> None:
    """guardian=yes: the process jailshim hands over to is the guardian, root and unchrooted;
    it exec's an instance (a child) that chroots and becomes pdns and answers; jailshim's note
    says which is which."""
    jail = make_jail(area)
    port = free_port()
    directory = write_config(area, jail, port)
    command = [server_bin, "--daemon=no", "--guardian=yes", f"--config-dir={directory}"]
    proc = spawn(jailshim_argv("run", "--", *command))
    try:
        wait_for_dns(port, proc, "192.0.2.80", name="www.example.test")
        assert os.readlink(f"/proc/{proc.pid}/root") == "/"
        assert status_field(proc.pid, "Uid").split() == ["0"] * 4
        instances = [
            p for p in descendants(proc.pid) if os.readlink(f"/proc/{p}/root") == str(jail)
        ]
        assert instances, descendants(proc.pid)
        ids = pwd.getpwnam("pdns")
        assert status_field(instances[0], "Uid").split() == [str(ids.pw_uid)] * 4
    finally:
        _, stderr = stop(proc)
    assert "guardian=yes: the process jailshim hands over to stays root outside the jail" in stderr


def test_bind_config_is_looked_for_in_the_jail_without_following_symlinks(tmp_path: Path) -> None:
    """A missing component or a non-file is surely missing; a symlink on the way resolves
    inside the jail for the server (an absolute target is the jail's), so jailshim, which
    never follows one, leaves it to the server."""
    jail = tmp_path / "jail"
    (jail / "etc").mkdir(parents=True)
    (jail / "etc" / "named.conf").write_text(NAMED_CONF)
    (jail / "link.conf").symlink_to("/etc/named.conf")  # the jail's, for the server
    (jail / "host.conf").symlink_to(tmp_path / "nowhere")  # absent on the host: not judged
    assert not missing_inside(str(jail), "/etc/named.conf")
    assert not missing_inside(str(jail), "etc/./named.conf")
    assert missing_inside(str(jail), "/etc/none.conf")
    assert missing_inside(str(jail), "/etc")  # a directory is no file
    assert missing_inside(str(jail), "/etc/named.conf/x")
    assert not missing_inside(str(jail), "/link.conf")
    assert not missing_inside(str(jail), "/host.conf")


def test_stock_debian_named_conf_outside_the_jail_is_refused(area: Path, server_bin: str) -> None:
    """Debian's pdns.d/bind.conf names /etc/powerdns/named.conf: with only chroot, identity and
    a port set, the server would exit after its chroot ("Unable to open"); jailshim refuses
    (78) first and names the path inside the jail where named.conf must be."""
    stock = ("/etc/powerdns", "/var/spool/powerdns")
    need(all(Path(p).is_dir() for p in stock), f"needs Debian's {', '.join(stock)}")
    etc, spool = copy_of("/etc/powerdns", area), copy_of("/var/spool/powerdns", area)
    conf = etc / "pdns.conf"
    text = conf.read_text()
    for old, new in (
        ("# chroot=\n", "chroot=/var/spool/powerdns\n"),
        ("# setuid=\n", "setuid=pdns\n"),
    ):
        assert text.count(old) == 1, f"Debian's pdns.conf changed: {old!r}"
        text = text.replace(old, new)
    conf.write_text(text + f"local-port={free_port()}\n")
    argv = in_stock_layout(
        {"/etc/powerdns": etc, "/var/spool/powerdns": spool},
        jailshim_argv("run", "--", server_bin, *UNIT_ARGS),
        userns=False,
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 78, done.stderr
    assert "bind-config=/etc/powerdns/named.conf after its chroot" in done.stderr
    assert "/var/spool/powerdns/etc/powerdns/named.conf" in done.stderr
    assert not (spool / "dev").exists()
