"""Helpers shared by the tests: run the CLI, read its events, look into jails, snapshot dirs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
NSRUN = str(TESTS / "nsrun.py")
JAIL_READER = str(TESTS / "jail_reader.py")
NOBODY = 65534
IN_CI = os.environ.get("CI", "").lower() == "true"


# A racer: exchanges two names in a directory (renameat2 RENAME_EXCHANGE) in a loop until
# SIGTERM, and leaves them as it found them. argv: DIR (or "fd:N", a directory fd root opened
# before the racer dropped to its user), NAME1, NAME2.
EXCHANGER = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/fs.h>
static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }
int main(int argc, char **argv) {
    (void)argc;
    /* a directory, or "fd:N" (opened by root before the racer dropped to its user) */
    int dir = argv[1][0] == 'f' ? atoi(argv[1] + 3) : open(argv[1], O_PATH | O_DIRECTORY);
    long n = 0;
    signal(SIGTERM, on_term);
    while (!stop) {
        if (syscall(SYS_renameat2, dir, argv[2], dir, argv[3], RENAME_EXCHANGE)) return 1;
        n++;
    }
    if (n % 2) syscall(SYS_renameat2, dir, argv[2], dir, argv[3], RENAME_EXCHANGE);
    return 0;
}
"""


def need(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false on a laptop; under CI=true a skip is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and this test cannot run: {reason}")
    pytest.skip(reason)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        """The JSON log events on stderr (every stderr line must be one)."""
        return [json.loads(line) for line in self.stderr.splitlines() if line.strip()]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    @property
    def error(self) -> str:
        """The one failure sentence; asserts there is exactly one failure event."""
        failures = self.named("failed")
        assert len(failures) == 1, self.stderr
        return str(failures[0]["error"])


def jailshim_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "jailshim", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAILSHIM_")}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None, wrap: list[str] | None = None) -> Result:
    """Run ``jailshim ARGS`` (optionally under ``wrap``, e.g. unshare) and capture everything."""
    argv = [*(wrap or []), *jailshim_argv(*args)]
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env or clean_env(), timeout=120, check=False
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def in_shell(script: str, *args: str, env: dict[str, str] | None = None) -> Result:
    """``sh -c script sh ARGS`` (ARGS are "$@"), captured; never a traceback."""
    proc = subprocess.run(
        ["sh", "-c", script, "sh", *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def spawn(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a long-running process with its output captured (stop it with daemons.stop)."""
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or clean_env(),
    )


def read_in_jail(
    jail: Path, name: str, uid: int = NOBODY, wrap: list[str] | None = None
) -> dict[str, Any]:
    """What ``name`` under jail/dev is and reads, seen from inside the chroot as ``uid``."""
    proc = subprocess.run(
        [*(wrap or []), sys.executable, JAIL_READER, str(jail), name, str(uid), str(uid)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_ran(proc)
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def snapshot(top: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry below ``top`` (not following symlinks) with type, mode, owner and content."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            content: Any = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode):
                content = st.st_rdev
            found[str(path.relative_to(top))] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_ino,
                content,
            )
    return found


def mount_lines(path: Path) -> list[str]:
    """The mount table's lines for mount points at or below ``path``, in order. Scoped to the
    test's own directory: the machine-wide count changes whenever anything else on the machine
    mounts (another test run, podman), which made an idempotence test flaky."""
    prefix = str(path.resolve())
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [
        line for line in lines if (p := line.split()[4]) == prefix or p.startswith(prefix + "/")
    ]


def mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve())
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def unmount_below(path: Path) -> None:
    """Detach every mount at or below ``path``, deepest first (test clean-up)."""
    for point in sorted(mounts_below(path), key=lambda p: p.count("/"), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def assert_ran(proc: subprocess.CompletedProcess[Any]) -> None:
    """Fail unless ``proc`` exited 0, showing its command, exit status, stderr and stdout.

    For output captured with check=False: CalledProcessError would show neither stream.
    """
    if proc.returncode == 0:
        return
    import shlex

    def tail(data: str | bytes | None, limit: int) -> str:
        text = data.decode(errors="replace") if isinstance(data, bytes) else data or ""
        return text[-limit:].rstrip()

    argv = proc.args if isinstance(proc.args, str) else shlex.join(map(str, proc.args))
    raise AssertionError(
        f"exit status {proc.returncode}: {argv}\n"
        f"--- stderr ---\n{tail(proc.stderr, 8000)}\n--- stdout ---\n{tail(proc.stdout, 2000)}"
    )


def compile_c(directory: Path, name: str, source: str, *flags: str) -> Path:
    """``source`` built by gcc with ``flags`` as directory/``name`` (needs gcc)."""
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc)")
    (directory / f"{name}.c").write_text(source)
    out = directory / name
    cc = subprocess.run(
        ["gcc", *flags, "-o", str(out), str(directory / f"{name}.c")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cc.returncode == 0, cc.stderr
    return out
