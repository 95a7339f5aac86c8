"""`jailshim run -- pdns_recursor …`: PowerDNS Recursor, its jail and identity from
`pdns_recursor --config=diff`, answering kdig from the jail."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from jailshim.daemons.pdns_recursor import (
    config_file,
    identity_as_set,
    local_addresses,
    settings_of,
)
from jailshim.spec import Identity
from tests.daemons import (
    daemon_pid,
    free_port,
    own_network,
    status_field,
    stop,
    wait_for_dns,
)
from tests.stock import copy_of, host_state, in_stock_layout, strategies
from tests.support import NSRUN, clean_env, jailshim_argv, need, run, spawn

__all__ = ["own_network"]  # a fixture (tests/daemons.py) the fixtures here use

RECURSOR = "/usr/sbin/pdns_recursor"


@pytest.fixture
def recursor_bin(root: None, own_network: None) -> str:
    """Debian's pdns_recursor, its pdns user, and kdig as the client."""
    need(os.access(RECURSOR, os.X_OK), "needs pdns_recursor (Debian package pdns-recursor)")
    need(shutil.which("kdig") is not None, "needs kdig (Debian package knot-dnsutils)")
    try:
        pwd.getpwnam("pdns")
    except KeyError:
        need(False, "needs the user pdns (Debian package pdns-recursor creates it)")
    return RECURSOR


def write_config(
    area: Path, jail: Path, port: int, extra: str = "", *, setgid: bool = True
) -> Path:
    """CONFIG-DIR/recursor.conf: the jail and identity, one loopback address on a test port;
    no security poll (it would ask the internet)."""
    directory = area / "powerdns"
    directory.mkdir()
    (directory / "recursor.conf").write_text(
        f"chroot={jail}\n"
        "setuid=pdns\n"
        f"{'setgid=pdns' if setgid else ''}\n"
        "local-address=127.0.0.1\n"
        f"local-port={port}\n"
        "security-poll-suffix=\n"
        f"{extra}"
    )
    return directory


def make_jail(area: Path) -> Path:
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    return jail


def _config_events(stderr: str) -> list[dict[str, object]]:
    events = [json.loads(ln) for ln in stderr.splitlines() if '"pdns_recursor.config"' in ln]
    return [event for event in events if "files" in event]  # not the notes' warnings


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_recursor_answers_kdig_from_the_jail_its_config_names(
    area: Path, recursor_bin: str, where: str
) -> None:
    """No --chroot/--user: chroot, setuid, setgid from `--config=diff`; kdig gets localhost's
    A from the jailed recursor; its root is the jail, its uid and gid pdns's; its pid file and
    control socket are in the jail's root (socket-dir "/" when chrooted), as jailshim said."""
    jail = make_jail(area)
    port = free_port()
    directory = write_config(area, jail, port)
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    command = [recursor_bin, "--daemon=no", f"--config-dir={directory}"]
    proc = spawn([*wrap, *jailshim_argv("run", "--", *command)])
    try:
        wait_for_dns(port, proc, "127.0.0.1", name="localhost")
        pid = daemon_pid(proc, "pdns_recursor")
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        ids = pwd.getpwnam("pdns")
        assert status_field(pid, "Uid").split() == [str(ids.pw_uid)] * 4
        assert status_field(pid, "Gid").split() == [str(ids.pw_gid)] * 4
        assert (jail / "pdns_recursor.controlsocket").is_socket()
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    read = _config_events(stderr)
    assert read and read[0]["chroot"] == str(jail) and read[0]["user"] == "pdns", stderr
    assert read[0]["group"] == "pdns" and read[0]["log_sockets"] == ["/dev/log"]
    assert read[0]["addresses"] == ["127.0.0.1"] and read[0]["socket_dir"] == str(jail)
    assert read[0]["files"] == [f"{directory}/recursor.conf"]
    assert strategies(stderr) == ({"bind"} if wrap else {"mknod"}), stderr


def test_without_setgid_the_recursor_keeps_root_gid_and_the_check_runs_so(
    area: Path, recursor_bin: str
) -> None:
    """`setuid=` without `setgid=`: dropGroupPrivs() leaves the gid and groups alone, so the
    recursor runs with gid 0 and the groups it started with; the check ran as exactly that."""
    jail = make_jail(area)
    port = free_port()
    directory = write_config(area, jail, port, setgid=False)
    proc = spawn(
        jailshim_argv("run", "--", recursor_bin, "--daemon=no", f"--config-dir={directory}")
    )
    try:
        wait_for_dns(port, proc, "127.0.0.1", name="localhost")
        assert status_field(proc.pid, "Uid").split() == [str(pwd.getpwnam("pdns").pw_uid)] * 4
        assert status_field(proc.pid, "Gid").split() == ["0"] * 4
        groups = sorted(int(g) for g in status_field(proc.pid, "Groups").split())
    finally:
        _, stderr = stop(proc)
    assert groups == sorted(set(os.getgroups()))
    privileges = [ln for ln in stderr.splitlines() if '"check": "privileges"' in ln]
    assert privileges and "gid 0/0/0/0" in privileges[0], stderr


