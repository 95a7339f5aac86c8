"""The strategy matrix: each runtime situation ends with a working 1:9 node read as nobody."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import NSRUN, mounts_below, read_in_jail, run, snapshot

USERNS_MOUNT = [sys.executable, NSRUN, "--mount", "--"]
USERNS_ONLY = ["unshare", "--user", "--map-root-user"]


def _assert_urandom_works(jail: Path, wrap: list[str] | None = None) -> None:
    seen = read_in_jail(jail, "urandom", wrap=wrap)
    assert seen.get("error") is None, seen
    assert seen["uid"] == 65534
    assert seen["chr"] is True and seen["numbers"] == "1:9"
    assert len(set(bytes.fromhex(seen["read"]))) > 4  # random bytes, not a constant


def _strategies(result_stderr: str) -> set[str]:
    events = [json.loads(line) for line in result_stderr.splitlines() if line.strip()]
    return {
        e["strategy"]
        for e in events
        if e["event"] == "device" and e.get("outcome") in ("created", "bound")
    }


def test_plain_directory_gets_mknod_nodes(jail: Path) -> None:
    """A writable jail on an ordinary filesystem, as root: mknod, nothing mounted."""
    result = run("prepare", "--chroot", str(jail))
    assert result.code == 0, result.stderr
    assert _strategies(result.stderr) == {"mknod"}
    assert mounts_below(jail) == []
    assert (jail / "dev" / "urandom").stat().st_mode & 0o777 == 0o666
    _assert_urandom_works(jail)


def test_nodev_filesystem_gets_bind_mounts(nodev_jail: Path) -> None:
    """On a nodev filesystem a node would not open: the host's node is bound instead."""
    result = run("prepare", "--chroot", str(nodev_jail))
    assert result.code == 0, result.stderr
    assert _strategies(result.stderr) == {"bind"}
    assert len(mounts_below(nodev_jail / "dev")) == 3
    _assert_urandom_works(nodev_jail)


def test_forced_mknod_on_nodev_is_refused_and_rolled_back(nodev_jail: Path) -> None:
    """--strategy mknod on nodev: the node is made, fails to open, is removed: exit 77."""
    before = snapshot(nodev_jail)
    result = run("prepare", "--chroot", str(nodev_jail), "--strategy", "mknod")
    assert result.code == 77
    assert "mknod (EACCES" in result.error
    assert "nodev" in result.error
    assert snapshot(nodev_jail) == before


def test_user_namespace_with_mount_namespace_binds(jail: Path) -> None:
    """Rootless containers: mknod is EPERM in a user namespace, bind mounts work."""
    script = (
        f"{sys.executable} -m jailshim prepare --chroot {jail} && "
        f"{sys.executable} tests/jail_reader.py {jail} urandom 65534 65534"
    )
    proc = subprocess.run(
        [*USERNS_MOUNT, "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    # The plan knows mknod cannot work in a user namespace: it is not even tried.
    assert not [e for e in events if e["event"] == "device" and e["outcome"] == "refused"]
    assert _strategies(proc.stderr) == {"bind"}
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen == {**seen, "uid": 65534, "chr": True, "numbers": "1:9"}
    assert "error" not in seen
    assert mounts_below(jail) == []  # the namespace's mounts never reached the host


def test_readonly_jail_gets_tmpfs_and_binds(readonly_jail: Path) -> None:
    """A read-only jail: a small tmpfs over dev/, the nodes bound inside it."""
    result = run("prepare", "--chroot", str(readonly_jail))
    assert result.code == 0, result.stderr
    tmpfs = result.named("dev.tmpfs")
    assert tmpfs and tmpfs[0]["outcome"] == "mounted"
    assert _strategies(result.stderr) == {"bind"}
    _assert_urandom_works(readonly_jail)
    teardown = run("teardown", "--chroot", str(readonly_jail))
    assert teardown.code == 0, teardown.stderr
    assert mounts_below(readonly_jail) == [str(readonly_jail)]  # only the test's own ro bind
    assert list((readonly_jail / "dev").iterdir()) == []


def test_user_namespace_without_mount_namespace_exits_77(jail: Path) -> None:
    """Neither mknod nor mount allowed: exit 77 naming both refusals and powers; no change."""
    before = snapshot(jail)
    result = run("prepare", "--chroot", str(jail), wrap=USERNS_ONLY)
    assert result.code == 77
    sentence = result.error
    assert "mknod (EPERM" in sentence and "bind mount (EPERM" in sentence
    assert "CAP_MKNOD" in sentence and "CAP_SYS_ADMIN" in sentence
    assert snapshot(jail) == before


def test_dry_run_prints_the_plan_and_changes_nothing(jail: Path) -> None:
    """--dry-run prints one line per device with the chosen step and touches nothing."""
    before = snapshot(jail)
    result = run("prepare", "--chroot", str(jail), "--dry-run", "--device", "zero")
    assert result.code == 0, result.stderr
    assert "dev/zero" in result.stdout and "mknod" in result.stdout
    assert "create dev/" in result.stdout
    assert snapshot(jail) == before
