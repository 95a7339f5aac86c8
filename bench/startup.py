"""Start latency of jailshim against its baselines and the previous release, in the same run
(medians, ratios, jailshim's own milliseconds above `import structlog`).

sudo .venv/bin/python -m bench.startup [RUNS [COMMIT...]]    (default 30, 13a4f29; needs root)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.common import PYTHON, REPO, machine, precompile, time_command, write_section

STRUCTLOG = "python -c 'import structlog'"
INIT = "jailshim run --init, no jail"
# argv, what runs untimed before each run, the tree to run in (None: this one, from here)
Command = tuple[list[str], Callable[[], None] | None, Path | None]

SEED_RECIPE = (  # the seed story's shell entrypoint: mknod if missing, read 16 bytes, exec
    'd="$1/dev"; [ -c "$d/urandom" ] || { mkdir -p "$d"; mknod "$d/urandom" c 1 9; '
    'chmod 0666 "$d/urandom"; }; head -c 16 "$d/urandom" > /dev/null; exec /bin/true'
)


PREVIOUS = "13a4f29"  # the release before issue 28's start-up work


def _tree_of(commit: str, into: Path) -> Path:
    """``commit``'s jailshim, unpacked (git archive) and byte-compiled, to run side by side."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "jailshim"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(into / "jailshim")], check=True)
    where = subprocess.run(
        [PYTHON, "-c", "import jailshim; print(jailshim.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=into,
        env={**os.environ, "PYTHONPATH": str(into)},
    ).stdout
    assert where.startswith(str(into)), where  # not this tree's, found first on sys.path
    return into


def interleaved_env(commands: dict[str, Command], runs: int) -> dict[str, float]:
    """Median seconds per command, round-robin so that machine noise hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (argv, before, tree) in commands.items():
            # `python -m` takes jailshim from the working directory (sys.path[0]) first
            env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
            samples[name] += time_command(argv, 1, before=before, env=env, cwd=tree)
    return {name: statistics.median(values) for name, values in samples.items()}


WARM, COLD_ROW, HAPROXY = (
    "jailshim run, warm jail",
    "jailshim run, cold jail",
    "jailshim run, haproxy config",
)
CHECKER = "jailshim run, haproxy config and its checker"
NO_VERIFY = "jailshim run --no-verify, warm"


def main(runs: int, previous: tuple[str, ...] = (PREVIOUS,)) -> str:
    """The table of this tree against each of ``previous`` (commits), all in the same run."""
    precompile()
    work = Path(tempfile.mkdtemp(prefix="jailshim-bench-"))
    work.chmod(0o755)
    trees = {"this tree": REPO}
    for commit in previous:
        trees[commit] = _tree_of(commit, Path(tempfile.mkdtemp()))
    warm, hp_jail = work / "warm", work / "hp"
    for d in (warm, hp_jail):
        d.mkdir(mode=0o755)
    js = [PYTHON, "-m", "jailshim"]
    quiet = ["--log-level", "error"]
    subprocess.run([*js, "prepare", "--chroot", str(warm), *quiet], check=True)
    subprocess.run([*js, "prepare", "--chroot", str(hp_jail), *quiet], check=True)
    cfg = work / "haproxy.cfg"
    cfg.write_text(
        f"global\n    chroot {hp_jail}\n    user nobody\n    group nogroup\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\nfrontend f\n    bind 127.0.0.1:18553\n    bind [::1]:18553\n"
        "    default_backend b\nbackend b\n    server s 127.0.0.1:9\n"
    )
    colds = {name: work / f"cold-{i}" for i, name in enumerate(trees)}

    def fresh(cold: Path) -> Callable[[], None]:
        def again() -> None:
            shutil.rmtree(cold, ignore_errors=True)
            cold.mkdir(mode=0o755)

        return again

    baselines: dict[str, Command] = {
        "/bin/true": (["/bin/true"], None, None),
        "shell entrypoint (seed recipe)": (["sh", "-c", SEED_RECIPE, "sh", str(warm)], None, None),
        "python -c pass": ([PYTHON, "-c", "pass"], None, None),
        STRUCTLOG: ([PYTHON, "-c", "import structlog"], None, None),
    }
    rows = {
        WARM: ["run", "--chroot", str(warm), *quiet, "--", "/bin/true"],
        COLD_ROW: ["run", "--chroot", "COLD", *quiet, "--", "/bin/true"],
        HAPROXY: [
            "run", "--haproxy-config", str(cfg), "--no-config-check", *quiet, "--", "/bin/true",
        ],
        NO_VERIFY: ["run", "--chroot", str(warm), "--no-verify", *quiet, "--", "/bin/true"],
        INIT: ["run", "--init", *quiet, "--", "/bin/true"],
    }  # fmt: skip
    if shutil.which("haproxy"):  # `haproxy -c` runs while the jail is vetted and prepared
        rows[CHECKER] = ["run", "--haproxy-config", str(cfg), *quiet, "--", "/bin/true"]
    commands = dict(baselines)
    for tree, path in trees.items():
        for row, words in rows.items():
            cold = colds[tree]
            argv = [*js, *(str(cold) if w == "COLD" else w for w in words)]
            before = fresh(cold) if "COLD" in words else None
            commands[f"{row} @ {tree}"] = (argv, before, path)
    try:
        medians = interleaved_env(commands, runs)
    finally:
        for tree, cold in colds.items():
            subprocess.run(
                [*js, "teardown", "--chroot", str(cold), *quiet], check=False, cwd=trees[tree]
            )
        shutil.rmtree(work, ignore_errors=True)
        for commit in previous:
            shutil.rmtree(trees[commit], ignore_errors=True)
    return _report(runs, medians, list(trees), list(rows))


def _report(runs: int, medians: dict[str, float], trees: list[str], rows: list[str]) -> str:
    base = medians[STRUCTLOG]
    named = ", ".join(f"`{t}`" for t in trees[1:])
    head = " | ".join(f"{t} ms | × | own ms" for t in trees)
    lines = [
        f"Machine: {machine()}; {runs} runs each, interleaved; median wall-clock ms; "
        f"{_load()}. {named}: earlier trees, unpacked with `git archive` and run by the same "
        'Python in the same run. "own ms": above `import structlog`.',
        "",
        f"| command | {head} |",
        "| --- | " + " | ".join("---: | ---: | ---:" for _ in trees) + " |",
    ]
    for name in (n for n in medians if " @ " not in n):
        value = medians[name]
        blank = " |" * (3 * len(trees) - 2)
        lines.append(f"| {name} | {value * 1000:.1f} | {value / base:.2f} |{blank}")
    for row in rows:
        cells = []
        for tree in trees:
            value = medians[f"{row} @ {tree}"]
            cells.append(f"{value * 1000:.1f} | {value / base:.2f} | {(value - base) * 1000:+.1f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")

    def of(row: str, tree: str) -> float:
        return medians[f"{row} @ {tree}"]

    goals: list[tuple[str, Callable[[str], float], float, str]] = [
        ("warm run ≤ 1.07 × import structlog", lambda t: of(WARM, t) / base, 1.07, "×"),
        ("haproxy config ≤ 1.12 ×", lambda t: of(HAPROXY, t) / base, 1.12, "×"),
        (
            "cold jail adds ≤ 5 ms to warm",
            lambda t: (of(COLD_ROW, t) - of(WARM, t)) * 1000,
            5.0,
            "ms",
        ),
        ("`--init` with no jail ≤ 1.05 ×", lambda t: of(INIT, t) / base, 1.05, "×"),
        (
            "in-jail verification (warm − --no-verify) ≤ 4 ms",
            lambda t: (of(WARM, t) - of(NO_VERIFY, t)) * 1000,
            4.0,
            "ms",
        ),
    ]
    lines += [
        "",
        "| target | " + " | ".join(trees) + " | met |",
        "| --- | " + " | ".join("---" for _ in trees) + " | --- |",
    ]
    for label, value_of, limit, unit in goals:
        shown = [f"{value_of(t):.2f} ×" if unit == "×" else f"{value_of(t):+.1f} ms" for t in trees]
        met = "yes" if value_of(trees[0]) <= limit else "no"
        lines.append(f"| {label} | " + " | ".join(shown) + f" | {met} |")
    return "\n".join(lines)


def _load() -> str:
    """The load averages when the table was made: this machine is shared."""
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (5 min {five:.1f})"


if __name__ == "__main__":
    report = main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 30,
        tuple(sys.argv[2:]) or (PREVIOUS,),
    )
    print(report)
    write_section("Start latency", report)
