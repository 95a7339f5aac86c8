"""How long `run --init` takes to stop: from COMMAND's exit to jailshim's, with a daemonised
grandchild left behind that obeys or ignores SIGTERM, for --grace 1 and the default (10 s).

.venv/bin/python -m bench.init_stop [RUNS]     (default 3; needs root: PID namespace, jail)
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import PYTHON, REPO, machine, precompile, write_section

TREE = str(REPO / "tests" / "init_tree.py")


def _stop_seconds(jail: Path, out: Path, mode: str, grace: list[str]) -> float:
    """Seconds from COMMAND's exit (its own monotonic stamp) to jailshim's, as PID 1."""
    out.write_text("")
    argv = [
        *("unshare", "--pid", "--fork", "--mount-proc"),
        *(PYTHON, "-m", "jailshim", "run", "--init", *grace, "--chroot", str(jail)),
        *("--no-verify", "--log-level", "error", "--", PYTHON, TREE, str(out), mode),
    ]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ended = time.monotonic()
    stamps = dict(line.split(" ", 1) for line in out.read_text().splitlines() if " " in line)
    return ended - float(stamps["exiting"])


def main(runs: int) -> str:
    precompile()
    scratch = Path(tempfile.mkdtemp(prefix="jailshim-bench-"))
    jail = scratch / "jail"
    jail.mkdir(mode=0o755)
    scratch.chmod(0o755)
    rows = []
    try:
        for label, grace in (("--grace 1", ["--grace", "1"]), ("default (10 s)", [])):
            for mode in ("obey", "ignore"):
                times = [_stop_seconds(jail, scratch / "out", mode, grace) for _ in range(runs)]
                rows.append(
                    f"| {label} | grandchild {mode}s TERM | {statistics.median(times):.3f} | "
                    f"{max(times):.3f} |"
                )
    finally:
        subprocess.run(
            [PYTHON, "-m", "jailshim", "teardown", "--chroot", str(jail), "--log-level", "error"],
            check=False,
        )
        shutil.rmtree(scratch, ignore_errors=True)
    return "\n".join(
        [
            f"Machine: {machine()}; {runs} runs each; `unshare --pid --fork` (the supervisor is "
            "PID 1); tests/init_tree.py leaves a daemonised grandchild behind and exits 0.",
            "",
            "| grace | case | median s, COMMAND's exit to jailshim's | max s |",
            "| --- | --- | ---: | ---: |",
            *rows,
        ]
    )


if __name__ == "__main__":
    report = main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    print(report)
    write_section("--init stop sequence", report)
