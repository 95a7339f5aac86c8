"""`jailshim run -- haproxy`: a real haproxy 2.6 terminating TLS 1.3 in a jail jailshim made."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import (
    EchoServer,
    SyslogSocket,
    daemon_pid,
    echo_server,
    status_field,
    stop,
    tls_echo,
    wait_for_tls,
    write_haproxy_config,
)
from tests.support import NSRUN, clean_env, jailshim_argv, mounts_below, run, snapshot, spawn


@pytest.fixture
def backend(own_network: None) -> Iterator[EchoServer]:
    with echo_server() as server:
        yield server


@pytest.mark.parametrize("where", ["plain", "nodev", "userns"])
def test_haproxy_serves_tls13_from_a_prepared_jail(
    area: Path, haproxy_bin: str, backend: EchoServer, where: str, request: pytest.FixtureRequest
) -> None:
    """Handshakes succeed; haproxy's root is the jail; it runs as nobody; dev/urandom is 1:9;
    its log line from inside the jail reaches the host's log socket."""
    if where == "nodev":
        jail = request.getfixturevalue("nodev_jail")
    else:
        jail = area / "jail"
        jail.mkdir(mode=0o755)
    setup = write_haproxy_config(area, jail, backend.port)
    syslog = SyslogSocket(setup.log_socket)
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    proc = spawn([*wrap, *jailshim_argv("run", "--", haproxy_bin, "-f", str(setup.config), "-db")])
    try:
        wait_for_tls(setup.port, proc)
        for i in range(5):
            version, echoed = tls_echo(setup.port, f"hello {i}".encode())
            assert version == "TLSv1.3" and echoed == f"hello {i}".encode()
        pid = daemon_pid(proc, "haproxy")
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        assert status_field(pid, "Uid").split() == ["65534"] * 4
        node = os.stat(jail / "dev" / "urandom") if not wrap else None
        if node is not None:
            assert stat.S_ISCHR(node.st_mode) and os.major(node.st_rdev) == 1
            assert os.minor(node.st_rdev) == 9
        logs = syslog.receive(timeout=5)
        assert any("tls_in" in line for line in logs), logs
    finally:
        _, stderr = stop(proc)
        syslog.close()
    assert "Traceback" not in stderr


@pytest.mark.parametrize("jail_kind", ["plain", "nodev", "already prepared, dry run"])
def test_broken_config_exits_78_and_haproxy_never_starts(
    area: Path, haproxy_bin: str, jail_kind: str
) -> None:
    """haproxy -c (run while the jail is prepared) rejects the config: exit 78 with haproxy's
    own words; the jail is as it was (the prepare taken back), no haproxy -c left running."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    if jail_kind == "nodev":
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "nodev,mode=0755", "tmpfs", str(jail)], check=True
        )
    extra = []
    if jail_kind.startswith("already"):
        assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
        extra = ["--dry-run"]
    before, mounts = snapshot(jail), mounts_below(jail)
    config = area / "broken.cfg"
    config.write_text(f"global\n    chroot {jail}\nfrontend f\n    bind 127.0.0.1:1\n    bogus 1\n")
    result = run("run", *extra, "--", haproxy_bin, "-f", str(config), "-db")
    assert result.code == 78
    assert "unknown keyword 'bogus'" in result.error
    assert f"{config}:5" in result.error
    assert snapshot(jail) == before and mounts_below(jail) == mounts
    leftover = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, check=False)
    assert leftover.stdout == b""


def test_missing_log_socket_warns_that_logs_will_be_lost(
    area: Path, haproxy_bin: str, backend: EchoServer
) -> None:
    """A unix log target that does not exist on the host: a warning, and the daemon starts."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    setup = write_haproxy_config(area, jail, backend.port, log_socket=area / "absent.sock")
    result = run("run", "--dry-run", "--", haproxy_bin, "-f", str(setup.config))
    assert result.code == 0, result.stderr
    warning = [e for e in result.events if e["event"] == "log_socket"]
    assert not warning  # dry run: only the plan
    assert "skipped" in result.stdout and "logs will be lost" in result.stdout
    proc = spawn(jailshim_argv("run", "--", haproxy_bin, "-f", str(setup.config), "-db"))
    try:
        wait_for_tls(setup.port, proc)
    finally:
        _, stderr = stop(proc)
    assert "logs will be lost" in stderr


def test_exec_keeps_pid_argv_and_environment_but_not_jailshim_variables(jail: Path) -> None:
    """The daemon is jailshim's own process, with its argv and env (JAILSHIM_* removed)."""
    code = "import json, os, sys; print(json.dumps([os.getpid(), sys.argv[1:], dict(os.environ)]))"
    env = clean_env(JAILSHIM_CHROOT=str(jail), JAILSHIM_NO_VERIFY="1", KEEP_ME="yes")
    proc = spawn(jailshim_argv("run", "--", sys.executable, "-c", code, "a b", "--chroot"), env)
    out, err = proc.communicate(timeout=60)
    import json

    pid, argv, seen_env = json.loads(out)
    assert proc.returncode == 0, err
    assert pid == proc.pid
    assert argv == ["a b", "--chroot"]
    assert seen_env["KEEP_ME"] == "yes"
    assert not [k for k in seen_env if k.startswith("JAILSHIM_")]


def test_exec_failures_126_and_127(jail: Path, area: Path) -> None:
    """Not found: 127. Found but not executable: 126. Both before anything is prepared."""
    missing = run("run", "--chroot", str(jail), "--", "no-such-daemon-jailshim")
    assert missing.code == 127 and "command not found" in missing.error
    script = area / "daemon.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    denied = run("run", "--chroot", str(jail), "--", str(script))
    assert denied.code == 126 and "not executable" in denied.error
    assert not (jail / "dev").exists()


def test_run_without_command_is_a_usage_error() -> None:
    """`jailshim run` with nothing after --: 64 with an example."""
    result = run("run", "--chroot", "/tmp")
    assert result.code == 64 and "after --" in result.error


@pytest.mark.parametrize(
    ("group_line", "gid"), [("", "0/0/0/0"), ("    group nogroup\n", "65534/65534/65534/65534")]
)
def test_check_runs_as_the_identity_haproxy_sets(
    area: Path, jail: Path, group_line: str, gid: str
) -> None:
    """`user` alone: haproxy keeps gid 0, so the check runs with gid 0; with `group`, that gid
    and no supplementary groups (haproxy's set_identity)."""
    cfg = area / "id.cfg"
    cfg.write_text(f"global\n    chroot {jail}\n    user nobody\n{group_line}")
    result = run("run", "--no-config-check", "--haproxy-config", str(cfg), "--", "true")
    assert result.code == 0, result.stderr
    detail = next(e["detail"] for e in result.named("check") if e["check"] == "privileges")
    assert f"gid {gid}" in detail and "groups none" in detail, detail
