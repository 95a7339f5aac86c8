"""README claims that had no test (issue 32): each test here names the sentence it checks.

Mount flags are read from /proc/self/mountinfo in the private mount namespace where jailshim
made the mounts (the namespace, and the mounts, end with the shell that ran it)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import stop
from tests.handshake import wait_until
from tests.planted import evil_libcrypto, jailed_daemon, reseed_rows
from tests.support import clean_env, in_shell, jailshim_argv, run, spawn

pytestmark = pytest.mark.usefixtures("root")


def _js(*args: str) -> str:
    return " ".join(f"'{a}'" for a in jailshim_argv(*args))


def _mounts_after_prepare(jail: Path) -> dict[str, set[str]]:
    """Prepare ``jail`` in a private mount namespace and return, for each mount point at or
    below it, its per-mount options (mountinfo's sixth field) and its super options."""
    script = (
        f"{_js('prepare', '--chroot', str(jail))} || exit 9; "
        "cat /proc/self/mountinfo; "
        f"{_js('teardown', '--chroot', str(jail))} >/dev/null 2>&1"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, env=clean_env(), timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    found: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        point = fields[4]
        if point == str(jail) or point.startswith(f"{jail}/"):
            found[point] = set(fields[5].split(","))  # the last mount at a point wins
    return found


def test_a_read_only_jail_gets_a_nodev_nosuid_noexec_tmpfs_and_hardened_binds(
    readonly_jail: Path,
) -> None:
    """README: on a read-only jail jailshim "mounts a small tmpfs (0755, nodev, nosuid, noexec)
    over dev/ and binds the nodes in it"; a bind is "remounted read-only, nosuid, noexec"."""
    mounts = _mounts_after_prepare(readonly_jail)
    dev = str(readonly_jail / "dev")
    assert {"nodev", "nosuid", "noexec"} <= mounts[dev], mounts
    binds = {p: o for p, o in mounts.items() if p.startswith(f"{dev}/")}
    assert f"{dev}/urandom" in binds, mounts
    for point, options in binds.items():
        assert {"ro", "nosuid", "noexec"} <= options, (point, options)


def test_a_nodev_jail_gets_read_only_nosuid_noexec_binds(nodev_jail: Path) -> None:
    """README: where the filesystem is nodev jailshim "bind-mounts the host's node onto an empty
    file, then remounts it read-only, nosuid, noexec"."""
    mounts = _mounts_after_prepare(nodev_jail)
    binds = {p: o for p, o in mounts.items() if p.startswith(f"{nodev_jail}/dev/")}
    assert f"{nodev_jail}/dev/urandom" in binds, mounts
    for point, options in binds.items():
        assert {"ro", "nosuid", "noexec"} <= options, (point, options)


@contextlib.contextmanager
def _root_holds_the_lock(jail: Path) -> Iterator[None]:
    """This (root) process holds the jail directory's flock, the lock that holds across mount
    namespaces; a root holder is waited for (a user's is ignored, tested elsewhere)."""
    fd = os.open(jail, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)  # drops the flock


def _holds_an_flock(pid: int) -> bool:
    """/proc/locks lists an flock held (not awaited: "->") by ``pid``."""
    rows = (line.split() for line in Path("/proc/locks").read_text().splitlines())
    return any(len(r) > 4 and r[1] == "FLOCK" and r[4] == str(pid) for r in rows)


def test_prepare_times_out_on_a_lock_root_holds(jail: Path) -> None:
    """README: prepare takes a per-jail lock "waiting up to --timeout": with root's process
    holding it, --timeout 1 fails after that second with one sentence and exit 71, and nothing
    is made in the jail."""
    with _root_holds_the_lock(jail):
        began = time.monotonic()
        result = run("prepare", "--chroot", str(jail), "--timeout", "1")
        took = time.monotonic() - began
    assert result.code == 71, result.stderr
    assert (
        f"process {os.getpid()} has held the lock on {jail} for 1 s (another jailshim prepare "
        "or teardown); wait for it to finish, or raise --timeout."
    ) in result.stderr, result.stderr
    assert took >= 1, took
    assert list(jail.iterdir()) == []


def test_prepare_waits_for_a_lock_root_holds_then_prepares(jail: Path) -> None:
    """The other half: within --timeout prepare waits while root's process holds the lock
    (nothing made meanwhile) and prepares once it is let go."""
    with _root_holds_the_lock(jail):
        proc = spawn(jailshim_argv("prepare", "--chroot", str(jail), "--timeout", "60"))
        try:
            # prepare holds root's lock file: it is at the jail directory's lock, ours (it
            # was "1.5 s later", which a slow start passed without prepare ever looking)
            wait_until(
                lambda: _holds_an_flock(proc.pid) or proc.poll() is not None,
                "prepare to take root's lock file",
            )
            assert proc.poll() is None, proc.communicate()
            assert list(jail.iterdir()) == []
        except BaseException:
            stop(proc)
            raise
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0, stderr
    assert '"lock.ignored"' not in stderr, stderr  # waited for root's hold, did not pass it
    assert (jail / "dev" / "urandom").is_char_device()
    assert run("teardown", "--chroot", str(jail)).code == 0


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o644], ids=["group-w", "other-w", "0644"])
def test_doctor_does_not_load_a_root_owned_library_others_can_write(
    area: Path, jail: Path, started: list[subprocess.Popen[bytes]], mode: int
) -> None:
    """README/doctor: a daemon's library is loaded (its code run as root) only if it is root's
    alone; a root-owned libcrypto.so.3 that is group- or world-writable is not loaded: its
    constructor never runs, the reseed row says cannot probe and why. At 0644 the same file is
    loaded (the constructor runs): the control that shows the test would see a load."""
    marker = area / "ran"
    libs = area / "libs"
    libs.mkdir(mode=0o755)
    lib = libs / "libcrypto.so.3"
    shutil.copy(evil_libcrypto(area, marker), lib)
    lib.chmod(mode)
    assert lib.stat().st_uid == 0
    pid = jailed_daemon(started, [], str(lib), jail)

    result = run("doctor", "--pid", str(pid))
    (row,) = reseed_rows(result).values()
    if mode == 0o644:
        assert marker.exists(), row  # doctor loaded it: the file is root's alone
        return
    assert not marker.exists(), marker.read_text()
    assert row["level"] == "warning", row
    assert row["detail"].startswith("cannot probe libcrypto.so.3 (OpenSSL 3.0.99)"), row
    assert f"owned by uid 0 with mode {mode:04o}" in row["detail"], row


