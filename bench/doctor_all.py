"""`jailshim doctor --all` on a synthetic host (issue 29): scan time and peak RSS.

    .venv/bin/python -m bench.doctor_all [--processes 5000] [--jails 20] [--per-jail 10]

Starts PROCESSES sleepers (forks of one Python parent, so bounded and cheap), of which JAILS x
PER_JAIL are chrooted: in each jail a master that mapped one of 3 copies of libcrypto.so.3
(3 file identities) and chrooted, and its workers. Runs `doctor --all --format json` on it
(wall time, peak RSS of doctor and its probes), then on the same host without the chrooted
ones against a bare `doctor --pid` of a sleeper (the idle case). Every sleeper dies with the
parent (PR_SET_PDEATHSIG) and the parent is killed by PID at the end; the scratch directory
is removed. Needs root.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIBCRYPTO = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"

# The synthetic host: one parent forks everything; each child dies with it.
HOST = r"""
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
area, plain, jails, per_jail = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
parent = os.getpid()

def child(body):
    pid = os.fork()
    if pid == 0:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            os._exit(0)
        try:
            body()
        finally:
            os._exit(0)
    return pid

def sleep():
    while True:
        signal.pause()

def master(j):
    ctypes.CDLL(f"{area}/lib{j % 3}/libcrypto.so.3")
    os.chroot(f"{area}/jail{j}")
    os.chdir("/")
    for _ in range(per_jail - 1):
        child(sleep)
    sleep()

for _ in range(plain):
    child(sleep)
for j in range(jails):
    child(lambda j=j: master(j))
print("ready", flush=True)
sleep()
"""


def _start(area: Path, plain: int, jails: int, per_jail: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOST, str(area), str(plain), str(jails), str(per_jail)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    want = plain + jails * per_jail
    deadline = time.monotonic() + 120
    while len(_descendants(proc.pid)) < want and time.monotonic() < deadline:
        time.sleep(0.2)
    return proc


def _descendants(pid: int) -> list[int]:
    ps = ["ps", "-e", "-o", "pid=,ppid="]
    out = subprocess.run(ps, capture_output=True, text=True, check=False).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def _stop(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)  # its children die with it (PDEATHSIG)
    proc.wait()


def _timed(*args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB of doctor and its probes, stdout) of `jailshim ARGS`."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jailshim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return time.monotonic() - start, usage.ru_maxrss / 1024, out


def _discovery() -> float:
    """Seconds of fleet.discover() alone, in this process: the part that grows with the
    number of processes (the judging grows with the number of daemons)."""
    from jailshim.fleet import discover

    start = time.monotonic()
    discover()
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=5000)
    parser.add_argument("--jails", type=int, default=20)
    parser.add_argument("--per-jail", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/doctor_all.py needs root (chroot)")
    ctypes.CDLL(None)
    area = Path(tempfile.mkdtemp(prefix="jailshim-bench-all-"))
    area.chmod(0o755)
    try:
        for j in range(3):  # three copies: three (st_dev, st_ino) identities
            (area / f"lib{j}").mkdir()
            shutil.copy(LIBCRYPTO, area / f"lib{j}" / "libcrypto.so.3")
        for j in range(opts.jails):
            (area / f"jail{j}").mkdir(mode=0o755)
        chrooted = opts.jails * opts.per_jail
        rows = []
        for total in sorted({opts.processes // 4, opts.processes // 2, opts.processes}):
            host = _start(area, total - chrooted, opts.jails, opts.per_jail)
            try:
                runs = [_timed("doctor", "--all", "--format", "json") for _ in range(opts.runs)]
                scans = [_discovery() for _ in range(5)]
            finally:
                _stop(host)
            daemons = sum(1 for line in runs[0][2].splitlines() if '"kind": "daemon"' in line)
            rows.append(
                (
                    f"{total} processes, {chrooted} chrooted in {opts.jails} jails",
                    statistics.median(r[0] for r in runs),
                    max(r[1] for r in runs),
                    daemons,
                    statistics.median(scans),
                )
            )
        host = _start(area, 100, 0, 0)
        try:
            sleeper = _descendants(host.pid)[0]
            idle, bare = [], []
            for _ in range(2 * opts.runs + 1):  # interleaved: the machine's load hits both
                idle.append(_timed("doctor", "--all", "--format", "json"))
                bare.append(_timed("doctor", "--pid", str(sleeper)))
            idle_scan = statistics.median(_discovery() for _ in range(5))
        finally:
            _stop(host)
        rows.append(
            (
                "idle host: doctor --all",
                statistics.median(r[0] for r in idle),
                max(r[1] for r in idle),
                0,
                idle_scan,
            )
        )
        rows.append(
            (
                "idle host: doctor --pid (not chrooted)",
                statistics.median(r[0] for r in bare),
                max(r[1] for r in bare),
                0,
                0.0,
            )
        )
        print("| case | wall s (median) | peak RSS MB | daemons found | discovery s |")
        print("|---|---|---|---|---|")
        for name, seconds, rss, daemons, discovery in rows:
            print(f"| {name} | {seconds:.3f} | {rss:.1f} | {daemons} | {discovery:.3f} |")
        ratio = rows[-2][1] / rows[-1][1]
        print(f"\nidle --all / bare --pid: {ratio:.2f}")
    finally:
        shutil.rmtree(area, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
