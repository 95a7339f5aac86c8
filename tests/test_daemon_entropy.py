"""A running daemon's own entropy facts (issue 23): its seccomp filters' answer to getrandom()
(real filters made by libseccomp, read back with PTRACE_SECCOMP_GET_FILTER), OpenSSL's marker in
its IPC namespace, and the kernel release it sees."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from jailshim.verify import daemon_entropy, seccomp
from jailshim.verify.verdict import Getrandom
from tests.handshake import kernel_wait, wait_until
from tests.support import need

TESTS = Path(__file__).parent
SECCOMP_RUN = str(TESTS / "seccomp_run.py")
MACHINE = os.uname().machine


def _has_python_seccomp() -> bool:
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import seccomp"], capture_output=True, check=False
    )
    return probe.returncode == 0


def _sleeper(procs: list[subprocess.Popen[bytes]], *wrap: str) -> int:
    """A process that sleeps (exec'd by ``wrap``); its PID once exec'd into sleep."""
    proc = subprocess.Popen([*wrap, "sleep", "60"])
    procs.append(proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
        except OSError:
            comm = ""
        if comm == "sleep":
            return proc.pid
        time.sleep(0.01)
    raise AssertionError(f"{wrap} did not exec sleep")


def _exported(rule: str) -> bytes:
    """A filter as libseccomp builds it: ``rule`` is python3-seccomp code adding rules to f."""
    need(_has_python_seccomp(), "needs Debian's python3-seccomp")
    code = (
        "import sys, errno, seccomp\n"
        "f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)\n"
        f"{rule}\n"
        "f.export_bpf(sys.stdout.buffer)\n"
    )
    return subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, check=True).stdout


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('f.add_rule(seccomp.ERRNO(errno.ENOSYS), "getrandom")', Getrandom.ENOSYS),
        ('f.add_rule(seccomp.ERRNO(errno.EPERM), "getrandom")', Getrandom.EPERM),
        ('f.add_rule(seccomp.ERRNO(errno.EACCES), "getrandom")', Getrandom.OTHER),
        ('f.add_rule(seccomp.ERRNO(errno.EPERM), "openat")', Getrandom.WORKS),
        ('f.add_rule(seccomp.KILL, "getrandom")', Getrandom.OTHER),
        ('f.add_rule(seccomp.LOG, "getrandom")', Getrandom.WORKS),
        ('f.add_rule(seccomp.TRACE(1), "getrandom")', Getrandom.UNKNOWN),
        # an argument jailshim can guess (flags 0, as OpenSSL calls it)...
        (
            'f.add_rule(seccomp.ERRNO(errno.EPERM), "getrandom", seccomp.Arg(2, seccomp.EQ, 1))',
            Getrandom.WORKS,
        ),
        # ...and one it cannot (the buffer's address)
        (
            'f.add_rule(seccomp.ERRNO(errno.EPERM), "getrandom", '
            "seccomp.Arg(0, seccomp.GT, 0x600000000000))",
            Getrandom.UNKNOWN,
        ),
    ],
)
def test_libseccomps_filters_evaluated(rule: str, expected: Getrandom) -> None:
    """A filter libseccomp compiled, run by jailshim's evaluator on a getrandom() call."""
    answer, why = seccomp.getrandom_answer([_exported(rule)], MACHINE)
    assert answer is expected, why


def test_the_most_severe_filter_wins() -> None:
    """Several filters: the kernel takes the most severe action, not the newest or first."""
    allow_all = _exported("")
    deny = _exported('f.add_rule(seccomp.ERRNO(errno.ENOSYS), "getrandom")')
    assert seccomp.getrandom_answer([allow_all, deny], MACHINE)[0] is Getrandom.ENOSYS
    assert seccomp.getrandom_answer([deny, allow_all], MACHINE)[0] is Getrandom.ENOSYS
    kill = _exported('f.add_rule(seccomp.KILL_PROCESS, "getrandom")')
    assert seccomp.getrandom_answer([deny, kill], MACHINE)[0] is Getrandom.OTHER


def test_a_malformed_filter_is_cannot_tell() -> None:
    for program in (b"", b"\x00" * 7, bytes(8)):  # empty, torn, a load that runs off the end
        assert seccomp.getrandom_answer([program], MACHINE)[0] is Getrandom.UNKNOWN


def test_status_lines() -> None:
    text = "Name:\thaproxy\nSeccomp:\t2\nSeccomp_filters:\t3\n"
    assert seccomp.seccomp_status(text) == (2, 3)
    assert seccomp.seccomp_status("Name:\tx\n") == (0, 0)


@pytest.mark.parametrize("err", ["ENOSYS", "EPERM"])
def test_a_live_daemons_filter_is_read_and_judged(
    root: None, started: list[subprocess.Popen[bytes]], err: str
) -> None:
    """doctor's fact is the daemon's: a process whose filter denies getrandom() is judged
    denied, read with a ptrace stop; without the option, cannot tell; and the daemon runs on."""
    need(_has_python_seccomp(), "needs Debian's python3-seccomp")
    pid = _sleeper(started, "/usr/bin/python3", SECCOMP_RUN, "deny", err, "--")
    status = Path(f"/proc/{pid}/status").read_text()
    facts = daemon_entropy.daemon_entropy(pid, status, read_filter=True)
    assert facts.getrandom is Getrandom(err), facts
    assert facts.seccomp_filters == 1
    unread = daemon_entropy.daemon_entropy(pid, status, read_filter=False)
    assert unread.getrandom is Getrandom.UNKNOWN
    assert "--read-filter" in unread.getrandom_why
    # detached, not stopped: back asleep in its sleep (a tracee left stopped never is). It
    # was "S 0.05 s later", which a loaded machine could leave still runnable after detach.
    wait_until(lambda: kernel_wait(pid), "the daemon to sleep again, not stay stopped")


def test_no_filter_is_getrandom_working(root: None, started: list[subprocess.Popen[bytes]]) -> None:
    pid = _sleeper(started)
    facts = daemon_entropy.daemon_entropy(
        pid, Path(f"/proc/{pid}/status").read_text(), read_filter=True
    )
    assert (facts.getrandom, facts.seccomp_filters) == (Getrandom.WORKS, 0)


def test_the_marker_is_looked_for_in_the_daemons_ipc_namespace(
    root: None, started: list[subprocess.Popen[bytes]]
) -> None:
    """Key 114 made in the daemon's own IPC namespace is found; doctor's namespace has none."""
    need(_has_python_seccomp(), "needs Debian's python3-seccomp")
    marked = _sleeper(
        started,
        "unshare",
        "--ipc",
        "/usr/bin/python3",
        SECCOMP_RUN,
        "deny",
        "ENOSYS",
        "--shm-marker",
        "--",
    )
    plain = _sleeper(started, "unshare", "--ipc")
    assert daemon_entropy.marker_in(marked) is True
    assert daemon_entropy.marker_in(plain) is False


def test_the_kernel_release_the_daemon_sees(
    root: None, started: list[subprocess.Popen[bytes]]
) -> None:
    old = _sleeper(started, "setarch", "--uname-2.6", "--")
    new = _sleeper(started)
    assert daemon_entropy.kernel_seen(old) == (2, 6)
    assert daemon_entropy.kernel_seen(new) == daemon_entropy._release(os.uname().release)
    assert daemon_entropy.kernel_seen(new) >= (4, 8)  # type: ignore[operator]