@pytest.mark.parametrize("closed", ["0<&-", "2>&-", "0<&- 2>&-"])
def test_commands_with_stdin_or_stderr_closed(jail: Path, closed: str) -> None:
    """README/ARCHITECTURE: "a closed fd 0/1/2 gets /dev/null (for jailshim and the daemon
    alike)"; only stdout had a test. prepare and teardown exit as they would (0; a missing
    jail 78, its sentence going nowhere, not a crash's 1), the dry run's plan still reaches
    stdout, and the daemon finds /dev/null on the closed descriptors, not a file jailshim
    happened to open there."""
    script = f'exec "$@" {closed}'
    dry = in_shell(script, *jailshim_argv("prepare", "--chroot", str(jail), "--dry-run"))
    assert dry.code == 0 and "dev/urandom" in dry.stdout, (dry.stdout, dry.stderr)
    assert in_shell(script, *jailshim_argv("prepare", "--chroot", str(jail))).code == 0
    assert (jail / "dev" / "urandom").is_char_device()
    assert in_shell(script, *jailshim_argv("teardown", "--chroot", str(jail))).code == 0
    assert not (jail / "dev").exists()
    missing = in_shell(script, *jailshim_argv("prepare", "--chroot", str(jail / "nowhere")))
    assert missing.code == 78, missing.stderr
    show = "import os; print(os.readlink('/proc/self/fd/0'), os.readlink('/proc/self/fd/2'))"
    daemon = in_shell(script, *jailshim_argv("run", "--", sys.executable, "-c", show))
    assert daemon.code == 0, daemon.stderr
    fd0, fd2 = daemon.stdout.split()
    if "0<&-" in closed:
        assert fd0 == "/dev/null", daemon.stdout
    if "2>&-" in closed:
        assert fd2 == "/dev/null", daemon.stdout
