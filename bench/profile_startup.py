"""Where a `jailshim run`'s start-up goes: imports (`-X importtime`), a phase timer, the probe
child's own time. For docs/benchmarks.md ("Start-up profile").

sudo .venv/bin/python -m bench.profile_startup [RUNS]     (default 15; needs root)

Phases are timed in a fresh interpreter per run (`python -m bench.profile_startup --one ...`)
by wrapping jailshim's own functions; the hand-over's exec is replaced by a stop, so the last
phase ends where the daemon would start. The probe child writes its own times (CLOCK_MONOTONIC,
shared by both processes) to a pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import PYTHON, machine, precompile, write_section

# top-level modules whose cumulative import time is reported, in the order a run meets them
_SHOWN = (
    "jailshim.cli",
    "jailshim.log",
    "jailshim.run",
    "jailshim.daemons.haproxy",
    "jailshim.verify.network",
    "jailshim.files",
    "jailshim.plan",
    "jailshim.spec",
    "jailshim.verify.probe",  # run imports it to fork the probe (issue 28)
    "jailshim.ready",  # check, retry under it
    "jailshim.check",
    "jailshim.prepare",
    "jailshim.apply",
    "jailshim.init_options",
    "jailshim.handover",
    "ctypes",
    "jailshim.verify.openssl",  # first imported in the probe child (libfind, cryptolib)
    "jailshim.verify.entropy",  # first in the probe child, later the parent's verdict
)


def _importtime(argv: list[str]) -> dict[str, int]:
    """Cumulative µs of each top-level import of one `python -X importtime -m jailshim` run
    (the probe child's lines are among them: it inherits the flag and stderr)."""
    proc = subprocess.run(
        [PYTHON, "-X", "importtime", "-m", "jailshim", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    found: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if match and not match.group(2).startswith(" "):
            name = match.group(2)
            found[name] = found.get(name, 0) + int(match.group(1))
    return found


def _phases(argv: list[str]) -> dict[str, float]:
    proc = subprocess.run(
        [PYTHON, "-m", "bench.profile_startup", "--one", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(proc.stderr[-2000:])
    result: dict[str, float] = json.loads(lines[-1])
    return result


def _timed(owner: Any, name: str, record: Callable[[str, float, float], None], label: str) -> None:
    original = getattr(owner, name, None)
    if original is None:  # an older tree (run side by side) without this function
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            record(label, start, time.monotonic())

    setattr(owner, name, wrapper)


def one(argv: list[str]) -> None:
    """In this interpreter: one `jailshim ARGV` with its phases timed (ms from start)."""
    began = time.monotonic()
    marks: dict[str, float] = {}

    def record(label: str, start: float, end: float) -> None:
        marks[label] = marks.get(label, 0.0) + (end - start) * 1000

    at = time.monotonic()
    from jailshim import cli, log  # the front end: argparse, structlog

    marks["imports: cli, log (structlog)"] = (time.monotonic() - at) * 1000
    at = time.monotonic()
    from jailshim import daemons, handover, run, specs
    from jailshim import ready as ready_mod
    from jailshim.verify import probe

    marks["imports: run, check, probe"] = (time.monotonic() - at) * 1000

    _timed(cli, "parse_args", record, "parse")
    _timed(daemons, "plan_for", record, "config read (adapter chosen, imported, read)")
    _timed(specs, "build_spec", record, "spec (jail files, devices, identity)")
    _timed(ready_mod, "start_probe", record, "probe fork")  # `prepare`'s, and no early one
    _timed(probe, "start_probe", record, "probe fork")  # run's, as soon as the spec is known
    _timed(ready_mod, "check", record, "verify (wait for the probe, judge)")
    _timed(run, "vet_jail", record, "vet jail (config check)")
    child_out, child_in = os.pipe()
    child = probe._child

    def timed_child(*args: Any, **kwargs: Any) -> None:
        start = time.monotonic()
        try:
            child(*args, **kwargs)
        finally:
            os.write(child_in, json.dumps([start, time.monotonic()]).encode() + b"\n")

    probe._child = timed_child
    from jailshim.verify import needs

    before_chroot = needs.prepare_before_chroot

    def ready(*args: Any, **kwargs: Any) -> Any:  # the child's last step before it waits
        try:
            return before_chroot(*args, **kwargs)
        finally:
            os.write(child_in, json.dumps(["ready", time.monotonic()]).encode() + b"\n")

    needs.prepare_before_chroot = ready
    collect = probe.Probe.collect

    def go(self: probe.Probe) -> Any:
        marks["probe: go (the jail is ready)"] = (time.monotonic() - began) * 1000
        return collect(self)

    probe.Probe.collect = go  # type: ignore[method-assign]
    at_prepare: dict[str, float] = {}
    original_pv = ready_mod.prepare_and_verify

    def prepare_and_verify(*args: Any, **kwargs: Any) -> None:
        at_prepare["start"] = time.monotonic()
        forked = marks.get("probe fork", 0.0)  # run forks before this (issue 28), prepare in it
        original_pv(*args, **kwargs)
        at_prepare["end"] = time.monotonic()
        at_prepare["fork inside"] = marks.get("probe fork", 0.0) - forked

    ready_mod.prepare_and_verify = prepare_and_verify

    class _HandedOver(BaseException):  # past cli's `except Exception`
        pass

    def stop_here(*_: Any, **__: Any) -> None:
        marks["hand-over reached"] = (time.monotonic() - began) * 1000
        raise _HandedOver

    handover.exec_command = stop_here  # type: ignore[assignment]
    handover.supervise = stop_here  # type: ignore[assignment]
    with contextlib.suppress(_HandedOver):
        cli._main(argv, log)
    os.close(child_in)
    data = os.read(child_out, 4096)
    for line in data.splitlines():
        first, second = json.loads(line)
        if first == "ready":
            marks["probe child: ready to enter the jail"] = (second - began) * 1000
        else:
            marks["probe child: fork to exit"] = (second - first) * 1000
            marks["probe child: started after"] = (first - began) * 1000
    if at_prepare:
        total = (at_prepare["end"] - at_prepare["start"]) * 1000
        inner = at_prepare["fork inside"] + marks.get("verify (wait for the probe, judge)", 0.0)
        marks["prepare (imports, lock, mounts, nodes)"] = total - inner
    print(json.dumps(marks))


def main(runs: int) -> str:
    precompile()
    work = Path(tempfile.mkdtemp(prefix="jailshim-profile-"))
    work.chmod(0o755)
    warm, hp_jail = work / "warm", work / "hp"
    for d in (warm, hp_jail):
        d.mkdir(mode=0o755)
    quiet = ["--log-level", "error"]
    for jail in (warm, hp_jail):
        subprocess.run(
            [PYTHON, "-m", "jailshim", "prepare", "--chroot", str(jail), *quiet], check=True
        )
    cfg = work / "haproxy.cfg"
    cfg.write_text(
        f"global\n    chroot {hp_jail}\n    user nobody\n    group nogroup\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\nfrontend f\n    bind 127.0.0.1:18553\n"
        "    default_backend b\nbackend b\n    server s 127.0.0.1:9\n"
    )
    runs_of = {
        "warm run": ["run", "--chroot", str(warm), *quiet, "--", "/bin/true"],
        "haproxy config": [
            "run",
            "--haproxy-config",
            str(cfg),
            "--no-config-check",
            *quiet,
            "--",
            "/bin/true",
        ],
        "--init, no jail": ["run", "--init", *quiet, "--", "/bin/true"],
    }
    imports: dict[str, dict[str, list[int]]] = {name: {} for name in runs_of}
    phases: dict[str, dict[str, list[float]]] = {name: {} for name in runs_of}
    try:
        for _ in range(runs):
            for name, argv in runs_of.items():
                for module, micros in _importtime(argv).items():
                    imports[name].setdefault(module, []).append(micros)
                if name != "--init, no jail":  # cli._main: the full path's phases
                    for phase, ms in _phases(argv).items():
                        phases[name].setdefault(phase, []).append(ms)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"Machine: {machine()}; {runs} runs each; medians. Shared machine (other work running):",
        "read the proportions, not the absolute milliseconds.",
        "",
        "Imports (`python -X importtime -m jailshim …`, cumulative ms of each top-level import;",
        "openssl and entropy are first imported in the probe child, after the fork):",
        "",
        "| module | " + " | ".join(runs_of) + " |",
        "| --- | " + " | ".join("---:" for _ in runs_of) + " |",
    ]
    modules = [m for m in _SHOWN if any(m in imports[n] for n in runs_of)]
    for module in modules:
        cells = []
        for name in runs_of:
            values = imports[name].get(module)
            cells.append(f"{statistics.median(values) / 1000:.1f}" if values else "-")
        lines.append(f"| {module} | " + " | ".join(cells) + " |")
    totals = []
    for name in runs_of:
        per_run = [sum(v[i] for v in imports[name].values() if len(v) > i) for i in range(runs)]
        totals.append(f"{statistics.median(per_run) / 1000:.1f}")
    lines.append(
        "| every import (both processes, the interpreter's own) | " + " | ".join(totals) + " |"
    )
    lines += [
        "",
        "Phases of the full path (in-process timer around jailshim's own functions, ms):",
        "",
        "| phase | warm run | haproxy config |",
        "| --- | ---: | ---: |",
    ]
    order = [
        "imports: cli, log (structlog)",
        "imports: run, check, probe",
        "parse",
        "config read (adapter chosen, imported, read)",
        "spec (jail files, devices, identity)",
        "vet jail (config check)",
        "probe fork",
        "prepare (imports, lock, mounts, nodes)",
        "verify (wait for the probe, judge)",
        "hand-over reached",
        "probe child: started after",
        "probe child: ready to enter the jail",
        "probe: go (the jail is ready)",
        "probe child: fork to exit",
    ]
    for phase in order:
        cells = []
        for name in ("warm run", "haproxy config"):
            timed = phases[name].get(phase)
            cells.append(f"{statistics.median(timed):.1f}" if timed else "-")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- CPU time: the order of the work, which a loaded machine does not change -----------------


def cpu_one(argv: list[str]) -> None:
    """In this interpreter: one `jailshim ARGV` with the CPU time (ms, this process's since it
    started; the child's since its fork) at the probe fork, at "go", at the hand-over, and the
    child's at "ready to enter the jail". Only Probe and the hand-over are patched (no module
    of the run is imported early), so the fork happens where the run puts it, in any tree."""
    import importlib.abc
    import importlib.util
    from types import ModuleType

    from jailshim import cli, log

    marks: dict[str, float] = {}
    child_out, child_in = os.pipe()

    class _HandedOver(BaseException):
        pass

    def patch_probe(probe: ModuleType) -> None:
        init, collect = probe.Probe.__init__, probe.Probe.collect

        def forked(self: Any, *args: Any, **kwargs: Any) -> None:
            marks.setdefault("parent CPU at the probe fork", time.process_time() * 1000)
            init(self, *args, **kwargs)

        def go(self: Any) -> Any:
            marks.setdefault("parent CPU at go (the jail is ready)", time.process_time() * 1000)
            return collect(self)

        probe.Probe.__init__, probe.Probe.collect = forked, go

    def patch_needs(needs: ModuleType) -> None:
        before_chroot = needs.prepare_before_chroot

        def ready(*args: Any, **kwargs: Any) -> Any:
            try:
                return before_chroot(*args, **kwargs)
            finally:  # a forked child's CPU times start at zero
                os.write(child_in, f"{time.process_time() * 1000}\n".encode())

        setattr(needs, "prepare_before_chroot", ready)  # noqa: B010

    def patch_handover(handover: ModuleType) -> None:
        def stop_here(*_: Any, **__: Any) -> None:
            marks["parent CPU at the hand-over"] = time.process_time() * 1000
            raise _HandedOver

        setattr(handover, "exec_command", stop_here)  # noqa: B010 (a module's attribute)
        setattr(handover, "supervise", stop_here)  # noqa: B010

    hooks = {
        "jailshim.verify.probe": patch_probe,
        "jailshim.verify.needs": patch_needs,
        "jailshim.handover": patch_handover,
    }

    class _Patcher(importlib.abc.MetaPathFinder):
        """Patches each module above right after it is first imported, wherever the run
        imports it (importing it here first would move the fork in an older tree)."""

        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name not in hooks:
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            assert spec is not None and spec.loader is not None
            run_module = spec.loader.exec_module

            def exec_module(module: ModuleType) -> None:
                run_module(module)
                hooks[name](module)

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _Patcher())
    with contextlib.suppress(_HandedOver):
        cli._main(argv, log)
    os.close(child_in)
    said = os.read(child_out, 4096).split()
    if said:
        marks["child CPU from fork to ready"] = float(said[0])
    print(json.dumps(marks))


def cpu_main(runs: int, trees: dict[str, Path]) -> str:
    """CPU-time marks of a warm run and a haproxy-config run (with its checker), each tree
    (its jailshim run from its own directory) interleaved; medians."""
    work = Path(tempfile.mkdtemp(prefix="jailshim-cpu-"))
    work.chmod(0o755)
    jail, hp_jail = work / "warm", work / "hp"
    for d in (jail, hp_jail):
        d.mkdir(mode=0o755)
    quiet = ["--log-level", "error"]
    for d in (jail, hp_jail):
        subprocess.run(
            [PYTHON, "-m", "jailshim", "prepare", "--chroot", str(d), *quiet], check=True
        )
    cfg = work / "haproxy.cfg"
    cfg.write_text(
        f"global\n    chroot {hp_jail}\n    user nobody\n    group nogroup\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\nfrontend f\n    bind 127.0.0.1:18553\n"
        "    default_backend b\nbackend b\n    server s 127.0.0.1:9\n"
    )
    runs_of = {
        "warm run": ["run", "--chroot", str(jail), *quiet, "--", "/bin/true"],
        "haproxy config and its checker": [
            "run", "--haproxy-config", str(cfg), *quiet, "--", "/bin/true",
        ],
    }  # fmt: skip
    here = Path(__file__).resolve().parent
    marks: dict[tuple[str, str], dict[str, list[float]]] = {}
    try:
        for _ in range(runs):
            for tree, path in trees.items():
                for name, argv in runs_of.items():
                    proc = subprocess.run(
                        [PYTHON, "-c", _CPU_ONE, str(here.parent), *argv],
                        capture_output=True, text=True, check=False, cwd=path,
                        env={**os.environ, "PYTHONPATH": str(path)},
                    )  # fmt: skip
                    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
                    if not lines:
                        raise RuntimeError(proc.stderr[-2000:])
                    for mark, ms in json.loads(lines[-1]).items():
                        marks.setdefault((tree, name), {}).setdefault(mark, []).append(ms)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    order = [
        "parent CPU at the probe fork",
        "child CPU from fork to ready",
        "parent CPU at go (the jail is ready)",
        "parent CPU at the hand-over",
    ]
    columns = [(t, n) for n in runs_of for t in trees]
    lines = [
        f"Machine: {machine()}; {runs} runs each, interleaved; median CPU ms (time.process_time:"
        " the process's own, from its start; the child's from its fork); load "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "| mark | " + " | ".join(f"{n}, {t}" for t, n in columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for mark in order:
        cells = []
        for column in columns:
            values = marks.get(column, {}).get(mark)
            cells.append(f"{statistics.median(values):.1f}" if values else "-")
        lines.append(f"| {mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# run in the tree's own directory, with this bench's cpu_one (the tree may have none)
_CPU_ONE = (
    "import sys; sys.path.append(sys.argv[1]); from bench.profile_startup import cpu_one; "
    "cpu_one(sys.argv[2:])"
)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        one(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--cpu-one":
        cpu_one(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--cpu":  # --cpu RUNS [NAME=TREE_DIR ...]
        precompile()
        others = dict(arg.split("=", 1) for arg in sys.argv[3:])
        trees = {"this tree": Path.cwd(), **{k: Path(v) for k, v in others.items()}}
        print(cpu_main(int(sys.argv[2]), trees))
    else:
        report = main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
        print(report)
        write_section("Start-up profile", report)
