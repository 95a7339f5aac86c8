"""jailshim.8 and the bash completion (scripts/manpage.py) against the command they describe
(issue 31): the page's options per command are --help's, it renders without a warning, the
examples parse, and the completion completes in a real bash."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from jailshim import __version__, cli, daemon_registry
from tests.support import TESTS, clean_env, jailshim_argv, need

ROOT = TESTS.parent


def _generator() -> Any:
    """scripts/manpage.py, the build-time generator (outside the package: never on start-up)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("manpage", ROOT / "scripts" / "manpage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


manpage = _generator()
# an option in --help: "  --flag VALUE   help ... [JAILSHIM_X]" (the value and help may wrap)
HELP_OPTION = re.compile(r"^  (--[a-z0-9-]+)(?: ([^ \n].*?))?(?:  |\n|$)", re.MULTILINE)
HELP_VARIABLE = re.compile(r"\[(JAILSHIM_[A-Z0-9_]+)\]")
PAGE_OPTION = re.compile(r"^\.TP\n\\fB(\\-\\-[a-z0-9\\-]+)\\fR(?: \\fI(.*?)\\fR)?\n", re.MULTILINE)
PAGE_VARIABLE = re.compile(r"^Variable: \\fB(JAILSHIM_[A-Z0-9_]+)", re.MULTILINE)


def _unroff(text: str) -> str:
    return text.replace("\\-", "-").replace("\\e", "\\")


def _help_of(command: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(flag, value words) and the variables, in order, as `jailshim COMMAND --help` says."""
    out = subprocess.run(
        jailshim_argv(command, "--help"),
        capture_output=True,
        text=True,
        env=clean_env(COLUMNS="400"),
        check=True,
    ).stdout
    options = [
        (flag, value or "")
        for flag, value in HELP_OPTION.findall(out.split("options:", 1)[1])
        if flag != "--help"
    ]
    return options, HELP_VARIABLE.findall(out)


def _page_sections(page: str) -> dict[str, str]:
    parts = re.split(r'^\.SS "([a-z]+) .*"$', page.split(".SH COMMANDS", 1)[1], flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_page_lists_each_commands_options_as_help_does() -> None:
    sections = _page_sections(manpage.manpage())
    assert list(sections) == list(cli._COMMANDS)
    sections[cli.EXPLAIN] = sections[cli.EXPLAIN].split(".SH EXIT STATUS")[0]
    for command, section in sections.items():
        options, variables = _help_of(command)
        page_options = [(_unroff(f), _unroff(v)) for f, v in PAGE_OPTION.findall(section)]
        assert page_options == options, command
        assert PAGE_VARIABLE.findall(section) == variables, command
        # each option's help sentence, word for word (--help wraps it; the page escapes it)
        flat_page = " ".join(_unroff(section).split())
        for opt in cli._OPTIONS:
            if command in opt.commands:
                assert " ".join(opt.help.split()) in flat_page, (command, opt.flag)
        assert " ".join(cli._EXITS[command].split()) in flat_page, command


def test_the_page_names_every_exit_code_of_the_table() -> None:
    from jailshim.errors import EXIT_CODES

    status = manpage.manpage().split(".SH EXIT STATUS", 1)[1].split(".SH EXAMPLES")[0]
    assert re.findall(r"^\.B (\d+)$", status, re.M) == [
        str(code) for code in [0, *sorted(EXIT_CODES.values())]
    ]


@pytest.mark.parametrize("example", [line for _, line in manpage.EXAMPLES])
def test_every_example_parses(example: str) -> None:
    words = shlex.split(example.split("| ", 1)[-1].replace("$(pidof haproxy)", "71"))
    assert words[0] == "jailshim"
    cli.parse_args(words[1:], environ={})


def test_the_page_renders_without_a_warning(tmp_path: Path) -> None:
    page = tmp_path / "jailshim.8"
    page.write_text(manpage.manpage("2026-12-05"), encoding="utf-8")
    need(shutil.which("groff") is not None, "groff is not installed")
    groff = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (groff.returncode, groff.stderr) == (0, "")
    if shutil.which("mandoc"):
        lint = subprocess.run(
            ["mandoc", "-Tlint", str(page)], capture_output=True, text=True, check=False
        )
        assert lint.returncode == 0, lint.stdout
    text = subprocess.run(
        ["man", "-l", str(page)],
        capture_output=True,
        text=True,
        env=clean_env(MANWIDTH="400"),
        check=True,
    ).stdout
    assert f"jailshim {__version__}" in text
    assert "--rewrite-signal FROM:TO" in text


def test_the_version_has_one_source() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert __version__ == version
    changelog = (ROOT / "debian" / "changelog").read_text(encoding="utf-8").split("\n", 1)[0]
    assert changelog.startswith(f"jailshim ({version}) "), changelog
    said = subprocess.run(jailshim_argv("--version"), capture_output=True, text=True, check=True)
    assert said.stdout.strip() == f"jailshim {version}"
    assert f'"jailshim {version}"' in manpage.manpage()


def _complete(script: Path, *words: str) -> list[str]:
    """COMPREPLY for the last word of ``words`` (the one under the cursor), from real bash."""
    line = " ".join(shlex.quote(w) for w in words)
    out = subprocess.run(
        [
            "bash",
            "--norc",
            "-c",
            f"source {shlex.quote(str(script))}; COMP_WORDS=({line}); "
            f"COMP_CWORD={len(words) - 1}; _jailshim; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_bash_completes_commands_options_and_values(tmp_path: Path) -> None:
    script = tmp_path / "jailshim"
    script.write_text(manpage.completion(), encoding="utf-8")
    assert _complete(script, "jailshim", "pre") == ["prepare"]
    assert _complete(script, "jailshim", "prepare", "--no-v") == ["--no-verify"]
    assert _complete(script, "jailshim", "prepare", "--rewrite") == []  # run's, not prepare's
    assert _complete(script, "jailshim", "run", "--rewrite") == ["--rewrite-signal"]
    assert _complete(script, "jailshim", "run", "--daemon", "") == sorted(daemon_registry.REGISTRY)
    assert _complete(script, "jailshim", "run", "--rewrite-signal", "TE") == ["TERM:"]
    assert _complete(script, "jailshim", "run", "--rewrite-signal", "TERM:QU") == ["TERM:QUIT"]
    assert "KILL:" not in _complete(script, "jailshim", "run", "--rewrite-signal", "")
    assert _complete(script, "jailshim", "doctor", "--format", "p") == ["prometheus"]
    assert _complete(script, "jailshim", "run", "--files", "") == ["time", "resolver", "services"]
    assert _complete(script, "jailshim", "run", "--init", "--gra") == ["--grace"]
    # every option of every command is offered after it
    for command in cli._COMMANDS:
        offered = set(_complete(script, "jailshim", command, "--"))
        assert {o.flag for o in cli._OPTIONS if command in o.commands} <= offered, command


def test_an_option_that_takes_a_value_is_never_offered_options_as_it(tmp_path: Path) -> None:
    """After `--timeout ` Tab offered the command's options, as if --timeout were a switch."""
    script = tmp_path / "jailshim"
    script.write_text(manpage.completion(), encoding="utf-8")
    for opt in cli._OPTIONS:
        if not opt.switch:
            offered = _complete(script, "jailshim", opt.commands[0], opt.flag, "")
            assert not [word for word in offered if word.startswith("--")], opt.flag
    assert "--grace" in _complete(script, "jailshim", "run", "--init", "")
