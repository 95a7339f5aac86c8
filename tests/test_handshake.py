"""The tests' handshakes (tests/handshake.py) against real processes, pipes, FIFOs, sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemons import status_field
from tests.handshake import (
    FIFO_OPEN,
    WAIT,
    EventReader,
    datagrams_until,
    exited,
    kernel_wait,
    wait_until,
)
from tests.support import TESTS, need, spawn


def test_wait_until_returns_the_value_or_names_what_never_came() -> None:
    calls = iter([0, "", None, "here"])
    assert wait_until(lambda: next(calls), "a value", timeout=5, interval=0) == "here"
    start = time.monotonic()
    with pytest.raises(AssertionError, match="for the sky to fall: it did not happen"):
        wait_until(lambda: False, "the sky to fall", timeout=0.2)
    assert time.monotonic() - start >= 0.2


def test_kernel_wait_sees_a_fifo_open_asleep_and_its_wake_up(tmp_path: Path, root: None) -> None:
    """A writer opening a FIFO sleeps in the kernel until a reader comes; the moment a reader
    opens, it is not asleep there any more (runnable, or gone)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"exec 3>{fifo}"])
    try:
        wait_until(lambda: kernel_wait(writer.pid) == FIFO_OPEN, "the writer to block")
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.close(reader)
        assert kernel_wait(writer.pid) != FIFO_OPEN  # no time given to it: at once
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
        writer.wait()
    assert kernel_wait(writer.pid) == ""  # reaped: no such process


def test_kernel_wait_of_a_sleeper_is_not_a_fifo_open(root: None) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        where = wait_until(lambda: kernel_wait(sleeper.pid), "sleep to sleep")
        assert where != FIFO_OPEN
        os.kill(sleeper.pid, signal.SIGSTOP)
        # stopped, it has a wchan again (do_signal_stop), but it waits for no event
        wait_until(lambda: status_field(sleeper.pid, "State")[0] == "T", "sleep to stop")
        assert kernel_wait(sleeper.pid) == ""
    finally:
        sleeper.kill()
        sleeper.wait()


def test_exited_waits_on_the_pidfd() -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert not exited(sleeper.pid, timeout=0.1)
        sleeper.kill()
        assert exited(sleeper.pid, timeout=60)  # a zombie's pidfd reads ready too
    finally:
        sleeper.kill()
        sleeper.wait()
    assert exited(sleeper.pid, timeout=0)  # reaped


_TALKER = """
import json, sys
def say(**event):
    print(json.dumps(event), file=sys.stderr, flush=True)
say(event="started", n=1)
print("not json", file=sys.stderr, flush=True)
print("some stdout")
say(event="waiting", n=2)
sys.stdin.readline()  # the test's go, sent once it has seen "waiting"
say(event="done", n=3)
sys.exit(7)
"""


def _talker() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _TALKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_event_reader_waits_for_an_event_then_the_end() -> None:
    """The test acts (writes the go) only after the process said "waiting"; the process could
    not have said "done" before: the go is what it waits for."""
    proc = _talker()
    with EventReader(proc) as reader:
        seen = reader.wait_for(lambda e: e["event"] == "waiting", "the talker to wait")
        assert seen["n"] == 2
        assert [e["event"] for e in reader.events] == ["started", "waiting"]
        reader.wait_for_text("not json", "the line that is no event")
        with pytest.raises(AssertionError, match="waited for done's words"):
            reader.wait_for_text('"done"', "done's words", timeout=0.2)  # it waits for the go
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
        result = reader.finish()
    assert result.code == 7
    assert [e["event"] for e in reader.events] == ["started", "waiting", "done"]
    assert "not json" in result.stderr and result.stdout == "some stdout\n"


def test_event_reader_fails_when_the_process_ends_without_the_event() -> None:
    said = 'import sys; print(\'{"event": "other"}\', file=sys.stderr)'
    proc = spawn([sys.executable, "-c", said])
    with EventReader(proc) as reader, pytest.raises(AssertionError, match="waited for never"):
        reader.wait_for(lambda e: e["event"] == "never", "never", timeout=60)


def test_event_reader_stops_what_a_failed_test_left_running() -> None:
    proc = _talker()
    with pytest.raises(AssertionError), EventReader(proc) as reader:
        reader.wait_for(lambda e: e["event"] == "done", "done", timeout=0.5)
    assert proc.returncode is not None  # stopped by PID on the way out


def test_datagrams_until_reads_the_last_and_all_sent_before_it(tmp_path: Path) -> None:
    """Sent a, b, a, then z: z is awaited, and the datagrams sent before it are all read, in
    whatever order the sockets are looked at."""
    socks = {}
    for name in ("a", "b", "z"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(str(tmp_path / name))
        s.setblocking(False)
        socks[name] = s
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        assert datagrams_until(socks, lambda n: n == "z", timeout=0.1) is None  # nothing sent
        for name in ("a", "b", "a", "z"):
            sender.sendto(name.encode(), str(tmp_path / name))
        got = datagrams_until(socks, lambda n: n == "z", timeout=60)
        assert got is not None and sorted(got) == ["a", "a", "b", "z"]
    finally:
        sender.close()
        for s in socks.values():
            s.close()


def test_datagrams_until_waits_for_a_late_last(tmp_path: Path) -> None:
    """The last datagram comes late (here 0.7 s, past the old fixed 0.5 s): it is waited for,
    and what came before it is kept."""
    import threading

    socks = {}
    for name in ("a", "z"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(str(tmp_path / name))
        s.setblocking(False)
        socks[name] = s
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send_late() -> None:
        sender.sendto(b"a", str(tmp_path / "a"))
        time.sleep(0.7)  # lateness to wait for, not a wait for something to happen
        sender.sendto(b"z", str(tmp_path / "z"))

    late = threading.Thread(target=send_late)
    late.start()
    try:
        got = datagrams_until(socks, lambda n: n == "z", timeout=60)
        assert got is not None and sorted(got) == ["a", "z"]
    finally:
        late.join()
        sender.close()
        for s in socks.values():
            s.close()


def test_seccomp_run_hold_stops_the_first_call_until_the_go(tmp_path: Path, root: None) -> None:
    """seccomp_run.py hold SYSCALL DIR: CMD's first SYSCALL waits (DIR/held says so) until
    DIR/go exists; what the test does between is there when CMD goes on. Here uname(2), then
    a file the test writes only once the call is held."""
    seccomp = subprocess.run(
        ["/usr/bin/python3", "-c", "import seccomp"], capture_output=True, check=False
    )
    need(seccomp.returncode == 0, "needs Debian's python3-seccomp for /usr/bin/python3")
    hold, written = tmp_path / "hold", tmp_path / "written"
    hold.mkdir()
    argv = ["/usr/bin/python3", str(TESTS / "seccomp_run.py"), "hold", "uname", str(hold)]
    script = f"uname -r; cat {written}"
    proc = subprocess.Popen([*argv, "--", "sh", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        wait_until((hold / "held").exists, "uname's uname(2) to be held")
        written.write_text("written while held\n")
        (hold / "go").touch()
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and out == f"{os.uname().release}\nwritten while held\n", out
