"""Resident memory of the --init supervisor while its child sleeps, against a bare interpreter.

.venv/bin/python -m bench.init_rss [RUNS]     (default 20; needs root for the jail)
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import PYTHON, machine, precompile, write_section


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _measure(argv: list[str], *, supervisor: bool) -> int:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready = not supervisor or (
                b"jailshim.supervisor" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                and _children(proc.pid)
            )
            if ready:
                time.sleep(0.3)  # let it settle
                return _rss_kib(proc.pid)
            time.sleep(0.02)
        raise RuntimeError("the supervisor did not start")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait()


def main(runs: int) -> str:
    precompile()
    jail = Path(tempfile.mkdtemp(prefix="jailshim-bench-"))
    jail.chmod(0o755)
    bare, sup = [], []
    try:
        for _ in range(runs):
            bare.append(_measure([PYTHON, "-c", "import time; time.sleep(60)"], supervisor=False))
            sup.append(
                _measure(
                    [
                        PYTHON,
                        "-m",
                        "jailshim",
                        "run",
                        "--init",
                        "--chroot",
                        str(jail),
                        "--log-level",
                        "error",
                        "--",
                        "sleep",
                        "60",
                    ],
                    supervisor=True,
                )
            )
    finally:
        subprocess.run(
            [PYTHON, "-m", "jailshim", "teardown", "--chroot", str(jail), "--log-level", "error"],
            check=False,
        )
        shutil.rmtree(jail, ignore_errors=True)
    b, s = statistics.median(bare), statistics.median(sup)
    return "\n".join(
        [
            f"Machine: {machine()}; {runs} runs each; median VmRSS.",
            "",
            "| process | median RSS KiB | × bare |",
            "| --- | ---: | ---: |",
            f"| bare `python -c` (sleeping) | {b:.0f} | 1.00 |",
            f"| `jailshim run --init` supervisor (child sleeping) | {s:.0f} | {s / b:.2f} |",
            "",
            f"Target ≤ 1.3 × bare: {'met' if s / b <= 1.3 else 'not met'} ({s / b:.2f} ×).",
        ]
    )


if __name__ == "__main__":
    report = main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
    print(report)
    write_section("--init supervisor memory", report)
