"""--init: a lean PID 1 that forwards signals, reaps orphans and passes on the exit status."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jailshim.cli import parse_args
from jailshim.errors import UsageError
from jailshim.options import RunOptions
from tests import handshake, pids
from tests.daemons import children, status_field, stop
from tests.support import TESTS, clean_env, jailshim_argv, need, spawn

CHILD = str(TESTS / "init_child.py")
TREE = str(TESTS / "init_tree.py")


def _wait_for(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _argv(
    jail: Path, cmd: list[str], flags: tuple[str, ...] = (), pid_ns: bool = True
) -> list[str]:
    wrap = ["unshare", "--pid", "--fork", "--mount-proc"] if pid_ns else []
    run = ("run", "--init", *flags, "--chroot", str(jail), "--no-verify", "--", *cmd)
    return [*wrap, *jailshim_argv(*run)]


def _start(
    jail: Path,
    cmd: list[str],
    *,
    pid_ns: bool = True,
    flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    return spawn(_argv(jail, cmd, flags, pid_ns), env=env)


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
        # in any order: a Python handler in the child can be interrupted by the next signal
        expected = ["SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH"]
        _wait_for(lambda: sorted(out.read_text().split()[1:]) == expected)
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


@pytest.mark.parametrize("kill_group", [True, False], ids=["kill-group", "child-only"])
def test_kill_group_reaches_the_daemons_children(jail: Path, area: Path, kill_group: bool) -> None:
    """--kill-group: a forwarded signal reaches the whole process group, grandchildren included;
    without it, only COMMAND. USR1 is no stop signal, so neither the stop sequence nor the PID
    namespace's end can deliver it: a grandchild that records USR1 tells the two cases apart
    (the old test only checked the grandchild was dead at the end, which the stop sequence's
    SIGKILL or the namespace's end guarantees anyway). The grandchild also ignores TERM, so its
    death at the end proves the stop sequence's SIGKILL, not the forwarded TERM, ended it."""
    outer_mark, inner_mark = area / "outer", area / "inner"
    # "ready" comes from the grandchild once both shells' traps are set (USR1's default kills)
    inner = (
        f"trap '' TERM; trap 'echo usr1 >> {inner_mark}' USR1; echo ready; "
        "while :; do sleep 0.1; done"
    )
    outer = f"trap 'echo usr1 >> {outer_mark}' USR1; sh -c {shlex.quote(inner)} & "
    outer += "while :; do wait; done"
    flags = ("--kill-group", "--grace", "1") if kill_group else ("--grace", "1")
    proc = _start(jail, ["sh", "-c", outer], flags=flags)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        sup = _supervisor(proc)
        _wait_for(lambda: any(children(c) for c in children(sup)))
        shell = children(sup)[0]
        grandchild = children(shell)[0]
        in_namespace = status_field(grandchild, "NSpid").split()[-1]  # as the log names it
        os.kill(sup, signal.SIGUSR1)
        _wait_for(outer_mark.exists)
        if kill_group:
            _wait_for(inner_mark.exists)
        os.kill(sup, signal.SIGTERM)
        proc.wait(timeout=20)
        gone = not Path(f"/proc/{grandchild}").exists()
        assert gone or status_field(grandchild, "State")[0] == "Z"
    finally:
        _, stderr = stop(proc)
    assert inner_mark.exists() == kill_group, stderr
    assert proc.returncode == 143, stderr
    (event,) = _events(stderr, "init.stop")
    assert f"sh[{in_namespace}]" in event["killed"], event


@pytest.mark.parametrize("pid1", ["catatonit", "sh"])
def test_double_init_is_warned_about(jail: Path, pid1: str) -> None:
    """Under a real init that already reaps as PID 1 (catatonit, podman's), --init logs one
    warning naming it and still works: COMMAND's exit code comes through both inits. Under a
    PID 1 that is no init (sh), no warning."""
    program = {"catatonit": "/usr/bin/catatonit", "sh": "/bin/sh"}[pid1]
    need(os.access(program, os.X_OK), f"needs {program}")
    argv = jailshim_argv("run", "--init", "--chroot", str(jail), "--no-verify", "--")
    argv += ["sh", "-c", "exit 7"]
    under = [program, "--", *argv] if pid1 == "catatonit" else [program, "-c", shlex.join(argv)]
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", *under],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 7, proc.stderr
    warned = _events(proc.stderr, "init.double")
    if pid1 == "catatonit":
        assert [event["pid1"] for event in warned] == ["catatonit"], proc.stderr
        assert "already reaps zombies" in warned[0]["detail"]
    else:
        assert warned == [], proc.stderr


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


# The stop sequence, signal rewriting, exit mapping ----------------------------------------


def _events(stderr: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def _tree_facts(out: Path) -> tuple[int, float]:
    """The grandchild's PID and when COMMAND exited (monotonic), from init_tree.py's OUT."""
    words = dict(line.split(" ", 1) for line in out.read_text().splitlines() if " " in line)
    return int(words["grandchild"]), float(words["exiting"])


def _kill_if_grandchild(out: Path) -> None:
    """A failed test must not leave the grandchild running (it is ours: named by us)."""
    try:
        pid, _ = _tree_facts(out)
    except (KeyError, ValueError, OSError):
        return
    pids.kill([pids.pin(pid, pids.comm_is("grandchild"))])  # named so after the pin


@pytest.mark.parametrize("pid_ns", [True, False], ids=["pid1", "subreaper"])
def test_stop_sequence_kills_a_daemonised_grandchild_after_the_grace(
    jail: Path, area: Path, pid_ns: bool
) -> None:
    """COMMAND exits 0 leaving a daemonised grandchild (own session) that ignores SIGTERM: it
    gets TERM, is KILLed when --grace 1 is over, and only then does jailshim exit, with 0."""
    out = area / "tree.txt"
    out.touch()
    flags = ("--grace", "1")
    proc = _start(jail, [sys.executable, TREE, str(out), "ignore"], pid_ns=pid_ns, flags=flags)
    try:
        proc.wait(timeout=30)
        ended = time.monotonic()
        grandchild, exited = _tree_facts(out)
        gone = not Path(f"/proc/{grandchild}").exists()
    finally:
        _, stderr = stop(proc)
        if not pid_ns:
            _kill_if_grandchild(out)
    assert proc.returncode == 0, stderr
    assert "TERM" in out.read_text().splitlines()  # it was asked first
    print(f"stop with --grace 1: {ended - exited:.3f} s from COMMAND's exit to jailshim's")
    assert 1.0 <= ended - exited < 5, stderr  # ≈ the grace: not at once, not for ever
    (event,) = _events(stderr, "init.stop")
    assert event["still_running"] == event["killed"] == [f"grandchild[{grandchild}]"], event
    assert 1.0 <= event["seconds"] < 5 and event["level"] == "warning"
    if not pid_ns:  # as PID 1 the kernel would end it with the namespace anyway
        assert gone, "the grandchild outlived the supervisor"


def test_stop_sequence_ends_when_the_rest_obeys_term(jail: Path, area: Path) -> None:
    """A grandchild that exits on TERM ends the stop sequence at once, long before the default
    10 s grace; the stop event names it as still running and kills nothing."""
    out = area / "tree.txt"
    out.touch()
    proc = _start(jail, [sys.executable, TREE, str(out), "obey"])
    try:
        proc.wait(timeout=30)
        ended = time.monotonic()
        grandchild, exited = _tree_facts(out)
    finally:
        _, stderr = stop(proc)
    assert proc.returncode == 0, stderr
    print(f"stop with the default grace, TERM obeyed: {ended - exited:.3f} s")
    assert ended - exited < 5, stderr
    (event,) = _events(stderr, "init.stop")
    assert event["still_running"] == [f"grandchild[{grandchild}]"] and event["killed"] == []
    assert event["grace"] == 10.0


def test_stop_signal_then_kill_when_command_ignores_it(jail: Path) -> None:
    """TERM is forwarded to a COMMAND that ignores it: after --grace 1 the whole tree is
    KILLed and jailshim exits 137 (the status COMMAND died with)."""
    script = "trap '' TERM; echo ready; while :; do sleep 0.2; done"
    proc = _start(jail, ["sh", "-c", script], flags=("--grace", "1"))
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        sup = _supervisor(proc)
        asked = time.monotonic()
        os.kill(sup, signal.SIGTERM)
        proc.wait(timeout=30)
        ended = time.monotonic()
    finally:
        _, stderr = stop(proc)
    assert proc.returncode == 137, stderr
    assert 1.0 <= ended - asked < 5, stderr
    (event,) = _events(stderr, "init.stop")
    assert any(name.startswith("sh[") for name in event["killed"]), event


def test_term_while_the_supervisor_starts_is_kept(jail: Path) -> None:
    """TERM sent the moment jailshim has exec'd the supervisor, while its interpreter is still
    starting: the signal was blocked across the exec, so it is forwarded once the daemon runs
    (the supervisor logs its exit, 143), not fatal to a half-started supervisor."""
    proc = _start(jail, ["sleep", "60"], pid_ns=False)
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        deadline = time.monotonic() + 20
        while b"jailshim.supervisor" not in cmdline.read_bytes():
            assert time.monotonic() < deadline, "the supervisor never started"
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        _, stderr = stop(proc)
    assert proc.returncode == 143, stderr
    assert stderr.count('"init.exited"') == 1, stderr


def test_rewrite_signal_term_to_quit(jail: Path, area: Path) -> None:
    """--rewrite-signal TERM:QUIT: the daemon records QUIT (and no TERM) when TERM is sent."""
    out = area / "signals.txt"
    flags = ("--rewrite-signal", "TERM:QUIT", "--rewrite-signal", "hup:0")
    proc = _start(jail, [sys.executable, CHILD, str(out), "0"], flags=flags)
    try:
        sup = _supervisor(proc)
        _wait_for(lambda: out.exists() and "ready" in out.read_text())
        os.kill(sup, signal.SIGHUP)  # dropped
        os.kill(sup, signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        _, stderr = stop(proc)
    assert proc.returncode == 3, stderr  # init_child's exit on QUIT
    assert out.read_text().split() == ["ready", "SIGQUIT"]


def test_map_exit_from_the_environment(jail: Path) -> None:
    """JAILSHIM_MAP_EXIT=143:0,137:9: a daemon ended by TERM (143) makes jailshim exit 0."""
    proc = _start(jail, ["sleep", "60"], env=clean_env(JAILSHIM_MAP_EXIT="143:0,137:9"))
    try:
        sup = _supervisor(proc)
        _wait_for(lambda: len(children(sup)) == 1)
        os.kill(sup, signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        _, stderr = stop(proc)
    assert proc.returncode == 0, stderr
    (exited,) = _events(stderr, "init.exited")
    assert exited["exit_code"] == 0 and exited["mapped_from"] == 143


def test_a_burst_of_1000_signals_loses_no_kind(jail: Path, area: Path) -> None:
    """1000 signals of four kinds sent at once: each kind reaches the daemon (the kernel may
    merge repeats of one kind, never drop a kind), and the supervisor still forwards TERM."""
    out = area / "signals.txt"
    proc = _start(jail, [sys.executable, CHILD, str(out), "0"])
    kinds = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
    try:
        sup = _supervisor(proc)
        _wait_for(lambda: out.exists() and "ready" in out.read_text())
        for i in range(1000):
            os.kill(sup, kinds[i % 4])
        names = {s.name for s in kinds}
        _wait_for(lambda: set(out.read_text().split()[1:]) == names)
        os.kill(sup, signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        _, stderr = stop(proc)
    assert proc.returncode == 42, stderr
    print(f"burst of 1000: the daemon handled {len(out.read_text().split()) - 2}")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--grace", "soon"], {}, r"^--grace 'soon' must be a number of seconds from 0"),
        (["--grace", "-1"], {}, "from 0 to 86400"),
        ([], {"JAILSHIM_GRACE": "nan"}, r"^JAILSHIM_GRACE='nan' must be"),
        (["--rewrite-signal", "TERM"], {}, r"is not FROM:TO with two signals"),
        (["--rewrite-signal", "KILL:TERM"], {}, r"KILL is not a signal the supervisor forwards"),
        (["--rewrite-signal", "TERM:NOPE"], {}, r"NOPE is not a signal; give a name"),
        ([], {"JAILSHIM_REWRITE_SIGNAL": "TERM:QUIT,TERM:USR1"}, r"TERM is rewritten twice"),
        (["--map-exit", "143"], {}, r"^--map-exit '143' is not CODE:CODE"),
        (["--map-exit", "300:0"], {}, r"from 0 to 255"),
        ([], {"JAILSHIM_MAP_EXIT": "143:x"}, r"^JAILSHIM_MAP_EXIT='143:x' is not"),
    ],
)
def test_bad_stop_options_are_one_sentence(
    args: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(["run", "--init", *args, "--", "true"], env)


def test_stop_options_parsed() -> None:
    """Names with or without SIG, any case, or numbers; TO 0 drops; variables comma-separated."""
    args = parse_args(
        ["run", "--init", "--grace", "0", "--rewrite-signal", "sigterm:quit", "--", "true"],
        {"JAILSHIM_REWRITE_SIGNAL": "HUP:1", "JAILSHIM_MAP_EXIT": "143:0, 137:0"},
    )
    assert isinstance(args, RunOptions)
    assert args.grace == 0.0 and args.rewrite_signal == ((15, 3),)
    assert args.map_exit == ((143, 0), (137, 0))
    bad = subprocess.run(
        jailshim_argv("run", "--init", "--map-exit", "1:2:3", "--", "true"),
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert bad.returncode == 64 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


# A terminal --------------------------------------------------------------------------------


class _Terminal:
    """ARGV on a new pseudo-terminal, as its session leader (like `podman run -it`)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        import pty

        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.output = bytearray()
        self.seen = 0
        self.status: int | None = None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: every process on the terminal has closed it
            data = b""
        self.output += data
        return bool(data)

    def expect(self, needle: bytes, timeout: float = 20) -> None:
        """Wait for NEEDLE after what the last expect() matched."""
        deadline = time.monotonic() + timeout
        while (found := self.output.find(needle, self.seen)) < 0:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{needle!r} not seen on the terminal: {self.tail()!r}")
        self.seen = found + len(needle)

    def tail(self) -> bytes:
        """The end of the output (jailshim's log lines come first and say little here)."""
        return bytes(self.output[-1500:])

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                return os.waitstatus_to_exitcode(status)
            self._read(0.05)
        raise AssertionError(f"still running: {self.tail()!r}")

    def close(self) -> None:
        if self.status is None:  # unreaped: self.pid is still ours, and pins its descendants
            pids.kill(pids.pin_family(self.pid))
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def _state(pid: int) -> str:
    return status_field(pid, "State")[0]


def _foreground_group(pid: int) -> int:
    """tpgid from /proc/PID/stat: the foreground process group of PID's terminal."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[5])


def test_ctrl_c_reaches_the_daemon_and_the_supervisor_stays(jail: Path, area: Path) -> None:
    """On a terminal, as PID 1: the daemon's group gets the terminal's foreground, so Ctrl-C
    goes to the daemon alone. Had the supervisor got it, it would have been a stop signal and
    --grace 1 would have ended the daemon with SIGKILL; the daemon is still there for TERM.

    No "still running after 1.5 s" (a loaded machine could run the KILL later than that, and
    the test passed without looking): handshakes tell it. USR1 is forwarded, not a stop
    signal; the supervisor takes pending signals lowest number first, so once the daemon has
    the USR1 sent after the Ctrl-C, a SIGINT the supervisor got has started its grace. After
    the grace, a second USR1: the supervisor forwards it, and in the same turn would SIGKILL
    the daemon, before it can take the TERM sent next."""
    out = area / "signals.txt"
    grace = 1.0
    term = _Terminal(
        _argv(jail, [sys.executable, CHILD, str(out), "0"], ("--grace", str(grace))), clean_env()
    )

    def recorded(name: str, times: int = 1) -> bool:
        return out.read_text().split().count(name) >= times

    try:
        _wait_for(lambda: out.exists() and "ready" in out.read_text())
        sup = children(term.pid)[0]
        daemon = children(sup)[0]
        assert _foreground_group(daemon) == daemon
        term.write(b"\x03")
        _wait_for(lambda: recorded("SIGINT"))
        os.kill(sup, signal.SIGUSR1)
        _wait_for(lambda: recorded("SIGUSR1"))  # any SIGINT of the supervisor's is handled
        time.sleep(grace)  # at least the grace; a slow machine only makes it longer
        # the supervisor is gone too if it stopped the daemon: then no signal reaches it
        with contextlib.suppress(ProcessLookupError):
            os.kill(sup, signal.SIGUSR1)
            _wait_for(lambda: recorded("SIGUSR1", 2) or handshake.exited(daemon, 0))
            os.kill(sup, signal.SIGTERM)
        code = term.wait()
    finally:
        term.close()
    assert code == 42, f"the supervisor took the Ctrl-C as a stop signal: {term.tail()!r}"
    assert out.read_text().split() == ["ready", "SIGINT", "SIGUSR1", "SIGUSR1", "SIGTERM"]


def test_ctrl_z_of_the_daemon_as_pid1_is_undone(jail: Path, area: Path) -> None:
    """As PID 1 nothing above could ever continue a daemon stopped by Ctrl-Z: the supervisor
    continues it at once, so the Ctrl-C typed next reaches a running daemon."""
    out = area / "signals.txt"
    term = _Terminal(_argv(jail, [sys.executable, CHILD, str(out), "0"]), clean_env())
    try:
        _wait_for(lambda: out.exists() and "ready" in out.read_text())
        sup = children(term.pid)[0]
        term.write(b"\x1a")
        term.write(b"\x03")
        _wait_for(lambda: "SIGINT" in out.read_text())
        os.kill(sup, signal.SIGTERM)
        code = term.wait()
    finally:
        term.close()
    assert code == 42, term.tail()


def test_ctrl_z_in_a_shell_under_the_supervisor(jail: Path) -> None:
    """`podman run -it … --init bash`: bash has job control (it holds the terminal), Ctrl-Z
    stops its foreground job and gives the prompt back; bash's exit status is jailshim's."""
    env = clean_env(PS1="prompt$ ", HISTFILE="/dev/null")
    # on a terminal the supervisor keeps quiet unless asked: asked here, for its init.stop
    flags = ("--log-level", "info", "--log-format", "json")
    term = _Terminal(_argv(jail, ["bash", "--norc", "--noprofile", "-i"], flags), env)
    try:
        term.expect(b"prompt$ ")
        term.write(b"sleep 30\n")
        sup = children(term.pid)[0]
        shell = children(sup)[0]
        # bash has given the terminal to the job, and the job is sleep: Ctrl-Z before that
        # would go to bash, or to its forked child before exec, which still ignores SIGTSTP as
        # an interactive bash does (seen once in six runs on a loaded machine)
        _wait_for(
            lambda: (
                children(shell) == [_foreground_group(shell)]
                and Path(f"/proc/{children(shell)[0]}/comm").read_text().strip() == "sleep"
            )
        )
        term.write(b"\x1a")
        term.expect(b"Stopped")
        term.expect(b"prompt$ ")
        # left behind, still stopped: the stop sequence's TERM comes with a CONT, so it ends
        # at once instead of being KILLed after the 10 s grace
        term.write(b"disown -a; exit 7\n")
        code = term.wait()
    finally:
        term.close()
    assert code == 7, term.tail()
    assert b'"still_running": ["sleep[' in term.output, term.tail()
    assert b'"killed": []' in term.output, term.tail()


def test_ctrl_z_suspends_jailshim_as_a_job_of_the_shell(jail: Path, area: Path) -> None:
    """Not PID 1, run from an interactive shell: Ctrl-Z stops the daemon, and the supervisor
    stops itself so the shell gets its terminal back; `fg` continues both and the daemon holds
    the terminal again (Ctrl-C, then Ctrl-\\ reach it); its status is the shell's $?."""
    out = area / "signals.txt"
    command = shlex.join(_argv(jail, [sys.executable, CHILD, str(out), "0"], pid_ns=False))
    env = clean_env(PS1="prompt$ ", HISTFILE="/dev/null")
    term = _Terminal(["bash", "--norc", "--noprofile", "-i"], env)
    try:
        term.expect(b"prompt$ ")
        term.write(command.encode() + b"\n")
        _wait_for(lambda: out.exists() and "ready" in out.read_text())
        sup = children(term.pid)[0]
        daemon = children(sup)[0]
        term.write(b"\x1a")
        term.expect(b"Stopped")
        assert _state(daemon) == "T" and _state(sup) == "T"
        term.write(b"fg\n")
        _wait_for(lambda: _state(daemon) != "T" and _foreground_group(daemon) == daemon)
        term.write(b"\x03")
        _wait_for(lambda: "SIGINT" in out.read_text())
        term.write(b"\x1c")
        term.expect(b"prompt$ ")
        term.write(b"echo rc=$?; exit\n")
        term.expect(b"rc=3")
        term.wait()
    finally:
        term.close()
    assert out.read_text().split() == ["ready", "SIGINT", "SIGQUIT"]


CHAIN = """
import os, sys, time
from jailshim import supervisor
top = os.getpid()
r, w = os.pipe()
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:  # the next link: say who it is, then fork the one below
        os.write(w, b"%d " % os.getpid())
        continue
    if os.getpid() != top:  # a link with a child: wait for the signal
        time.sleep(60)
        os._exit(0)
    break
else:  # the deepest link
    os.write(w, b"end ")
    time.sleep(60)
    os._exit(0)
text = b""
while not text.endswith(b"end "):
    text += os.read(r, 65536)
chain = [int(p) for p in text.split()[:-1]]
reached = supervisor.signal_descendants(15)
print(chain == [int(n[n.index("[") + 1 : -1]) for n in reversed(reached)], len(reached))
"""


def test_signal_descendants_walks_a_deep_chain_deepest_first_and_nothing_else() -> None:
    """A chain of 60 processes, each the child of the one before: every one gets the signal,
    the deepest first; a process beside the chain (not below the caller) gets nothing."""
    beside = subprocess.Popen(["sleep", "60"])
    chain = subprocess.Popen(
        [sys.executable, "-c", CHAIN, "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS.parent,
        start_new_session=True,  # its own process group: whatever is left is killed below
    )
    try:
        out, err = chain.communicate(timeout=60)
        assert out.split() == ["True", "60"], out + err
        assert beside.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(chain.pid, signal.SIGKILL)
        chain.wait()
        beside.kill()
        beside.wait()
