"""Shared helpers for the benchmarks: timing medians, ratios, writing docs/benchmarks.md."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RESULTS = REPO / "docs" / "benchmarks.md"


def precompile() -> None:
    """Byte-compile jailshim, as an install is (pip; the Containerfile's compileall), like
    structlog in the baselines. These machines set PYTHONDONTWRITEBYTECODE: a source checkout
    would otherwise be compiled on every run (~12 ms), which no operator pays."""
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(REPO / "jailshim")], check=True)


def time_command(
    argv: list[str],
    runs: int,
    *,
    before: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> list[float]:
    """Wall-clock seconds of ``runs`` executions (``before`` runs untimed before each), in
    ``cwd``: `python -m` puts the working directory first on sys.path, before PYTHONPATH."""
    samples = []
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        subprocess.run(
            argv,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env or os.environ.copy(),
            cwd=cwd,
        )
        samples.append(time.perf_counter() - start)
    return samples


def interleaved(
    commands: dict[str, tuple[list[str], Callable[[], None] | None]], runs: int
) -> dict[str, float]:
    """Median seconds per command, measured round-robin so machine noise hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (argv, before) in commands.items():
            samples[name] += time_command(argv, 1, before=before)
    return {name: statistics.median(values) for name, values in samples.items()}


def write_section(title: str, body: str) -> None:
    """Replace (or append) the section ``## title`` in docs/benchmarks.md, keeping the rest."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    head, *sections = text.split("\n## ")
    sections = [s.rstrip() for s in sections if s.split("\n", 1)[0] != title]
    sections.append(f"{title}\n\n{body.strip()}")
    RESULTS.write_text("\n\n## ".join([head.rstrip(), *sections]) + "\n")


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"
