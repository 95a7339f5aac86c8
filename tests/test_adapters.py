"""The adapter registry: COMMAND's basename or --daemon picks one adapter, imported alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jailshim import daemons
from tests.support import assert_ran, clean_env, jailshim_argv, need, run


def _imported(argv: list[str]) -> set[str]:
    """The modules `python -X importtime` reports for ``argv`` (which must succeed)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert_ran(proc)
    return {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_every_adapter_module_has_its_adapter() -> None:
    """Each registered module loads and its ADAPTER answers to the name it is registered under."""
    for name in daemons.ADAPTERS:
        assert daemons.load(name).name == name
    for alias, name in daemons.ALIASES.items():
        assert name in daemons.ADAPTERS and alias not in daemons.ADAPTERS


def test_a_daemon_without_an_adapter_imports_none(jail: Path) -> None:
    """`run -- true` with --chroot: no adapter module is imported (start-up time)."""
    modules = _imported(jailshim_argv("run", "--chroot", str(jail), "--dry-run", "--", "true"))
    assert "jailshim.daemons" in modules
    assert not {m for m in modules if m.startswith("jailshim.daemons.")}, modules


def test_an_unknown_daemon_is_a_usage_error() -> None:
    """--daemon NAME (or JAILSHIM_DAEMON) without an adapter: 64, naming the adapters there are."""
    flag = run("run", "--daemon", "nosuchd", "--", "true")
    assert flag.code == 64
    assert flag.error.startswith("--daemon 'nosuchd' is not a daemon")
    assert ", ".join(sorted(daemons.REGISTRY)) in flag.error
    variable = run("run", "--", "true", env=clean_env(JAILSHIM_DAEMON="nosuchd"))
    assert variable.code == 64
    assert variable.error.startswith("JAILSHIM_DAEMON='nosuchd' is not a daemon")


def test_daemon_flag_reads_a_command_of_another_name_with_that_adapter(
    area: Path, jail: Path
) -> None:
    """--daemon haproxy: COMMAND's own arguments are read as haproxy's (-f FILE)."""
    cfg = area / "h.cfg"
    cfg.write_text(f"global\n    chroot {jail}\n    user nobody\n")
    result = run(
        "run", "--daemon", "haproxy", "--no-config-check", "--dry-run", "--", "true", "-f", str(cfg)
    )
    assert result.code == 0, result.stderr
    read = result.named("haproxy.config")
    assert read and read[0]["files"] == [str(cfg)] and read[0]["chroot"] == str(jail)


def test_daemon_flag_and_another_daemons_config_option_conflict(area: Path) -> None:
    """--haproxy-config with --daemon unbound: 64, one sentence naming both."""
    cfg = area / "h.cfg"
    cfg.write_text("global\n")
    result = run("run", "--daemon", "unbound", "--haproxy-config", str(cfg), "--", "true")
    assert result.code == 64
    assert "--haproxy-config" in result.error and "--daemon" in result.error


def test_getopt_reads_as_c_daemons_do() -> None:
    """POSIX getopt without reordering: combined flags, -xVALUE and -x VALUE, `--` and the
    first word that is not an option end the options."""
    from jailshim.daemons.getopt import GetoptError, getopt

    parsed = getopt(["d", "-dc", "/a.conf", "-c/b.conf", "--", "-x"], "c:d")
    assert parsed.options == (("d", ""), ("c", "/a.conf"), ("c", "/b.conf"))
    assert parsed.rest == 5
    assert getopt(["d", "-d", "start", "-c", "x"], "c:d").rest == 2
    with pytest.raises(GetoptError) as missing:
        getopt(["d", "-c"], "c:d")
    assert missing.value.missing and missing.value.letter == "c"
    with pytest.raises(GetoptError) as unknown:
        getopt(["d", "-dZ"], "c:d")
    assert not unknown.value.missing and unknown.value.letter == "Z"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["/usr/sbin/nsd", "-Z"], "nsd's option -Z is not one it takes"),
        (["/usr/sbin/unbound", "-d", "-c"], "unbound's option -c needs a value"),
    ],
)
def test_a_command_line_the_daemon_would_refuse_is_one_sentence(
    argv: list[str], words: str
) -> None:
    need(os.path.exists(argv[0]), f"needs {argv[0]}")
    result = run("run", "--", *argv)
    assert result.code == 64, result.stderr
    assert words in result.error


def test_the_daemon_option_lists_every_adapter() -> None:
    """`jailshim run --help`: --daemon names each daemon of the registry (postfix was missing
    from it), and each adapter's own config option is there, from its registry entry."""
    result = run("run", "--help")
    assert result.code == 0, result.stderr
    words = " ".join(result.stdout.split())  # as wrapped for any terminal width
    names = " ".join(sorted(daemons.REGISTRY))
    assert f"(default: COMMAND's name): {names} [JAILSHIM_DAEMON]" in words
    for entry in daemons.REGISTRY.values():
        if entry.config_flag:
            var = "JAILSHIM_" + entry.config_flag.removeprefix("--").replace("-", "_").upper()
            assert f"{entry.config_flag} FILE {entry.config_help} [{var}]" in words
