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
    """--help and --version exit 0; no command at all is a usage error naming the commands."""
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
    result = run()
    assert result.code == 64 and "COMMAND" in result.error
