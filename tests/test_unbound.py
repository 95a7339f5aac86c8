"""`jailshim run -- unbound`: Debian's unbound, its jail and user read through unbound-checkconf."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemons import (
    UNBOUND_ANSWER,
    SyslogSocket,
    daemon_pid,
    free_port,
    status_field,
    stop,
    wait_for_dns,
    write_unbound_config,
)
from tests.stock import copy_of, host_state, in_stock_layout, strategies
from tests.support import (
    NSRUN,
    clean_env,
    jailshim_argv,
    mounts_below,
    need,
    run,
    snapshot,
    spawn,
)


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_unbound_answers_from_the_jail_its_config_names(
    area: Path, unbound_bin: str, where: str
) -> None:
    """No --chroot/--user: the jail and user come from unbound-checkconf; kdig gets the
    local-data answer; unbound's root is the jail and it runs as user unbound."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    port = free_port()
    config = write_unbound_config(jail, port)
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    proc = spawn([*wrap, *jailshim_argv("run", "--", unbound_bin, "-d", "-c", str(config))])
    try:
        wait_for_dns(port, proc, UNBOUND_ANSWER)
        pid = daemon_pid(proc, "unbound")
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        uid = str(pwd.getpwnam("unbound").pw_uid)
        assert status_field(pid, "Uid").split() == [uid] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    read = [line for line in stderr.splitlines() if '"unbound.config"' in line]
    assert read and f'"chroot": "{jail}"' in read[0] and '"user": "unbound"' in read[0], stderr
    # a user namespace forbids mknod: the bind rung of the ladder
    assert strategies(stderr) == ({"bind"} if wrap else {"mknod"}), stderr


def test_broken_config_exits_78_with_unbound_checkconfs_words(area: Path, unbound_bin: str) -> None:
    """unbound-checkconf rejects the config: exit 78 with its words; nothing prepared, no
    unbound started."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    config = write_unbound_config(jail, free_port(), extra="    bogus-option: yes\n")
    result = run("run", "--", unbound_bin, "-d", "-c", str(config))
    assert result.code == 78, result.stderr
    assert "unknown keyword 'bogus-option'" in result.error
    assert f"{config}:" in result.error
    assert not (jail / "dev").exists()
    leftover = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, check=False)
    assert leftover.stdout == b""


def test_a_jail_another_user_can_write_is_still_refused(area: Path, unbound_bin: str) -> None:
    """The jail unbound's config names is owned by another daemon's user (nobody): 78 before
    anything is made in it, and no unbound."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    config = write_unbound_config(jail, free_port())
    os.chown(jail, 65534, 65534)
    result = run("run", "--", unbound_bin, "-d", "-c", str(config))
    assert result.code == 78, result.stderr
    assert result.error.startswith("The jail is writable by a non-root user"), result.error
    assert not (jail / "dev").exists()
    leftover = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, check=False)
    assert leftover.stdout == b""


def test_flags_win_over_what_unbound_config_says(area: Path, unbound_bin: str) -> None:
    """--chroot and --user beat the config's chroot: and username: — the flags' jail is
    prepared and checked as the flags' user; the config's jail is not touched."""
    jail, other = area / "jail", area / "other"
    jail.mkdir(mode=0o755)
    other.mkdir(mode=0o755)
    config = write_unbound_config(jail, free_port())
    result = run(
        *("run", "--chroot", str(other), "--user", "nobody", "--daemon", "unbound"),
        *("--", "true", "-c", str(config)),
    )
    assert result.code == 0, result.stderr
    assert result.named("unbound.config")[0]["chroot"] == str(jail)  # read, then overridden
    privileges = [e for e in result.named("check") if e["check"] == "privileges"]
    assert privileges and privileges[0]["detail"].startswith("ran as nobody"), result.stderr
    assert (other / "dev" / "urandom").exists() and not (jail / "dev").exists()
    assert run("teardown", "--chroot", str(other)).code == 0


