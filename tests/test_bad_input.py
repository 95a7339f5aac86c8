"""Bad input: one sentence, the documented exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run


def test_missing_jail(area: Path) -> None:
    """A jail that does not exist: 78, names the path."""
    result = run("prepare", "--chroot", str(area / "nope"))
    assert result.code == 78
    assert "does not exist" in result.error


def test_jail_is_a_file(area: Path) -> None:
    """A regular file as jail: 78."""
    (area / "file").write_text("")
    result = run("prepare", "--chroot", str(area / "file"))
    assert result.code == 78
    assert "not a directory" in result.error


def test_jail_is_root(root: None) -> None:
    """/ is no jail: 78."""
    result = run("prepare", "--chroot", "/", "--dry-run")
    assert result.code == 78
    assert "no jail" in result.error


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--device", "sda"], "not an allowlisted character device"),
        (["--user", "no-such-user-jailshim"], "names no user"),
        (["--group", "no-such-group-jailshim", "--user", "root"], "names no group"),
        (["--strategy", "magic"], "invalid choice"),
        (["--timeout", "-3"], "positive number"),
        (["--user", "4294967295"], "not a valid UID"),
        (["--user", "99999999999999999999"], "not a valid UID"),
        (["--user", "root", "--group", "4294967295"], "not a valid GID"),
        (["--user", "root", "--group", "123456789012345678901234567890"], "not a valid GID"),
    ],
)
def test_usage_errors_exit_64(jail: Path, args: list[str], needle: str) -> None:
    """Each bad value is one usage sentence and exit 64; nothing is created."""
    result = run("prepare", "--chroot", str(jail), *args)
    assert result.code == 64
    assert needle in result.error
    assert not (jail / "dev").exists()


def test_empty_chroot() -> None:
    """--chroot '' is a usage error."""
    result = run("prepare", "--chroot", "")
    assert result.code == 64
    assert "empty" in result.error


def test_no_chroot() -> None:
    """No --chroot at all: 64, says how to give one."""
    result = run("prepare")
    assert result.code == 64
    assert "--chroot" in result.error


def test_unknown_command() -> None:
    """An unknown command: 64."""
    assert run("frobnicate").code == 64


def test_help_version_and_no_command() -> None:
    """--help and --version exit 0; bare `jailshim` prints the usage with the commands on
    stderr (as git does), nothing on stdout, and exits 64."""
    import subprocess

    from tests.support import clean_env, jailshim_argv

    version = subprocess.run(
        jailshim_argv("--version"), capture_output=True, text=True, env=clean_env(), check=False
    )
    assert version.returncode == 0 and version.stdout.startswith("jailshim ")
    helptext = subprocess.run(
        jailshim_argv("run", "--help"), capture_output=True, text=True, env=clean_env(), check=False
    )
    assert helptext.returncode == 0 and "JAILSHIM_WAIT_ADDR" in helptext.stdout
    bare = subprocess.run(
        jailshim_argv(), capture_output=True, text=True, env=clean_env(), check=False
    )
    assert bare.returncode == 64 and bare.stdout == ""
    assert bare.stderr.startswith("usage: jailshim") and "explain" in bare.stderr
    assert "{" not in bare.stderr  # the usage, not a JSON error event
