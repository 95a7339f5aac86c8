"""Start latency of jailshim against its baselines, in the same run (medians, ratios).

sudo .venv/bin/python -m bench.startup [RUNS]    (default 30; needs root: mknod, chroot)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import PYTHON, interleaved, machine, precompile, write_section

SEED_RECIPE = (  # the seed story's shell entrypoint: mknod if missing, read 16 bytes, exec
    'd="$1/dev"; [ -c "$d/urandom" ] || { mkdir -p "$d"; mknod "$d/urandom" c 1 9; '
    'chmod 0666 "$d/urandom"; }; head -c 16 "$d/urandom" > /dev/null; exec /bin/true'
)


def main(runs: int) -> str:
    precompile()
    work = Path(tempfile.mkdtemp(prefix="jailshim-bench-"))
    work.chmod(0o755)
    warm, cold, hp_jail = work / "warm", work / "cold", work / "hp"
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

    def fresh_cold() -> None:
        shutil.rmtree(cold, ignore_errors=True)
        cold.mkdir(mode=0o755)

    commands = {
        "/bin/true": (["/bin/true"], None),
        "shell entrypoint (seed recipe)": (["sh", "-c", SEED_RECIPE, "sh", str(warm)], None),
        "python -c pass": ([PYTHON, "-c", "pass"], None),
        "python -c 'import structlog'": ([PYTHON, "-c", "import structlog"], None),
        "jailshim run, warm jail": (
            [*js, "run", "--chroot", str(warm), *quiet, "--", "/bin/true"],
            None,
        ),
        "jailshim run, cold jail": (
            [*js, "run", "--chroot", str(cold), *quiet, "--", "/bin/true"],
            fresh_cold,
        ),
        "jailshim run, haproxy config": (
            [
                *js,
                "run",
                "--haproxy-config",
                str(cfg),
                "--no-config-check",
                *quiet,
                "--",
                "/bin/true",
            ],
            None,
        ),
        "jailshim run --no-verify, warm": (
            [*js, "run", "--chroot", str(warm), "--no-verify", *quiet, "--", "/bin/true"],
            None,
        ),
    }
    try:
        medians = interleaved(commands, runs)
    finally:
        subprocess.run([*js, "teardown", "--chroot", str(cold), *quiet], check=False)
        shutil.rmtree(work, ignore_errors=True)
    base = medians["python -c 'import structlog'"]
    lines = [
        f"Machine: {machine()}; {runs} runs each, interleaved; median wall-clock ms.",
        "",
        "| command | median ms | × import structlog |",
        "| --- | ---: | ---: |",
    ]
    for name, value in medians.items():
        lines.append(f"| {name} | {value * 1000:.1f} | {value / base:.2f} |")
    warm_run = medians["jailshim run, warm jail"]
    lines += [
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        f"| warm run ≤ 1.15 × import structlog | {warm_run / base:.2f} × | {'yes' if warm_run / base <= 1.15 else 'no'} |",
        f"| haproxy config ≤ 1.25 × | {medians['jailshim run, haproxy config'] / base:.2f} × | "
        f"{'yes' if medians['jailshim run, haproxy config'] / base <= 1.25 else 'no'} |",
        f"| cold adds ≤ 10 ms to warm | +{(medians['jailshim run, cold jail'] - warm_run) * 1000:.1f} ms | "
        f"{'yes' if medians['jailshim run, cold jail'] - warm_run <= 0.010 else 'no'} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    report = main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
    print(report)
    write_section("Start latency", report)