def test_chroot_under_notify_socket_is_refused_in_the_recursors_words(
    area: Path, recursor_bin: str
) -> None:
    """pdns_recursor 4.8 exits when chrooted with $NOTIFY_SOCKET set (rec-main.cc): 78 with
    its own sentence before anything is prepared — a notify socket in the jail cannot help."""
    jail = make_jail(area)
    directory = write_config(area, jail, free_port())
    result = run(
        "run",
        "--",
        recursor_bin,
        "--daemon=no",
        f"--config-dir={directory}",
        env=clean_env(NOTIFY_SOCKET=str(area / "notify")),
    )
    assert result.code == 78, result.stderr
    assert "Unable to chroot when running from systemd" in result.error
    assert "Type=simple" in result.error
    assert not (jail / "dev").exists()


def test_broken_config_exits_78_in_the_recursors_words(area: Path, recursor_bin: str) -> None:
    """A setting the recursor does not know passes `--config=diff` (lax) but not
    `--config=check`: 78 with its words; what was prepared in the jail is taken back."""
    jail = make_jail(area)
    directory = write_config(area, jail, free_port(), "bogus-setting=1\n")
    result = run("run", "--", recursor_bin, "--daemon=no", f"--config-dir={directory}")
    assert result.code == 78, result.stderr
    assert "Trying to set unknown setting 'bogus-setting'" in result.error
    assert "--config=check" in result.error
    assert not (jail / "dev").exists()


def test_command_line_is_read_as_argvmap_reads_it() -> None:
    """`--name=value` settings (a later one wins, `+=` appends, other words passed over) and
    the file they name: CONFIG-DIR/recursor.conf, or recursor-NAME.conf."""
    argv = ["pdns_recursor", "stray", "--config-dir=/etc/x/", "--a=1", "--a=2", "--b=x", "--b+=y"]
    assert settings_of(argv) == {"config-dir": "/etc/x/", "a": "2", "b": "x, y"}
    assert config_file(argv) == "/etc/x/recursor.conf"
    assert config_file([*argv, "--config-name=two"]) == "/etc/x/recursor-two.conf"
    assert config_file(["pdns_recursor"]) == "/etc/powerdns/recursor.conf"
    assert [h for h, _ in local_addresses("127.0.0.1:5300, ::1 [::2]:53 10.0.0.1", "53")] == [
        "127.0.0.1",
        "::1",
        "::2",
        "10.0.0.1",
    ]


def test_identity_is_the_one_drop_group_privs_sets() -> None:
    """A non-zero setgid: that gid and the user's memberships (initgroups), as jailshim
    resolves them; none, or 0: the starting gid and groups."""
    user = Identity("pdns", 109, 112, (27, 112))
    assert identity_as_set(user, group_given=True) == user
    keeps = user._replace(gid=os.getgid(), groups=tuple(sorted(set(os.getgroups()))))
    assert identity_as_set(user, group_given=False) == keeps
    assert identity_as_set(user._replace(gid=0), group_given=True) == keeps


# -- Debian's own recursor.conf ------------------------------------------------------------------

UNIT_ARGS = ("--daemon=no", "--write-pid=no", "--disable-syslog", "--log-timestamp=no")


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_stock_debian_recursor_answers_from_its_jail(
    area: Path, recursor_bin: str, where: str
) -> None:
    """Debian's /etc/powerdns (as shipped) with only chroot (Debian's pdns home,
    /var/spool/powerdns, owned by pdns), the identity a chroot needs (Debian's unit starts it
    as pdns, which cannot chroot) and a test port set, started with Debian's unit's arguments
    under `jailshim run` with no flags, from copies bound at their paths in a private mount
    namespace: kdig gets localhost's A; no /dev/log is wanted (--disable-syslog); the host's
    directories are untouched."""
    stock = ("/etc/powerdns", "/var/spool/powerdns")
    need(all(Path(p).is_dir() for p in stock), f"needs Debian's {', '.join(stock)}")
    host_before = host_state(stock)
    etc, spool = copy_of("/etc/powerdns", area), copy_of("/var/spool/powerdns", area)
    port = free_port()
    conf = etc / "recursor.conf"
    text = conf.read_text()
    edits = {
        "# chroot=\n": "chroot=/var/spool/powerdns\n",
        "# setuid=\n": "setuid=pdns\n",
        "# setgid=\n": "setgid=pdns\n",
        "# local-port=53\n": f"local-port={port}\n",
    }
    for old, new in edits.items():
        assert text.count(old) == 1, f"Debian's recursor.conf changed: {old!r}"
        text = text.replace(old, new)
    conf.write_text(text)
    argv = in_stock_layout(
        {"/etc/powerdns": etc, "/var/spool/powerdns": spool},
        jailshim_argv("run", "--", recursor_bin, *UNIT_ARGS),
        userns=where == "userns",
    )
    proc = spawn(argv)
    try:
        wait_for_dns(port, proc, "127.0.0.1", name="localhost")
        pid = daemon_pid(proc, "pdns_recursor")
        assert os.readlink(f"/proc/{pid}/root") == "/var/spool/powerdns"
        assert status_field(pid, "Uid").split() == [str(pwd.getpwnam("pdns").pw_uid)] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    assert strategies(stderr) == ({"bind"} if where == "userns" else {"mknod"}), stderr
    read = _config_events(stderr)
    assert read and read[0]["chroot"] == "/var/spool/powerdns", stderr
    assert read[0]["files"] == ["/etc/powerdns/recursor.conf"] and read[0]["log_sockets"] == []
    # Debian's hint-file and trust anchors, read again inside the jail after the chroot: placed
    # there (without them every thread died at start, "Exception in RecursorThread")
    assert read[0]["jail_files"] == "/usr/share/dns/root.hints, /usr/share/dns/root.key"
    assert "Exception in RecursorThread" not in stderr, stderr
    assert "daemon's own user or group (pdns)" in stderr
    assert host_state(stock) == host_before