def test_use_syslog_brings_dev_log_into_the_jail(area: Path, unbound_bin: str) -> None:
    """use-syslog: yes: the plan binds the host's /dev/log at the same path in the jail."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    config = write_unbound_config(jail, free_port(), extra="    use-syslog: yes\n")
    result = run("run", "--dry-run", "--", unbound_bin, "-d", "-c", str(config), env=clean_env())
    assert result.code == 0, result.stderr
    read = result.named("unbound.config")
    assert read and read[0]["log_sockets"] == ["/dev/log"] and read[0]["use_syslog"] == "yes"
    assert "/dev/log" in result.stdout


def test_chrooted_unbound_reaches_the_notify_socket(area: Path, unbound_bin: str) -> None:
    """NOTIFY_SOCKET is a path: it is bound into the jail at the same path, and the
    chrooted unbound's READY=1 reaches a datagram listener there (Type=notify)."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    port = free_port()
    config = write_unbound_config(jail, port)
    listener = SyslogSocket(area / "notify.sock")
    env = clean_env(NOTIFY_SOCKET=str(listener.path))
    proc = spawn(jailshim_argv("run", "--", unbound_bin, "-d", "-c", str(config)), env)
    try:
        wait_for_dns(port, proc, UNBOUND_ANSWER)
        said = listener.receive(timeout=10)
        assert any("READY=1" in datagram.split("\n") for datagram in said), said
        assert (jail / str(listener.path).lstrip("/")).exists()
    finally:
        _, stderr = stop(proc)
        listener.close()
    assert '"notify_socket"' in stderr
    checks = [e for e in map(_event, stderr.splitlines()) if e.get("check") == "notify socket"]
    assert checks and checks[0]["ok"], stderr


def _event(line: str) -> dict[str, object]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


