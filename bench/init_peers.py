"""`run --init` against tini and dumb-init in one run: the start of `true` under each (no jail),
and a USR1 round trip (sent to the init, forwarded, answered by COMMAND through a pipe).

.venv/bin/python -m bench.init_peers [RUNS]     (default 30; Debian's tini and dumb-init)
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

from bench.common import PYTHON, interleaved, machine, precompile, write_section

# COMMAND for the round trip: answers each USR1 with one byte on stdout
ANSWER = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGUSR1, lambda *_: os.write(1, b'.'))\n"
    "os.write(1, b'r')\n"
    "while True:\n"
    "    time.sleep(3600)\n"
)


def _inits() -> dict[str, list[str]]:
    found = {"jailshim": [PYTHON, "-m", "jailshim", "run", "--init", "--log-level", "error", "--"]}
    for name, flags in (("tini", ["-s", "--"]), ("dumb-init", [])):
        if (binary := shutil.which(name)) is not None:
            found[name] = [binary, *flags]
    return found


def _round_trip(init: list[str], signals: int) -> float:
    """Median seconds from kill(init, USR1) to COMMAND's answer."""
    proc = subprocess.Popen(
        [*init, PYTHON, "-c", ANSWER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    try:
        assert os.read(fd, 1) == b"r"
        samples = []
        for _ in range(signals):
            start = time.perf_counter()
            os.kill(proc.pid, signal.SIGUSR1)
            select.select([fd], [], [], 10)
            assert os.read(fd, 1) == b"."
            samples.append(time.perf_counter() - start)
            time.sleep(0.002)  # one at a time: no two merge into one pending signal
        return statistics.median(samples)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait()


def main(runs: int) -> str:
    precompile()
    inits = _inits()
    starts = interleaved({name: ([*argv, "true"], None) for name, argv in inits.items()}, runs)
    trips = {name: _round_trip(argv, runs * 10) for name, argv in inits.items()}
    tini_start, tini_trip = starts.get("tini"), trips.get("tini")
    rows = [
        f"Machine: {machine()}; start: {runs} runs each, interleaved; round trip: {runs * 10} "
        "USR1 each; medians. No jail (`run --init -- true`, `--log-level error`).",
        "",
        "| init | start of `true` ms | × tini | USR1 round trip µs | × tini |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in inits:
        start, trip = starts[name], trips[name]
        ratio_start = f"{start / tini_start:.1f}" if tini_start else "-"
        ratio_trip = f"{trip / tini_trip:.2f}" if tini_trip else "-"
        rows.append(
            f"| {name} | {start * 1000:.1f} | {ratio_start} | {trip * 1e6:.0f} | {ratio_trip} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    report = main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
    print(report)
    write_section("--init against tini and dumb-init", report)
