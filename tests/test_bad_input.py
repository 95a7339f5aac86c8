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


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        # float() read these as numbers: 1000 s, 1000 s, an endless budget
        ([], {"JAILSHIM_TIMEOUT": "1_000"}, "JAILSHIM_TIMEOUT='1_000' must be a positive number"),
        (["--timeout", "1e3"], {}, "must be a positive number"),
        (["--timeout", "inf"], {}, "must be a positive number"),
        (["--init", "--grace", "1_0"], {}, "--grace '1_0' must be a number of seconds"),
        # accepted, and the port never checked: no daemon can bind it
        (["--wait-addr", "[::1]:99999"], {}, "'99999' is not a port from 1 to 65535"),
        (["--wait-addr", "127.0.0.1:0"], {}, "'0' is not a port"),
        ([], {"JAILSHIM_WAIT_ADDR": "127.0.0.1:x"}, "WAIT_ADDR='127.0.0.1:x': 'x' is not"),
        # the supervisor's options without the supervisor were silently ignored
        (["--grace", "3"], {}, "--grace applies only with --init"),
        (["--map-exit", "143:0"], {}, "--map-exit applies only with --init"),
        (["--rewrite-signal", "TERM:QUIT"], {}, "--rewrite-signal applies only with --init"),
        (["--kill-group"], {}, "--kill-group applies only with --init"),
        ([], {"JAILSHIM_GRACE": "0"}, "JAILSHIM_GRACE applies only with --init"),
    ],
)
def test_run_values_that_were_taken_for_something_else(
    args: list[str], env: dict[str, str], needle: str
) -> None:
    """Values Python or argparse accepted but the operator did not mean: one sentence, 64,
    and COMMAND never runs (it would print 'ran')."""
    result = run("run", "--no-verify", *args, "--", "echo", "ran", env=env)
    assert result.code == 64, result
    assert needle in result.error
    assert "ran" not in result.stdout


def test_plain_seconds() -> None:
    from jailshim.numbers import plain_seconds

    assert [plain_seconds(t) for t in ("30", " 0.5 ", ".5", "7.", "0")] == [30, 0.5, 0.5, 7, 0]
    for text in ("1_000", "1e3", "inf", "nan", "-1", "+1", "", ".", "١٢", "0x10", "1.2.3"):
        assert plain_seconds(text) != plain_seconds(text), text  # NaN


def test_dash_capital_v_is_the_version() -> None:
    """`jailshim -V` said "the following arguments are required: COMMAND" (exit 64): it is the
    version, as --version and most tools."""
    import subprocess

    from tests.support import clean_env, jailshim_argv

    short = subprocess.run(
        jailshim_argv("-V"), capture_output=True, text=True, env=clean_env(), check=False
    )
    long = subprocess.run(
        jailshim_argv("--version"), capture_output=True, text=True, env=clean_env(), check=False
    )
    assert short.returncode == 0 and short.stdout == long.stdout, short
    assert short.stdout.startswith("jailshim ")


@pytest.mark.parametrize("typo", [["--chrot", "/var/lib/x"], ["--chrot=/var/lib/x"]])
def test_a_mistyped_option_gets_the_one_it_resembles(typo: list[str]) -> None:
    """`--chrot /var/lib/x` was "does not take --chrot /var/lib/x": the value glued to the option
    as if one word, and no hint. Now the option alone, and the option it resembles."""
    result = run("prepare", *typo)
    assert result.code == 64
    assert result.error.startswith(
        "jailshim prepare does not take --chrot (did you mean --chroot?)"
    ), result.error
    assert "/var/lib/x" not in result.error


def test_another_commands_option_names_the_commands_that_take_it() -> None:
    """An option of another command names which commands take it; a stray word is quoted."""
    result = run("check", "--strategy", "bind")
    assert result.code == 64
    assert "does not take --strategy (an option of jailshim run and prepare)" in result.error
    stray = run("teardown", "--chroot", "/nonexistent", "extra")
    assert stray.code == 64 and "does not take 'extra'" in stray.error


def test_a_mistyped_command_gets_the_one_it_resembles() -> None:
    result = run("prepar", "--chroot", "/x")
    assert result.code == 64
    assert result.error.startswith("'prepar' is not a jailshim command (did you mean prepare?)")


@pytest.mark.parametrize(
    ("command", "codes"),
    [
        ("run", ["64 usage", "69 a check failed", "77 not permitted", "126/127"]),
        ("prepare", ["0 prepared", "69 a check failed", "64 usage", "78 the jail"]),
        ("check", ["0 verified", "69 a check failed", "64 usage"]),
        ("teardown", ["0 undone", "64 usage"]),
        ("doctor", ["0 safe", "69 will fail", "75 cannot tell", "64 usage"]),
        ("explain", ["0 something recognised", "1 nothing recognised", "66 FILE cannot be read"]),
    ],
)
def test_each_commands_help_lists_its_exit_codes(command: str, codes: list[str]) -> None:
    """A script branches on doctor's 0/69, check's 0/69: each command's --help says them."""
    import subprocess

    from tests.support import clean_env, jailshim_argv

    env = {**clean_env(), "COLUMNS": "1000"}
    helptext = subprocess.run(
        jailshim_argv(command, "--help"), capture_output=True, text=True, env=env, check=False
    )
    assert helptext.returncode == 0
    text = " ".join(helptext.stdout.split())  # the formatter wraps lines
    assert "Exit codes:" in text
    for code in codes:
        assert code in text, (code, text)


def test_explain_on_a_file_it_cannot_read_exits_66(tmp_path: Path) -> None:
    """explain FILE that cannot be read exited 64 (usage), undocumented; the command line was
    right: 66 (EX_NOINPUT, in errors.EXIT_CODES and the README's table), one sentence."""
    from jailshim.errors import EXIT_CODES, NoInput

    assert EXIT_CODES[NoInput] == 66
    for target in (tmp_path / "missing.log", tmp_path):  # ENOENT, EISDIR
        result = run("explain", str(target))
        assert result.code == 66, result
        assert " cannot be read (" in result.error and "give a log file" in result.error