@pytest.mark.parametrize("case", ["root-only", "stream", "missing"])
def test_notify_socket_the_daemon_cannot_use_fails_the_check(
    area: Path, unbound_bin: str, case: str
) -> None:
    """$NOTIFY_SOCKET that user unbound could not send READY=1 to from inside the jail (a
    root-only mode, a stream socket, none on the host): exit 69 with a sentence naming the
    cause, checked as unbound in the jail; unbound never starts."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    config = write_unbound_config(jail, free_port())
    path = area / "notify.sock"
    kind = socket.SOCK_STREAM if case == "stream" else socket.SOCK_DGRAM
    listener = socket.socket(socket.AF_UNIX, kind)
    try:
        if case != "missing":
            listener.bind(str(path))
            path.chmod(0o700 if case == "root-only" else 0o777)
            if case == "stream":
                listener.listen()
        before = snapshot(jail)
        env = clean_env(NOTIFY_SOCKET=str(path))
        result = run("run", "--timeout", "2", "--", unbound_bin, "-d", "-c", str(config), env=env)
    finally:
        listener.close()
    assert result.code == 69, result.stderr
    uid = pwd.getpwnam("unbound").pw_uid
    expected = {
        "root-only": f"(mode 0700, owner 0:0) refuses uid {uid} (EACCES",
        "stream": "is a stream socket (EPROTOTYPE)",
        "missing": "does not exist in the jail",
    }[case]
    assert result.error.startswith(f"Check notify socket failed: $NOTIFY_SOCKET {path}")
    assert expected in result.error and "READY=1" in result.error, result.error
    # as for any failed check, the prepared jail stays (teardown undoes it, the socket's bind too)
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert snapshot(jail) == before
    assert not mounts_below(jail)
    leftover = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, check=False)
    assert leftover.stdout == b""


STOCK_HELPER = "/usr/libexec/unbound-helper"  # Debian's unbound.service runs it before start


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_stock_debian_unbound_in_var_lib_unbound_answers(
    area: Path, unbound_bin: str, where: str
) -> None:
    """Debian's own unbound.conf and conf.d with one file added (`chroot: /var/lib/unbound`, a
    test port), started as Debian's unbound.service starts it (its helper's chroot_setup and
    root_trust_anchor_update, then `unbound -d -p`) under `jailshim run` with no flags: the
    jail Debian gives to user unbound (owned by it) is accepted with an info event, prepared
    (mknod; bind in a user namespace), checked as unbound, and unbound answers kdig from it.
    Copies of /etc/unbound and /var/lib/unbound stand at those paths in a private mount
    namespace (tests/stock.py): the host's own are left exactly as they were."""
    stock = ("/etc/unbound", "/var/lib/unbound")
    need(Path(STOCK_HELPER).exists(), f"needs Debian's {STOCK_HELPER} (package unbound)")
    need(all(Path(p).is_dir() for p in stock), "needs Debian's /etc/unbound, /var/lib/unbound")
    need(
        Path("/var/lib/unbound").stat().st_uid == pwd.getpwnam("unbound").pw_uid,
        "needs Debian's /var/lib/unbound, owned by unbound",
    )
    host_before = host_state(stock)
    etc, var = copy_of("/etc/unbound", area), copy_of("/var/lib/unbound", area)
    port = free_port()
    (etc / "unbound.conf.d" / "jailshim-test.conf").write_text(
        f'server:\n    chroot: "/var/lib/unbound"\n    port: {port}\n'
    )
    argv = in_stock_layout(
        {"/etc/unbound": etc, "/var/lib/unbound": var},
        jailshim_argv("run", "--", unbound_bin, "-d", "-p"),
        userns=where == "userns",
        tmpfs=["/run"],  # stock remote-control: /run/unbound.ctl, made before chroot
        before=[[STOCK_HELPER, "chroot_setup"], [STOCK_HELPER, "root_trust_anchor_update"]],
    )
    proc = spawn(argv)
    try:
        wait_for_dns(port, proc, "127.0.0.1", name="localhost")
        pid = daemon_pid(proc, "unbound")
        assert os.readlink(f"/proc/{pid}/root") == "/var/lib/unbound"
        uid = str(pwd.getpwnam("unbound").pw_uid)
        assert status_field(pid, "Uid").split() == [uid] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    assert strategies(stderr) == ({"bind"} if where == "userns" else {"mknod"}), stderr
    events = [_event(line) for line in stderr.splitlines()]
    read = [e for e in events if e.get("event") == "unbound.config"]
    assert read and read[0]["chroot"] == "/var/lib/unbound" and read[0]["user"] == "unbound"
    assert read[0]["files"] == ["(unbound's default file)"] and read[0]["use_syslog"] == "yes"
    owned = [e for e in events if e.get("event") == "jail.writable"]
    assert owned and "daemon's own user or group (unbound)" in str(owned[0]["detail"]), stderr
    assert (var / "dev" / "urandom").exists() or where == "userns"
    assert host_state(stock) == host_before


@pytest.mark.parametrize("socket_set", [False, True], ids=["no-notify-socket", "notify-socket"])
def test_config_event_says_notify_capable_apart_from_the_socket(
    area: Path, unbound_bin: str, socket_set: bool
) -> None:
    """unbound.config said `"notify": true` even with NOTIFY_SOCKET unset, read as "systemd is
    notified": it says notify_capable (unbound sends READY=1 from its jail) and notify_socket
    (the socket it will send to, null without one)."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    config = write_unbound_config(jail, free_port())
    socket_path = str(area / "notify.sock")
    env = clean_env(NOTIFY_SOCKET=socket_path) if socket_set else clean_env()
    result = run("run", "--dry-run", "--", unbound_bin, "-d", "-c", str(config), env=env)
    assert result.code == 0, result.stderr
    read = result.named("unbound.config")[0]
    assert "notify" not in read and read["notify_capable"] is True, read
    assert read["notify_socket"] == (socket_path if socket_set else None), read
