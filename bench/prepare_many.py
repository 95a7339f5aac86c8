"""1000 `jailshim prepare` runs of one jail: the mount table must not grow; time per run.

.venv/bin/python -m bench.prepare_many [RUNS]    (default 1000; root: a nodev tmpfs jail,
so that prepare binds, the strategy that mounts)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import PYTHON, machine, precompile, write_section


def _lines() -> int:
    return len(Path("/proc/self/mountinfo").read_text().splitlines())


def main(runs: int) -> str:
    precompile()
    jail = Path(tempfile.mkdtemp(prefix="jailshim-bench-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "nodev,mode=0755", "tmpfs", str(jail)], check=True
    )
    argv = [
        PYTHON,
        "-m",
        "jailshim",
        "prepare",
        "--chroot",
        str(jail),
        "--no-verify",
        "--log-level",
        "error",
    ]
    try:
        before = _lines()
        subprocess.run(argv, check=True)
        after_first = _lines()
        samples = []
        for _ in range(runs - 1):
            start = time.perf_counter()
            subprocess.run(argv, check=True)
            samples.append(time.perf_counter() - start)
        after_all = _lines()
        subprocess.run(
            [PYTHON, "-m", "jailshim", "teardown", "--chroot", str(jail), "--log-level", "error"],
            check=True,
        )
        after_teardown = _lines()
    finally:
        subprocess.run(["umount", "-l", str(jail)], check=False)
        jail.rmdir()
    return "\n".join(
        [
            f"Machine: {machine()}; {runs} prepare runs of one nodev jail (bind strategy).",
            "",
            "| mount table lines | count |",
            "| --- | ---: |",
            f"| before | {before} |",
            f"| after the first prepare | {after_first} (+3 binds) |",
            f"| after {runs} prepares | {after_all} ({after_all - after_first:+d} since the first) |",
            f"| after teardown | {after_teardown} ({after_teardown - before:+d} vs before) |",
            "",
            f"Median time per repeated prepare: {statistics.median(samples) * 1000:.1f} ms "
            f"(p90 {sorted(samples)[int(len(samples) * 0.9)] * 1000:.1f} ms).",
            f"Target +0 lines after {runs} runs: {'met' if after_all == after_first else 'NOT met'}.",
        ]
    )


if __name__ == "__main__":
    report = main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    print(report)
    write_section("Repeated prepare", report)
