"""`run --init` with no jail: the fast path (jailshim/__main__.py) against the full command line
(jailshim.cli.main), over many command lines and JAILSHIM_ variables, init options and bad
values among them. Both must exit alike, say the same sentences on stderr (timestamps and
PIDs aside), start COMMAND alike (its arguments, environment, signal settings) and supervise
it alike (a rewritten signal, a mapped exit status). And for the inputs it accepts, the fast
path really is taken (structlog and the command line are never imported)."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jailshim.__main__ as entry
from jailshim import cli
from tests.support import clean_env, need

FULL = [sys.executable, "-c", "import sys; from jailshim.cli import main; sys.exit(main())"]
FAST = [sys.executable, "-m", "jailshim"]
# COMMAND: its arguments, its signal settings (its child grep's: the shell blocks signals
# around a fork, so reading its own was a race), any JAILSHIM_ variable it got, then exit $CODE
REPORT = (
    'echo "args:$#:$*"; grep -E "^Sig(Ign|Blk)" /proc/self/status; env | grep ^JAILSHIM_ | sort; '
    'exit "${CODE:-0}"'
)
SH = ["/bin/sh", "-c", REPORT, "sh"]

# (run's words before `--` COMMAND, its JAILSHIM_ variables, is it one the fast path takes?)
CASES: list[tuple[list[str], dict[str, str], bool]] = [
    (["--init"], {}, True),
    (["--init", "--init"], {}, True),
    (["--init", "--grace", "2.5"], {}, True),
    (["--init", "--grace=0"], {}, True),
    (["--init", "--grace", "x"], {}, False),
    (["--init", "--grace", "-1"], {}, False),
    (["--init", "--grace=-1"], {}, False),
    (["--init", "--grace=86401"], {}, False),
    (["--init", "--grace", "1e3"], {}, False),
    (["--init", "--grace"], {}, False),
    (["--init", "--rewrite-signal", "TERM:QUIT", "--rewrite-signal", "USR1:0"], {}, True),
    (["--init", "--rewrite-signal", "KILL:TERM"], {}, False),
    (["--init", "--rewrite-signal", "TERM:STOP"], {}, False),
    (["--init", "--rewrite-signal", "TERM:QUIT", "--rewrite-signal", "15:1"], {}, False),
    (["--init", "--map-exit", "3:0", "--map-exit=4:1"], {"CODE": "3"}, True),
    (["--init", "--map-exit", "300:0"], {}, False),
    (["--init", "--map-exit", "3"], {}, False),
    (["--init", "--stop-delay", "0.1"], {}, True),
    (["--init", "--stop-delay", "nan"], {}, False),
    (["--init", "--kill-group"], {}, True),
    (["--init", "--kill-group=1"], {}, False),
    (["--init", "--pdeath-signal", "TERM"], {}, True),
    (["--init", "--pdeath-signal", "KILL"], {}, False),
    (["--init", "--inherited-signals", "reset"], {}, True),
    (["--init", "--inherited-signals", "keep"], {}, True),
    (["--init", "--inherited-signals", "all"], {}, False),
    (["--init", "--log-level", "error"], {}, True),
    (["--init", "--log-level", "debug"], {}, True),
    (["--init", "--log-level", "warning", "--log-format", "json"], {}, True),
    (["--init", "--log-format", "console"], {}, False),  # structlog's console renderer
    (["--init", "--log-level", "loud"], {}, False),
    (["--init", "--log-format", "console", "--log-level", "error"], {}, True),  # says nothing
    (["--init", "--ini"], {}, False),  # argparse's abbreviation
    (["--init", "--dry-run"], {}, False),
    (["--init", "--user", "nobody"], {}, False),
    (["--init", "--wait-addr", "127.0.0.1:9"], {}, False),
    (["--gra", "3", "--init"], {}, False),
    ([], {"JAILSHIM_INIT": "1"}, True),
    ([], {"JAILSHIM_INIT": "yes", "JAILSHIM_KILL_GROUP": "on"}, True),
    ([], {"JAILSHIM_INIT": "maybe"}, False),
    (["--init"], {"JAILSHIM_INIT": "0"}, True),  # the flag wins
    ([], {"JAILSHIM_INIT": "0"}, False),  # no --init: COMMAND is exec'd (not the fast path)
    (["--init"], {"JAILSHIM_GRACE": "3"}, True),
    (["--init"], {"JAILSHIM_GRACE": "x"}, False),
    (["--init", "--grace", "1"], {"JAILSHIM_GRACE": "x"}, True),  # flags win
    (["--init"], {"JAILSHIM_REWRITE_SIGNAL": " TERM:QUIT, USR1:USR2 ,"}, True),
    (["--init", "--rewrite-signal", "HUP:0"], {"JAILSHIM_REWRITE_SIGNAL": "KILL:1"}, True),
    (["--init"], {"JAILSHIM_MAP_EXIT": ",", "CODE": "7"}, True),
    (["--init"], {"JAILSHIM_MAP_EXIT": "7:9", "CODE": "7"}, True),
    (["--init"], {"JAILSHIM_STOP_DELAY": ""}, False),
    (["--init"], {"JAILSHIM_STOP_DELAY": "0.2"}, True),
    (["--init"], {"JAILSHIM_PDEATH_SIGNAL": "HUP"}, True),
    (["--init"], {"JAILSHIM_PDEATH_SIGNAL": ""}, False),
    (["--init"], {"JAILSHIM_INHERITED_SIGNALS": "keep"}, True),
    (["--init"], {"JAILSHIM_LOG_LEVEL": "warning"}, True),
    (["--init"], {"JAILSHIM_LOG_LEVEL": "WARNING"}, False),
    (["--init"], {"JAILSHIM_LOG_FORMAT": "xml"}, False),
    (["--init", "--log-format", "json"], {"JAILSHIM_LOG_FORMAT": "xml"}, True),
    (["--init"], {"JAILSHIM_CHROOT": "/nonexistent-jail"}, False),
    (["--init"], {"JAILSHIM_PID": "1"}, False),  # not run's: ignored by both
    (["--init"], {"JAILSHIM_TIMEOUT": "0"}, False),
]


def _taken(argv: list[str], env: dict[str, str]) -> bool:
    """Does the fast path take this command line (decided without acting)?"""
    run = entry.fast_init(argv, {k: v for k, v in env.items() if k.startswith("JAILSHIM_")})
    return run is not None and entry.ready(run) is not None


def _run(front: list[str], words: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    proc = subprocess.run(
        [*front, *words],
        capture_output=True,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout.decode(errors="replace"), _said(proc.stderr)


def _said(stderr: bytes) -> str:
    """stderr without what differs from run to run: timestamps, durations, process IDs; its
    lines sorted, since the supervisor and its child write theirs at the same time."""
    text = stderr.decode(errors="replace")
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "T", text)  # JSON and console
    text = re.sub(r'(pid|child|elapsed_ms)("?: |=)[\d.]+', r"\1\2N", text)
    return "\n".join(sorted(text.splitlines()))


def _both(words: list[str], env: dict[str, str]) -> None:
    full, fast = _run(FULL, words, env), _run(FAST, words, env)
    assert fast == full, f"{words} {env}"
    assert "Traceback" not in full[2]


@pytest.mark.parametrize(("words", "env", "taken"), CASES)
def test_fast_and_full_paths_agree(words: list[str], env: dict[str, str], taken: bool) -> None:
    # the case list must exercise the fast path as well as its refusals
    argv = ["run", *words, "--", *SH]
    assert _taken(argv, env) == taken
    _both(argv, env)


@pytest.mark.parametrize(
    "command",
    [
        ["/nonexistent/daemon"],  # 127
        ["true"],  # found on $PATH
        [*SH, "--", "x", "--grace", "1"],  # `--` and options in COMMAND's own words
        [*SH, "é", "\udcff"],  # not UTF-8: the log renders it as structlog does
        ["stunnel4", "/nonexistent.conf"],  # an adapter's name (an alias): the full path
        ["haproxy", "-f", "/nonexistent.cfg"],
    ],
)
def test_commands_agree(command: list[str]) -> None:
    _both(["run", "--init", "--", *command], {})
    _both(["run", "--init", "--log-level", "debug", "--", *command], {})


def test_a_command_that_cannot_run_agrees(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    plain = tmp_path / "daemon"
    plain.write_text("not a program\n")
    plain.chmod(0o644)  # 126: not executable
    _both(["run", "--init", "--", str(plain)], {})
    plain.chmod(0o755)  # executable, no #! and not ELF: the supervisor's exec fails (126)
    _both(["run", "--init", "--", str(plain)], {})


@pytest.mark.parametrize("words", [["run", "--init"], ["run", "--init", "--"], ["run"], []])
def test_no_command_agrees(words: list[str]) -> None:
    assert not _taken(words, {})
    _both(words, {})


def test_without_dashes_and_with_a_closed_stdin_go_to_the_full_path(tmp_path: Path) -> None:
    _both(["run", "--init", *SH], {})
    for front in (FULL, FAST):  # fd 0 closed: both give COMMAND /dev/null
        proc = subprocess.run(
            [*front, "run", "--init", "--", "/bin/sh", "-c", "readlink /proc/$$/fd/0"],
            capture_output=True,
            text=True,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: os.close(0),
            timeout=60,
            check=False,
        )
        assert (proc.returncode, proc.stdout) == (0, "/dev/null\n"), proc.stderr


def test_under_another_init_both_warn_alike() -> None:
    """PID 1 is tini (a fresh PID namespace): both paths warn that --init doubles the init."""
    tini = shutil.which("tini")
    need(tini is not None, "needs tini (Debian's tini package)")
    wrap = ["unshare", "--pid", "--fork", "--mount-proc", str(tini), "-s", "--"]
    full = _run([*wrap, *FULL], ["run", "--init", "--", "true"], {})
    fast = _run([*wrap, *FAST], ["run", "--init", "--", "true"], {})
    assert '"event": "init.double"' in full[2]
    assert fast == full


_WAITS = (
    'trap "echo got-USR1; exit 5" USR1; trap "echo got-QUIT; exit 6" QUIT; echo ready; '
    "while :; do sleep 0.02; done"
)


def _signalled(front: list[str], words: list[str], sig: int) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        [*front, "run", "--init", *words, "--", "/bin/sh", "-c", _WAITS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=clean_env(),
    )
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline() == b"ready\n"
        time.sleep(0.05)  # the trap is set before `ready`; the supervisor waits already
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), _said(err)


@pytest.mark.parametrize(
    ("words", "sig"),
    [
        (["--rewrite-signal", "TERM:USR1"], signal.SIGTERM),
        (["--rewrite-signal", "TERM:QUIT", "--map-exit", "6:0", "--grace", "1"], signal.SIGTERM),
        (["--rewrite-signal", "HUP:0", "--grace", "0.5"], signal.SIGUSR1),
        (["--kill-group", "--stop-delay", "0.1"], signal.SIGQUIT),
    ],
)
def test_supervision_agrees(words: list[str], sig: int) -> None:
    assert _taken(["run", "--init", *words, "--", "sh"], {})
    full, fast = _signalled(FULL, words, sig), _signalled(FAST, words, sig)
    assert fast == full


def _imports(words: list[str], env: dict[str, str] | None = None) -> set[str]:
    """The modules `python -v -m jailshim WORDS` loaded (every loader's, importlib's too)."""
    proc = subprocess.run(
        [sys.executable, "-v", "-m", "jailshim", *words],
        capture_output=True,
        text=True,
        env=clean_env(**(env or {})),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(re.findall(r"^import '([\w.]+)'", proc.stderr, re.M))


@pytest.mark.parametrize(
    ("words", "env"),
    [
        (["run", "--init", "--", "true"], {}),
        (["run", "--init", "--grace", "1", "--map-exit", "143:0", "--", "/bin/true"], {}),
        (["run", "--", "/bin/true"], {"JAILSHIM_INIT": "1", "JAILSHIM_LOG_LEVEL": "error"}),
        (["run", "--init", "--inherited-signals", "keep", "--", "true"], {}),
    ],
)
def test_the_fast_path_is_taken(words: list[str], env: dict[str, str]) -> None:
    loaded = _imports(words, env)
    assert "jailshim.supervisor" in loaded  # it did run the init
    heavy = {"structlog", "jailshim.cli", "jailshim.log", "logging", "asyncio", "json", "argparse"}
    assert not heavy & loaded


def test_the_full_path_when_it_must() -> None:
    loaded = _imports(["run", "--init", "--log-format", "console", "--", "true"])
    assert "jailshim.cli" in loaded


@pytest.mark.parametrize("mode", ["keep", "reset"])
def test_signals_that_came_ignored_or_blocked_agree(mode: str) -> None:
    """Started with SIGHUP (a stop signal: jailshim catches it until the hand-over) and SIGUSR2
    ignored and SIGUSR1 blocked: --inherited-signals keep gives COMMAND all three back, reset
    none, on the fast path (stopsignals.catch_at_start recorded them) as on the full one."""

    def ignored_and_blocked() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})

    said = []
    # grep itself: a shell (SH) would set its children's mask itself, unblocking SIGUSR1
    words = ["run", "--init", "--inherited-signals", mode, "--"]
    words += ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]
    for front in (FULL, FAST):
        proc = subprocess.run(
            [*front, *words],
            capture_output=True,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            preexec_fn=ignored_and_blocked,
            timeout=60,
            check=False,
        )
        said.append((proc.returncode, proc.stdout.decode(), _said(proc.stderr)))
    assert said[0] == said[1]
    assert _taken(words, {})
    masks = dict(re.findall(r"^(SigIgn|SigBlk):\s*([0-9a-f]+)$", said[1][1], re.M))
    ignored, blocked = int(masks["SigIgn"], 16), int(masks["SigBlk"], 16)
    bit = {s: 1 << (s - 1) for s in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)}
    kept = mode == "keep"
    assert bool(ignored & bit[signal.SIGHUP]) == kept
    assert bool(ignored & bit[signal.SIGUSR2]) == kept
    assert bool(blocked & bit[signal.SIGUSR1]) == kept


def test_fast_options_are_runs_own() -> None:
    """The fast path's options and choices are cli's for `run`: a renamed option or a new
    choice cannot slip past it."""
    # cli's and entry's private tables on purpose: the test is that the two agree
    options = {o.flag: o for o in cli._OPTIONS if cli.RUN in o.commands}
    for flag in (*entry._SWITCHES, *entry._VALUES, *entry._REPEATED):
        assert flag in options
    for flag in entry._SWITCHES:
        assert options[flag].switch
    for flag in entry._REPEATED:
        assert options[flag].repeat
    for flag, choices in entry._CHOICES.items():
        assert set(choices) <= set(options[flag].choices or ())
    assert (entry._TRUE, entry._FALSE) == (cli._TRUE, cli._FALSE)
