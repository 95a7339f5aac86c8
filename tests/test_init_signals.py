"""--init against tini's and dumb-init's own behaviour (issue 24): every catchable signal reaches
COMMAND and none ends the supervisor, the log options, the inherited signal settings, the
parent-death signal, the stop delay, reap events; rewrites that cannot work, and the stop
sequence under a /proc of another PID namespace (issue 18). Debian's tini and dumb-init run the
same signal test as controls where they are installed."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jailshim.cli import parse_args
from jailshim.errors import UsageError
from jailshim.options import RunOptions
from jailshim.supervisor import FORWARDED, JOB_STOPS, STOPPING
from tests import pids
from tests.daemons import children, process_state, stop, wait_until
from tests.init_child import name as signal_name
from tests.support import TESTS, clean_env, jailshim_argv, need

CHILD = str(TESTS / "init_child.py")
PID_NS = ["unshare", "--pid", "--fork", "--mount-proc"]
# What the kernel raises for a fault; sent with kill they are plain signals (dumb-init forwards
# them, tini leaves them unblocked: as PID 1 the kernel drops them, else they end tini).
FAULTS = (
    signal.SIGILL,
    signal.SIGTRAP,
    signal.SIGABRT,
    signal.SIGBUS,
    signal.SIGFPE,
    signal.SIGSEGV,
    signal.SIGSYS,
)


def _init_argv(kind: str, pid1: bool, flags: tuple[str, ...] = ()) -> list[str]:
    if kind == "jailshim":
        return [*(PID_NS if pid1 else []), *jailshim_argv("run", "--init", *flags, "--")]
    binary = shutil.which(kind)
    need(binary is not None, f"Debian's {kind} (the control) is not installed")
    assert binary is not None
    init = {"tini": [binary, "--"] if pid1 else [binary, "-s", "--"], "dumb-init": [binary]}
    return [*(PID_NS if pid1 else []), *init[kind]]


@contextlib.contextmanager
def _running(
    argv: list[str], out: Path, pid1: bool, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The init (jailshim's supervisor or a control) over init_child.py recording everything;
    yields the process started and the init's PID, once the child is ready."""
    proc = subprocess.Popen(
        [*argv, sys.executable, CHILD, str(out), "0", "all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or clean_env(),
        # its own process group, never orphaned (see test_init_peers._recorder): the kernel
        # discards a job stop in an orphaned group, and the supervisor's own stop is tested
        process_group=0,
    )
    try:
        assert wait_until(lambda: out.exists() and "ready" in out.read_text(), 60)
        init = children(proc.pid)[0] if pid1 else proc.pid
        yield proc, init
    finally:
        # a stopped init would not act on the TERM below; proc is unreaped, its children pinned
        # as its children
        pids.kill(pids.pin_descendants(proc.pid), signal.SIGCONT)
        stop(proc)


def _received(out: Path) -> list[str]:
    return out.read_text().split()[1:]


# kind: what a control does not pass on (never sent: fatal to it; dropped: sent, not received)
_CONTROL = {
    ("tini", True): {"dropped": (*FAULTS, signal.SIGTTIN, signal.SIGTTOU), "unsent": ()},
    ("tini", False): {"dropped": (signal.SIGTTIN, signal.SIGTTOU), "unsent": FAULTS},
    # dumb-init as PID 1 leaves its child stopped after a job stop sent with kill: not sent
    ("dumb-init", True): {"dropped": (), "unsent": JOB_STOPS},
    ("dumb-init", False): {"dropped": (), "unsent": JOB_STOPS},
}


@pytest.mark.parametrize("pid1", [True, False], ids=["pid1", "subreaper"])
@pytest.mark.parametrize("kind", ["jailshim", "tini", "dumb-init"])
def test_every_signal_reaches_the_child(kind: str, pid1: bool, tmp_path: Path) -> None:
    """Every signal 1-64 a process can catch (but KILL, STOP, CHLD and glibc's 32 and 33), sent
    to the init one at a time, is received by COMMAND and leaves the init running; a job stop
    sent with kill stops COMMAND first, then the supervisor (as dumb-init), but not as PID 1
    (nothing above it could continue it). Then TERM: COMMAND exits 42, and so does the init.
    Before the fix, ALRM ended the supervisor with 142 and COMMAND ran on unsupervised."""
    out = tmp_path / "signals.txt"
    control = _CONTROL.get((kind, pid1), {"dropped": (), "unsent": ()})
    ordered = [s for s in FORWARDED if s not in (*STOPPING, *JOB_STOPS)] + list(JOB_STOPS)
    missed: list[str] = []
    with _running(_init_argv(kind, pid1), out, pid1) as (proc, init):
        for sig in ordered:
            if sig in control["unsent"]:
                continue
            before = len(_received(out))
            os.kill(init, sig)
            wait = 0.5 if sig in control["dropped"] else 10
            if not wait_until(lambda: len(_received(out)) > before, wait):  # noqa: B023
                missed.append(signal_name(sig))
            if sig in JOB_STOPS and kind == "jailshim":
                stopped = wait_until(lambda: process_state(init) == "T", 0 if pid1 else 5)
                assert stopped != pid1, (
                    f"{signal_name(sig)}: the supervisor's own stop, as PID 1: {pid1}"
                )
                os.kill(init, signal.SIGCONT)  # forwarded too: COMMAND records it
                assert wait_until(lambda: "SIGCONT" in _received(out)[before:], 10)  # noqa: B023
            assert process_state(init) not in ("gone", "Z"), f"{signal_name(sig)} ended the init"
        os.kill(init, signal.SIGTERM)
        proc.wait(timeout=30)
    got = _received(out)
    assert missed == [signal_name(s) for s in ordered if s in control["dropped"]], got
    assert proc.returncode == 42
    expected = {
        signal_name(s) for s in ordered if s not in (*control["dropped"], *control["unsent"])
    }
    assert expected <= set(got), sorted(expected - set(got))


def test_pipe_and_xfsz_are_not_dropped_and_the_own_write_is_not_forwarded(tmp_path: Path) -> None:
    """The interpreter ignores PIPE and XFSZ at start: an ignored signal is discarded, not queued,
    so they were silently dropped. Forwarded now; and a PIPE the kernel sends the supervisor for
    its own write to a closed stderr is not the operator's: COMMAND does not get it."""
    out = tmp_path / "signals.txt"
    with _running(_init_argv("jailshim", False), out, False) as (proc, init):
        os.kill(init, signal.SIGPIPE)
        os.kill(init, signal.SIGXFSZ)
        assert wait_until(lambda: {"SIGPIPE", "SIGXFSZ"} <= set(_received(out)))
        assert proc.stderr is not None
        proc.stderr.close()  # the supervisor's next log line meets EPIPE, and a SIGPIPE
        os.kill(init, signal.SIGUSR1)
        assert wait_until(lambda: "SIGUSR1" in _received(out))
        os.kill(init, signal.SIGTERM)
        proc.wait(timeout=30)
    assert _received(out).count("SIGPIPE") == 1, _received(out)
    assert proc.returncode == 42


# The log options ------------------------------------------------------------------------------


def _run_true(*flags: str, stderr: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        jailshim_argv("run", "--init", *flags, "--", "true"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


def test_supervisor_honours_log_level_and_format() -> None:
    """--log-level error: the supervisor says nothing (it printed init.started and init.exited
    as JSON whatever the level); --log-format console: its lines are key=value, not JSON;
    --log-level debug: it still says them."""
    quiet = _run_true("--log-level", "error")
    assert quiet.returncode == 0 and "init." not in quiet.stderr, quiet.stderr
    console = _run_true("--log-format", "console")
    lines = [line for line in console.stderr.splitlines() if "init.exited" in line]
    assert lines and not lines[0].startswith("{") and "exit_code=0" in lines[0], console.stderr
    loud = _run_true("--log-level", "debug")
    assert '"init.started"' in loud.stderr and '"init.exited"' in loud.stderr


def test_on_a_terminal_the_supervisor_keeps_out_of_the_childs_screen() -> None:
    """stderr a terminal, no log option: nothing from the supervisor lands on COMMAND's screen
    (the JSON init.started/init.exited lines did); with --log-level info it is asked for."""
    for flags, shown in (((), False), (("--log-level", "info"), True)):
        main, secondary = pty.openpty()
        try:
            proc = _run_true(*flags, stderr=secondary)
            os.close(secondary)
            secondary = -1
            text = b""
            with contextlib.suppress(OSError):  # EIO once the last writer is gone
                while chunk := os.read(main, 65536):
                    text += chunk
        finally:
            os.close(main)
            if secondary >= 0:
                os.close(secondary)
        assert proc.returncode == 0
        assert ("init.exited" in text.decode()) == shown, text
        assert b'{"timestamp"' not in text.split(b"handover")[-1], text


# Inherited signal settings --------------------------------------------------------------------

# As tini's test/sigconf: the starter ignores TTOU, SEGV, INT and blocks TTIN, ILL, TERM.
_SETTER = (
    "import os, signal, sys; "
    "[signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTTOU, signal.SIGSEGV, signal.SIGINT)]; "
    "signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTTIN, signal.SIGILL, signal.SIGTERM)); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)
_IGNORED = {signal.SIGTTOU, signal.SIGSEGV, signal.SIGINT}
_BLOCKED = {signal.SIGTTIN, signal.SIGILL, signal.SIGTERM}


def _mask(status: str, field: str) -> set[int]:
    line = next(line for line in status.splitlines() if line.startswith(field + ":"))
    bits = int(line.split()[1], 16)
    return {n + 1 for n in range(64) if bits >> n & 1}


@pytest.mark.parametrize("init", [True, False], ids=["init", "exec"])
@pytest.mark.parametrize("mode", ["reset", "keep", None])
def test_inherited_signals_reset_or_kept(mode: str | None, init: bool) -> None:
    """--inherited-signals keep gives COMMAND the ignored set and mask jailshim was started with
    (tini's sigconf test); reset, the default, gives every signal its default and no mask
    (dumb-init). PIPE and XFSZ come back at their default either way (the interpreter's own)."""
    flags = ("--init",) if init else ()
    env = clean_env(**({"JAILSHIM_INHERITED_SIGNALS": mode} if mode else {}))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _SETTER,
            *jailshim_argv("run", *flags, "--", "cat", "/proc/self/status"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    ignored, blocked = _mask(proc.stdout, "SigIgn"), _mask(proc.stdout, "SigBlk")
    if mode == "keep":
        assert ignored == _IGNORED and blocked == _BLOCKED, (ignored, blocked)
    else:
        assert ignored == set() and blocked == set(), (ignored, blocked)


# --pdeath-signal, --stop-delay, reap events -----------------------------------------------------


def test_pdeath_signal_is_forwarded_when_the_starter_dies(tmp_path: Path) -> None:
    """--pdeath-signal TERM (tini -p): the process that started jailshim ends; the supervisor is
    told by the kernel and forwards TERM as any stop signal: COMMAND exits 42, so does it.
    Without the option nothing comes (COMMAND goes on)."""
    out = tmp_path / "signals.txt"
    pidfile = tmp_path / "init.pid"
    starter = (
        "import subprocess, sys, time, pathlib; "
        "p = subprocess.Popen(sys.argv[3:], stderr=open(sys.argv[2], 'w')); "
        "pathlib.Path(sys.argv[1]).write_text(str(p.pid)); "
        "time.sleep(3600)"
    )
    argv = jailshim_argv("run", "--init", "--pdeath-signal", "TERM", "--")
    child = [sys.executable, CHILD, str(out), "0", "all"]
    log = tmp_path / "stderr"
    parent = subprocess.Popen(
        [sys.executable, "-c", starter, str(pidfile), str(log), *argv, *child],
        env=clean_env(),
    )
    sup, pinned = 0, None
    try:
        assert wait_until(lambda: out.exists() and "ready" in out.read_text(), 60)
        sup = int(pidfile.read_text())
        # pinned while its starter (alive) is its parent: once orphaned its number is free to be
        # reused when it ends
        pinned = pids.pin(sup, pids.child_of(parent.pid))
        assert pinned is not None
        assert process_state(sup) == "S"
        parent.kill()
        parent.wait()
        assert wait_until(lambda: "SIGTERM" in _received(out), 20), _received(out)
        assert wait_until(lambda: process_state(sup) == "gone", 20)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if pinned is not None:
            pids.kill([*pids.pin_children(pinned, sup), pinned])
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [e["exit_code"] for e in events if e["event"] == "init.exited"] == [42]


def test_pdeath_signal_when_the_starter_died_before_the_handover(tmp_path: Path) -> None:
    """The starter dies while jailshim is still preparing: PR_SET_PDEATHSIG, set only at the
    hand-over, comes too late to be sent, and getppid() there already names the reaper. The
    parent read at jailshim's start tells it: COMMAND (sleep) gets the signal at once and dies
    of it, 138 (before, it slept on). Made deterministic: the starter stops jailshim once its
    handlers are in (cli.main has run) and exits; the test continues jailshim only then."""
    log = tmp_path / "stderr"
    starter = (
        "import os, signal, subprocess, sys, time\n"
        "p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL,"
        " stderr=open(sys.argv[1], 'w'))\n"
        "def caught():\n"
        "    status = open(f'/proc/{p.pid}/status').read()\n"
        "    line = next(x for x in status.splitlines() if x.startswith('SigCgt:'))\n"
        "    return int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1\n"
        "while not caught():\n"
        "    time.sleep(0.001)\n"
        "os.kill(p.pid, signal.SIGSTOP)\n"
        "print(p.pid)\n"
    )
    argv = jailshim_argv("run", "--init", "--pdeath-signal", "USR1", "--", "sleep", "30")
    done = subprocess.run(
        [sys.executable, "-c", starter, str(log), *argv],
        env=clean_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    jailshim = int(done.stdout)
    # kill() returns before the stop takes: a loaded jailshim was still R here (twice in 10
    # runs beside two busy loops); stopped (by its starter) until the SIGCONT below, so the
    # number is still jailshim's
    wait_until(lambda: process_state(jailshim) == "T", 10)
    pinned = pids.pin(
        jailshim, pids.cmdline_has("--pdeath-signal"), lambda p: process_state(p) == "T"
    )
    try:
        assert pinned is not None, f"jailshim ({jailshim}) is not stopped"
        pids.send(pinned, signal.SIGCONT)
        assert pids.ended(pinned, 20), log.read_text()
    finally:
        if pinned is not None:
            pids.kill([*pids.pin_children(pinned, jailshim), pinned])
    assert '"exit_code": 138' in log.read_text(), log.read_text()


def test_stop_delay_holds_the_stop_signal_and_nothing_else(tmp_path: Path) -> None:
    """--stop-delay 1: TERM reaches COMMAND a second after it was sent (a load balancer drains
    meanwhile); USR1 sent during the delay goes at once."""
    out = tmp_path / "signals.txt"
    argv = _init_argv("jailshim", False, ("--stop-delay", "1"))
    with _running(argv, out, False) as (proc, init):
        sent = time.monotonic()
        os.kill(init, signal.SIGTERM)
        time.sleep(0.1)
        os.kill(init, signal.SIGUSR1)
        assert wait_until(lambda: "SIGUSR1" in _received(out))
        assert "SIGTERM" not in _received(out)
        proc.wait(timeout=30)
        took = time.monotonic() - sent
        stderr = proc.stderr.read() if proc.stderr else ""
    assert _received(out)[:2] == ["SIGUSR1", "SIGTERM"] and proc.returncode == 42
    assert 1.0 <= took < 5, took
    assert '"init.stop_delay"' in stderr


def test_reaped_zombies_are_logged_at_debug(tmp_path: Path) -> None:
    """--log-level debug: one init.reaped event per orphan reaped (tini -w); at info none."""
    for level, count in (("debug", 5), ("info", 0)):
        out = tmp_path / f"orphans-{level}.txt"
        argv = _init_argv("jailshim", False, ("--log-level", level))
        proc = subprocess.Popen(
            [*argv, sys.executable, CHILD, str(out), "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        try:
            assert wait_until(lambda: out.exists() and "ready" in out.read_text(), 60)  # noqa: B023
            time.sleep(1)  # the grandchildren sleep 0.5 s, then are reaped
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        finally:
            _, stderr = stop(proc)
        reaped = [line for line in stderr.splitlines() if '"init.reaped"' in line]
        assert len(reaped) == count, stderr


# Options ----------------------------------------------------------------------------------------


def test_new_init_options_parsed_with_their_variables() -> None:
    """--stop-delay, --pdeath-signal and --inherited-signals, as flags and JAILSHIM_ variables;
    the two supervisor-only ones refused without --init; FROM may now be any forwarded signal."""
    args = parse_args(
        ["run", "--init", "--", "true"],
        {"JAILSHIM_STOP_DELAY": "2.5", "JAILSHIM_PDEATH_SIGNAL": "rtmin+2"},
    )
    assert isinstance(args, RunOptions)
    assert args.stop_delay == 2.5 and args.pdeath_signal == signal.SIGRTMIN + 2
    args = parse_args(["run", "--init", "--rewrite-signal", "ALRM:USR1", "--", "true"], {})
    assert isinstance(args, RunOptions)
    assert args.rewrite_signal == ((signal.SIGALRM, signal.SIGUSR1),)
    args = parse_args(["run", "--inherited-signals", "keep", "--", "true"], {})
    assert isinstance(args, RunOptions)
    assert args.inherited_signals == "keep"
    for argv, env, words in (
        (["run", "--stop-delay", "1", "--", "true"], {}, "--stop-delay applies only with --init"),
        (["run", "--", "true"], {"JAILSHIM_PDEATH_SIGNAL": "TERM"}, "JAILSHIM_PDEATH_SIGNAL"),
        (["run", "--init", "--pdeath-signal", "KILL", "--", "true"], {}, "not a signal the"),
        (["run", "--init", "--pdeath-signal", "CHLD", "--", "true"], {}, "not a signal the"),
        (["run", "--init", "--stop-delay", "-1", "--", "true"], {}, "from 0 to 86400"),
        (["run", "--init", "--rewrite-signal", "CHLD:TERM", "--", "true"], {}, "but KILL, STOP"),
    ):
        with pytest.raises(UsageError, match=words):
            parse_args(argv, env)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # never caught, so never forwarded: the sentence says why, not only that
        ("KILL:TERM", r"KILL is not a signal the supervisor forwards \(it cannot be caught\)"),
        ("STOP:TERM", r"STOP is not a signal the supervisor forwards \(it cannot be caught\)"),
        # TERM starts the stop sequence, which sends CONT right after it: a STOP in its place
        # was undone at once, and the daemon was killed after the grace without a word
        ("TERM:STOP", r"TERM:STOP.*would be undone at once"),
        ("INT:TSTP", r"INT:TSTP.*would be undone at once"),
    ],
)
def test_rewrites_that_cannot_work_are_refused(raw: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(["run", "--init", "--rewrite-signal", raw, "--", "true"], {})


def test_a_rewrite_to_stop_outside_the_stop_sequence_is_kept() -> None:
    from jailshim.init_options import rewrites

    assert rewrites(["USR1:STOP"], "--rewrite-signal") == ((10, 19),)


_SUBREAPER = """\
import ctypes, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, as handover does
sys.path[0] = {root!r}
from jailshim.supervisor import main
sys.exit(main(sys.argv[1:]))
"""


_TREE = """\
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(sys.argv[1], "w") as f:
            f.write(os.readlink("/proc/self"))  # its PID as /proc (and the test) number it
        time.sleep(30)
    os._exit(0)
while not os.path.getsize(sys.argv[1]):
    time.sleep(0.01)
"""


@pytest.mark.parametrize("shell", ['exec "$@"', '"$@"'], ids=["pid1", "subreaper"])
def test_stop_sequence_with_a_proc_of_another_pid_namespace(tmp_path: Path, shell: str) -> None:
    """`unshare --pid --fork` without --mount-proc: /proc numbers processes as the parent
    namespace does, getpid() as the new one. The supervisor walked /proc/GETPID (another
    process) and pinned /proc's numbers with pidfd_open (its own numbering): it found no
    descendant, never sent TERM or KILL, and waited for the grandchild to end by itself."""
    root = str(Path(__file__).resolve().parent.parent)
    out = tmp_path / "grandchild"
    out.write_text("")
    argv = ["unshare", "--pid", "--fork", "sh", "-c", f"sleep 0.01; {shell}", "sh"]
    argv += [sys.executable, "-S", "-E", "-c", _SUBREAPER.format(root=root), "--grace", "0.3"]
    argv += ["--", sys.executable, "-c", _TREE, str(out)]
    began = time.monotonic()
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - began
        assert proc.returncode == 0, stderr
        # before the grandchild's own 30 s sleep ended: the bug waited for that (a fixed 5 s
        # stood for it, and a slow start on a loaded machine could pass it)
        assert took < 30, stderr
        assert '"killed_count": 1' in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if out.read_text():  # the grandchild, if still running: its argv names OUT
            pids.kill([pids.pin(int(out.read_text()), pids.cmdline_has(str(out)))])