def test_chroot_with_the_api_is_refused_in_the_recursors_words(
    area: Path, recursor_bin: str
) -> None:
    """pdns_recursor exits when given both a chroot and api-config-dir (rec-main.cc): 78 in
    its words, before anything is prepared (`--config=check` does not say it)."""
    jail = make_jail(area)
    directory = write_config(area, jail, free_port(), f"api-config-dir={area}\n")
    result = run("run", "--", recursor_bin, "--daemon=no", f"--config-dir={directory}")
    assert result.code == 78, result.stderr
    assert "Using chroot and enabling the API is not possible" in result.error
    assert not (jail / "dev").exists()


def test_socket_dir_under_systemds_runtime_directory_is_looked_for_in_the_jail(
    area: Path, recursor_bin: str
) -> None:
    """Under Debian's unit (RuntimeDirectory=pdns-recursor) socket-dir defaults to
    $RUNTIME_DIRECTORY, inside the jail once chrooted: the recursor exited "Problem with
    socket directory" after jailshim had prepared the jail and said the jail's root (found by
    test_systemd). Now 78 before anything is prepared, with the recursor's words and the
    remedy; with the remedy (socket-dir=/) the same run answers."""
    jail = make_jail(area)
    port = free_port()
    directory = write_config(area, jail, port)
    env = clean_env(RUNTIME_DIRECTORY="/run/pdns-recursor")
    command = [recursor_bin, "--daemon=no", f"--config-dir={directory}"]
    result = run("run", "--", *command, env=env)
    assert result.code == 78, result.stderr
    assert "Problem with socket directory" in result.error
    assert f"{jail}/run/pdns-recursor" in result.error and "socket-dir=/" in result.error
    assert not (jail / "dev").exists()

    proc = spawn(jailshim_argv("run", "--", *command, "--socket-dir=/"), env=env)
    try:
        wait_for_dns(port, proc, "127.0.0.1", name="localhost")
        assert (jail / "pdns_recursor.controlsocket").is_socket()
    finally:
        _, stderr = stop(proc)
    read = _config_events(stderr)
    assert read and read[0]["socket_dir"] == str(jail), stderr


def test_a_file_read_again_inside_that_others_cannot_read_is_refused(
    area: Path, recursor_bin: str
) -> None:
    """hint-file 0640 root:pdns: pdns reads it on the host through its group, but jailshim's
    copy in the jail is root's with the host's mode (never the user's: a root-only copy must
    not become the daemon's), so the recursor could not read it there and its threads would
    die after the start. 78 before anything, naming the file and the remedy."""
    jail = make_jail(area)
    shared = Path(tempfile.mkdtemp(prefix="jailshim-hints-"))  # pdns can reach it (0755)
    try:
        shared.chmod(0o755)
        hints = shared / "root.hints"
        hints.write_text(". 3600000 NS a.root-servers.net.\n")
        os.chown(hints, 0, pwd.getpwnam("pdns").pw_gid)
        hints.chmod(0o640)
        directory = write_config(area, jail, free_port(), f"hint-file={hints}\n")
        argv = ["run", "--dry-run", "--", recursor_bin, f"--config-dir={directory}"]
        result = run(*argv)
        assert result.code == 78, result.stderr
        assert str(hints) in result.error and "chmod o+r" in result.error
        assert not (jail / "dev").exists()
        hints.chmod(0o644)  # the same file readable by others: placed, the run goes on
        assert run(*argv).code == 0
    finally:
        shutil.rmtree(shared)
