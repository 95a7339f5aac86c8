"""Start latency of jailshim against its baselines and the previous release, in the same run
(medians, ratios, jailshim's own milliseconds above `import structlog`).

sudo .venv/bin/python -m bench.startup [RUNS [COMMIT]]    (default 30, 13a4f29; needs root)
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


def main(runs: int, previous: str = PREVIOUS) -> str:
    precompile()
    work = Path(tempfile.mkdtemp(prefix="jailshim-bench-"))
    work.chmod(0o755)
    trees = {"this tree": REPO, previous: _tree_of(previous, Path(tempfile.mkdtemp()))}
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
        "jailshim run, warm jail": ["run", "--chroot", str(warm), *quiet, "--", "/bin/true"],
        "jailshim run, cold jail": ["run", "--chroot", "COLD", *quiet, "--", "/bin/true"],
        "jailshim run, haproxy config": [
            "run", "--haproxy-config", str(cfg), "--no-config-check", *quiet, "--", "/bin/true",
        ],
        "jailshim run --no-verify, warm": [
            "run", "--chroot", str(warm), "--no-verify", *quiet, "--", "/bin/true",
        ],
        INIT: ["run", "--init", *quiet, "--", "/bin/true"],
    }  # fmt: skip
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
        shutil.rmtree(trees[previous], ignore_errors=True)
    base = medians[STRUCTLOG]
    lines = [
        f"Machine: {machine()}; {runs} runs each, interleaved; median wall-clock ms. "
        f"`{previous}` is the tree before issue 28, unpacked with `git archive` and run by the "
        'same Python in the same run. "own ms": above `import structlog`.',
        "",
        f"| command | ms | × import structlog | own ms | {previous} ms | × | own ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in baselines:
        value = medians[name]
        lines.append(f"| {name} | {value * 1000:.1f} | {value / base:.2f} | | | | |")
    cells: dict[str, dict[str, float]] = {}
    for row in rows:
        cells[row] = {tree: medians[f"{row} @ {tree}"] for tree in trees}
        now, then = cells[row]["this tree"], cells[row][previous]
        lines.append(
            f"| {row} | {now * 1000:.1f} | {now / base:.2f} | {(now - base) * 1000:+.1f} | "
            f"{then * 1000:.1f} | {then / base:.2f} | {(then - base) * 1000:+.1f} |"
        )

    def of(row: str, tree: str = "this tree") -> float:
        return cells[row][tree]

    verify = {
        t: of("jailshim run, warm jail", t) - of("jailshim run --no-verify, warm", t) for t in trees
    }
    cold_adds = {
        t: of("jailshim run, cold jail", t) - of("jailshim run, warm jail", t) for t in trees
    }
    targets = [
        ("warm run ≤ 1.07 × import structlog", of("jailshim run, warm jail") / base, 1.07, "×"),
        ("haproxy config ≤ 1.12 ×", of("jailshim run, haproxy config") / base, 1.12, "×"),
        ("cold jail adds ≤ 5 ms to warm", cold_adds["this tree"] * 1000, 5.0, "ms"),
        ("`--init` with no jail ≤ 1.05 ×", of(INIT) / base, 1.05, "×"),
        ("in-jail verification (warm − --no-verify) ≤ 4 ms", verify["this tree"] * 1000, 4.0, "ms"),
    ]
    lines += [
        "",
        f"| target | measured | {previous} | met |",
        "| --- | --- | --- | --- |",
    ]
    earlier = {
        targets[0][0]: f"{of('jailshim run, warm jail', previous) / base:.2f} ×",
        targets[1][0]: f"{of('jailshim run, haproxy config', previous) / base:.2f} ×",
        targets[2][0]: f"{cold_adds[previous] * 1000:+.1f} ms",
        targets[3][0]: f"{of(INIT, previous) / base:.2f} ×",
        targets[4][0]: f"{verify[previous] * 1000:.1f} ms",
    }
    for label, value, limit, unit in targets:
        shown = f"{value:.2f} ×" if unit == "×" else f"{value:+.1f} ms"
        lines.append(
            f"| {label} | {shown} | {earlier[label]} | {'yes' if value <= limit else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    report = main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 30,
        sys.argv[2] if len(sys.argv) > 2 else PREVIOUS,
    )
    print(report)
    write_section("Start latency", report)
