"""--init: a lean PID 1 that forwards signals, reaps orphans and passes on the exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemons import children, status_field, stop
from tests.support import TESTS, clean_env, jailshim_argv, spawn

CHILD = str(TESTS / "init_child.py")


def _wait_for(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _start(jail: Path, cmd: list[str], *, pid_ns: bool = True) -> subprocess.Popen[str]:
    wrap = ["unshare", "--pid", "--fork", "--mount-proc"] if pid_ns else []
    return spawn(
        [*wrap, *jailshim_argv("run", "--init", "--chroot", str(jail), "--no-verify", "--", *cmd)]
    )


def _supervisor(proc: subprocess.Popen[str]) -> int:
    """unshare --fork's child: jailshim, PID 1 inside, exec'd into the supervisor."""
    _wait_for(lambda: bool(children(proc.pid)))
    return children(proc.pid)[0]


def _zombies_of(pid: int) -> int:
    count = 0
    for child in children(pid):
        try:
            if status_field(child, "State").startswith("Z"):
                count += 1
        except (OSError, KeyError):
            continue
    return count


def test_signals_forwarded_orphans_reaped_status_passed_on(jail: Path, area: Path) -> None:
    """As PID 1 in a PID namespace: HUP/USR1/USR2/WINCH reach the daemon, 1000 orphans are
    reaped, TERM makes it exit 42 and jailshim exits 42; the supervisor's RSS is reported."""
    out = area / "signals.txt"
    proc = _start(jail, [sys.executable, CHILD, str(out), "1000"])
    try:
        sup = _supervisor(proc)
        _wait_for(lambda: out.exists() and "ready" in out.read_text(), timeout=60)
        assert Path(f"/proc/{sup}/cmdline").read_bytes().split(b"\0")[2] == b"-E"
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
            os.kill(sup, sig)
        _wait_for(
            lambda: out.read_text().split()[1:] == ["SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH"]
        )
        _wait_for(lambda: _zombies_of(sup) == 0 and len(children(sup)) == 1, timeout=30)
        rss_kib = int(status_field(sup, "VmRSS").split()[0])
        print(f"supervisor VmRSS {rss_kib} KiB")
        os.kill(sup, signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        _, stderr = stop(proc)
    assert proc.returncode == 42, stderr
    assert "SIGTERM" in out.read_text()
    exited = [line for line in stderr.splitlines() if '"init.exited"' in line]
    assert exited and '"exit_code": 42' in exited[0]
    assert '"orphans_reaped": 1000' in exited[0]


def test_death_by_signal_gives_128_plus_n(jail: Path) -> None:
    """A daemon killed by SIGTERM (default action): jailshim exits 143."""
    proc = _start(jail, ["sleep", "60"])
    try:
        sup = _supervisor(proc)
        _wait_for(lambda: len(children(sup)) == 1)
        os.kill(sup, signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        stop(proc)
    assert proc.returncode == 143


def test_kill_group_reaches_the_daemons_children(jail: Path) -> None:
    """--kill-group: a signal goes to the whole process group, grandchildren included."""
    proc = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            *jailshim_argv(
                "run",
                "--init",
                "--kill-group",
                "--chroot",
                str(jail),
                "--no-verify",
                "--",
                "sh",
                "-c",
                "sleep 60 & wait",
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        sup = _supervisor(proc)
        _wait_for(lambda: any(children(c) for c in children(sup)))
        shell = children(sup)[0]
        sleeper = children(shell)[0]
        os.kill(sup, signal.SIGTERM)
        proc.wait(timeout=20)
        assert not Path(f"/proc/{sleeper}").exists() or status_field(sleeper, "State")[0] == "Z"
    finally:
        stop(proc)
    assert proc.returncode == 143


def test_double_init_is_warned_about(jail: Path, area: Path) -> None:
    """Under a PID 1 named tini that already reaps, --init logs one warning and still works."""
    tini = area / "tini"
    tini.symlink_to("/bin/sh")
    argv = jailshim_argv("run", "--init", "--chroot", str(jail), "--no-verify", "--", "true")
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", str(tini), "-c", " ".join(argv)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count('"init.double"') == 1
    assert "already reaps zombies" in proc.stderr


def test_supervisor_imports_nothing_heavy() -> None:
    """The supervisor imports only builtins and C modules: nothing from jailshim's deps."""
    code = (
        "import sys, runpy; before = set(sys.modules); "
        "sys.argv = ['supervisor', '--', 'true']; "
        "import jailshim.supervisor as s; "
        "new = set(sys.modules) - before; "
        "print(sorted(m for m in new if not m.startswith(('jailshim', '_'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=TESTS.parent,
    )
    assert proc.stdout.strip() == "[]", proc.stdout


@pytest.mark.parametrize("pid_ns", [False])
def test_subreaper_when_not_pid1(jail: Path, area: Path, pid_ns: bool) -> None:
    """Not PID 1: jailshim makes itself child subreaper, so orphans still come to it."""
    out = area / "signals.txt"
    proc = _start(jail, [sys.executable, CHILD, str(out), "50"], pid_ns=pid_ns)
    try:
        _wait_for(lambda: out.exists() and "ready" in out.read_text(), timeout=60)
        _wait_for(lambda: _zombies_of(proc.pid) == 0 and len(children(proc.pid)) == 1, timeout=30)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        _, stderr = stop(proc)
    assert proc.returncode == 42, stderr
    assert '"orphans_reaped": 50' in stderr
