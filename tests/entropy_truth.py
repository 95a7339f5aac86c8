"""The measured truth of issue 23's entropy matrix: does a daemon's crypto library really reseed
in its jail? One cell = one library x getrandom() {allowed, ENOSYS, EPERM} x OpenSSL's shm
marker {absent, present} x the kernel release the library sees {real, 2.6} x the jail {no dev/,
prepared, only a kept fd}.

A cell runs tests/cdaemons/entropy_cell.c, built against that library, as a daemon lives: the
library is initialised and seeded before chroot, then the process chroots, drops to nobody and
(on SIGUSR1) makes the library go back to the system's entropy source. Around it, from the
outside in: ``unshare --ipc`` (a fresh IPC namespace, so the marker is exactly what the cell
says and dies with the process), tests/seccomp_run.py deny ERRNO (a filter on getrandom()),
``setarch --uname-2.6`` (the kernel release uname() reports). Each wrapper execs the next, so
the process started is the cell itself: one PID to signal, to kill and to give to
``jailshim doctor --pid``.

    python -m tests.entropy_truth [--trace] [--jobs N] [LIBRARY...]   print the table

The outcome of a cell: "start-fails" (the seed before chroot failed: the daemon would not
start), "reseed-fails" (it started; the reseed in the jail failed), "ok". ``trace_cell`` also
says which sources were read (strace), for diagnosis; the test does not trace.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from tests.support import NOBODY, TESTS, clean_env, jailshim_argv, unmount_below

__all__ = [
    "GETRANDOM",
    "JAILS",
    "KERNELS",
    "LIBRARIES",
    "MARKERS",
    "Built",
    "Cell",
    "LiveCell",
    "Missing",
    "Outcome",
    "all_cells",
    "build",
    "live_cell",
    "make_jails",
    "run_cell",
    "run_matrix",
    "start_live",
    "trace_cell",
]

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: the one python3-seccomp is built for
SOURCE = TESTS / "cdaemons" / "entropy_cell.c"
SECCOMP_RUN = str(TESTS / "seccomp_run.py")

GETRANDOM = ("allowed", "ENOSYS", "EPERM")
MARKERS = (False, True)
KERNELS = ("real", "2.6")
JAILS = ("no dev/", "prepared", "kept fd")
RESULTS = ("start-fails", "reseed-fails", "ok")


class Wheel(NamedTuple):
    """A PyPI wheel that vendors a libcrypto, and what to take out of it."""

    requirement: str
    platform: str
    python: str
    members: tuple[str, ...]  # file-name prefixes under the wheel's .libs directory


class Library(NamedTuple):
    api: str  # entropy_cell.c's -DAPI_...
    link: str  # the library's file name (-l:NAME), Debian's or the wheel's
    wheel: Wheel | None = None


# The wheels the suite already uses: psycopg2-binary 2.9.5 vendors OpenSSL 1.1.1r
# (tests/test_cryptolib.py); 2.8.3 (June 2019) vendors 1.1.1b, before wait_random_seeded()
# (1.1.1d), with the zlib its libcrypto needs.
LIBRARIES: dict[str, Library] = {
    "openssl-3": Library("API_OSSL3", "libcrypto.so.3"),
    "openssl-1.1.1r": Library(
        "API_OSSL11",
        "libcrypto-",
        Wheel("psycopg2-binary==2.9.5", "manylinux2014_x86_64", "3.11", ("libcrypto-",)),
    ),
    "openssl-1.1.1b": Library(
        "API_OSSL11",
        "libcrypto-",
        Wheel("psycopg2-binary==2.8.3", "manylinux1_x86_64", "3.7", ("libcrypto-", "libz-")),
    ),
    "gnutls": Library("API_GNUTLS", "libgnutls.so.30"),
    "libsodium": Library("API_SODIUM", "libsodium.so.23"),
}


class Missing(Exception):
    """Something a cell needs is not on this machine (the sentence says what)."""


@dataclass(frozen=True, order=True)
class Cell:
    library: str
    getrandom: str  # GETRANDOM
    marker: bool
    kernel: str  # KERNELS
    jail: str  # JAILS

    def __str__(self) -> str:
        marker = "marker" if self.marker else "no marker"
        kernel = f"kernel {self.kernel}"
        return f"{self.library}, getrandom {self.getrandom}, {marker}, {kernel}, {self.jail}"


@dataclass(frozen=True)
class Outcome:
    result: str  # RESULTS
    version: str  # the library's own version string
    start: str  # "ok" or "failed: WHY" (the seed before chroot)
    reseed: str  # "ok" or "failed: WHY" (in the jail, as nobody)
    kept_fds: int  # device fds to /dev/urandom or /dev/random open in the jail
    marker_now: bool  # shm key 114 in its IPC namespace once jailed (OpenSSL may make it)
    # trace_cell only: the sources read before chroot and in the jail ("getrandom",
    # "urandom", "random")
    seed_sources: tuple[str, ...] = ()
    jail_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Built:
    binaries: dict[str, Path]  # library key -> entropy_cell built against it
    missing: dict[str, str] = field(default_factory=dict)  # library key -> why not built


def all_cells(libraries: Iterable[str] = LIBRARIES) -> Iterator[Cell]:
    for library in libraries:
        for getrandom in GETRANDOM:
            for marker in MARKERS:
                for kernel in KERNELS:
                    for jail in JAILS:
                        yield Cell(library, getrandom, marker, kernel, jail)


# ---- building ------------------------------------------------------------------------------


def _wheel_libs(wheel: Wheel, into: Path) -> None:
    """Take ``wheel``'s vendored libraries out into ``into``, from the copy bootstrap
    downloaded (tests/wheels.py): a test never reaches the package index."""
    from tests import wheels

    assert wheels.WHEELS[wheel.requirement] == (wheel.platform, wheel.python), wheel
    path = wheels.cached(wheel.requirement)
    if path is None:
        raise Missing(wheels.missing(wheel.requirement))
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            parent, _, name = member.rpartition("/")
            if parent.endswith(".libs") and name.startswith(wheel.members):
                (into / name).write_bytes(z.read(member))


def _build_one(key: str, library: Library, top: Path) -> Path:
    where = top / key
    where.mkdir(mode=0o755)
    link = library.link
    if library.wheel is not None:
        _wheel_libs(library.wheel, where)
        (lib,) = where.glob(f"{library.link}*")
        link = lib.name
    binary = where / "entropy_cell"
    # DT_RPATH (not RUNPATH) $ORIGIN: a wheel's libcrypto finds its own libz next to it
    cc = subprocess.run(
        ["gcc", "-O1", "-Wall", "-Wextra", "-Werror", f"-D{library.api}", "-o", str(binary),
         str(SOURCE), f"-L{where}", f"-l:{link}", f"-Wl,-rpath-link,{where}",
         "-Wl,--disable-new-dtags,-rpath,$ORIGIN"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if cc.returncode != 0:
        raise Missing(f"{key}: gcc against {link} failed: {cc.stderr[-400:]}")
    return binary


def build(top: Path, libraries: Iterable[str] = LIBRARIES, jobs: int = 2) -> Built:
    """entropy_cell built against each library, under ``top`` (one directory each). A library
    that cannot be had (no network for a wheel, a package not installed) is in ``missing``."""
    if shutil.which("gcc") is None:
        raise Missing("needs gcc (Debian package gcc)")
    top.mkdir(mode=0o755, exist_ok=True)
    top.chmod(0o755)
    binaries: dict[str, Path] = {}
    missing: dict[str, str] = {}
    keys = list(libraries)
    with ThreadPoolExecutor(jobs) as pool:
        futures = {key: pool.submit(_build_one, key, LIBRARIES[key], top) for key in keys}
        for key, future in futures.items():
            try:
                binaries[key] = future.result()
            except Missing as exc:
                missing[key] = str(exc)
    return Built(binaries, missing)


@dataclass(frozen=True)
class Jails:
    empty: Path  # root-owned, 0755, nothing in it
    prepared: Path  # the same after `jailshim prepare`


def make_jails(top: Path) -> Jails:
    """The two jails every cell shares (the cells only read them). Remove with
    ``remove_jails``: prepare may mount (a tmpfs where the filesystem is nodev)."""
    top.mkdir(mode=0o755, exist_ok=True)
    top.chmod(0o755)
    jails = Jails(top / "empty", top / "prepared")
    for path in (jails.empty, jails.prepared):
        path.mkdir(mode=0o755)
    prepared = subprocess.run(
        jailshim_argv("prepare", "--chroot", str(jails.prepared), "--no-verify"),
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    if prepared.returncode != 0:
        remove_jails(top)
        raise Missing(f"jailshim prepare failed ({prepared.returncode}): {prepared.stderr}")
    return jails


def remove_jails(top: Path) -> None:
    unmount_below(top)
    shutil.rmtree(top, ignore_errors=True)


# ---- running a cell ------------------------------------------------------------------------


def cell_argv(
    cell: Cell,
    built: Built,
    jails: Jails,
    mode: str,
    *,
    trace: Path | None = None,
    drbg_first: bool = False,
) -> list[str]:
    """The cell's command line; ``drbg_first``: see entropy_cell.c (OpenSSL only)."""
    argv = ["unshare", "--ipc"]
    if cell.getrandom != "allowed":
        argv += [SYSTEM_PYTHON, SECCOMP_RUN, "deny", cell.getrandom, "--"]
    if cell.kernel == "2.6":
        argv += ["setarch", "--uname-2.6"]
    if trace is not None:
        argv += ["strace", "-f", "-qq", "-yy", "-o", str(trace),
                 "-e", "trace=chroot,getrandom,openat,read,shmget"]  # fmt: skip
    jail = jails.prepared if cell.jail == "prepared" else jails.empty
    close = "0" if cell.jail == "kept fd" else "1"
    order = ["drbg-first"] if drbg_first else []
    return [*argv, str(built.binaries[cell.library]), str(jail), str(NOBODY), str(NOBODY),
            str(int(cell.marker)), close, mode, *order]  # fmt: skip


class LiveCell:
    """A cell's process: seeded, chrooted, running as nobody, waiting for SIGUSR1 (reseed)
    or SIGTERM. ``pid`` is the process itself (every wrapper exec'd into it)."""

    def __init__(self, cell: Cell, argv: list[str], timeout: float) -> None:
        self.cell = cell
        self.timeout = timeout
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buffer = b""
        try:
            self.version = self._expect("library ")
            self.start = self._expect("start ")
            kept, marker = self._expect("jailed kept=").split(" marker=")
            self.kept_fds, self.marker_now = int(kept), marker == "1"
        except BaseException:
            self.stop()
            raise

    def _line(self) -> str:
        """The next line (read from the fd: a buffered reader would hide a second line)."""
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._fd], [], [], self.timeout)
            chunk = os.read(self._fd, 4096) if ready else b""
            if not chunk:
                raise RuntimeError(f"{self.cell}: no output ({self.stop() or 'timed out'})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def _expect(self, prefix: str) -> str:
        line = self._line()
        if not line.startswith(prefix):
            raise RuntimeError(f"{self.cell}: expected {prefix!r}, got {line!r}")
        return line.removeprefix(prefix)

    def reseed(self) -> str:
        """Make the library reseed in the jail now: "ok" or "failed: WHY"."""
        os.kill(self.pid, signal.SIGUSR1)
        return self._expect("reseed ")

    def outcome(self) -> Outcome:
        reseed = self.reseed()
        result = "start-fails" if self.start != "ok" else "reseed-fails" if reseed != "ok" else "ok"
        return Outcome(result, self.version, self.start, reseed, self.kept_fds, self.marker_now)

    def stop(self) -> str:
        """End the process (TERM, then KILL), by its PID; its stderr. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        except ValueError:  # already communicated
            err = b""
        return (err or b"").decode(errors="replace").strip()


def start_live(
    cell: Cell, built: Built, jails: Jails, timeout: float = 30.0, drbg_first: bool = False
) -> LiveCell:
    """Leave a live process of ``cell`` running (for `jailshim doctor --pid`): returns once it
    is seeded, jailed and waiting; ``.pid`` is its PID, ``.stop()`` the clean-up (its IPC
    namespace, and with it the marker, ends with it)."""
    argv = cell_argv(cell, built, jails, "wait", drbg_first=drbg_first)
    return LiveCell(cell, argv, timeout)


@contextmanager
def live_cell(
    cell: Cell, built: Built, jails: Jails, timeout: float = 30.0, drbg_first: bool = False
) -> Iterator[LiveCell]:
    live = start_live(cell, built, jails, timeout, drbg_first)
    try:
        yield live
    finally:
        live.stop()


def run_cell(
    cell: Cell, built: Built, jails: Jails, timeout: float = 30.0, drbg_first: bool = False
) -> Outcome:
    """The truth of one cell: a live process of it, made to reseed once, then ended."""
    with live_cell(cell, built, jails, timeout, drbg_first) as live:
        return live.outcome()


_TRACED = re.compile(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
_DEVICE = re.compile(r"<char 1:(8|9)>")


def _sources(lines: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Successful getrandom() calls and reads of a random device, before and after chroot."""
    before: list[str] = []
    after: list[str] = []
    where = before
    for line in lines:
        found = _TRACED.match(line)
        if not found:
            continue
        call, args, ret = found.group(1), found.group(2), int(found.group(3))
        if call == "chroot" and ret == 0:
            where = after
        elif call == "getrandom" and ret > 0:
            source = "getrandom"
        elif call == "read" and ret > 0 and (device := _DEVICE.search(args.split(",", 1)[0])):
            source = "random" if device.group(1) == "8" else "urandom"
        else:
            continue
        if call != "chroot" and source not in where:
            where.append(source)
    return tuple(before), tuple(after)


def trace_cell(cell: Cell, built: Built, jails: Jails, timeout: float = 60.0) -> Outcome:
    """``run_cell`` under strace (once, not live): also which sources were read. Diagnosis
    only: strace changes timing, and the filter applies to strace too (it uses no getrandom)."""
    if shutil.which("strace") is None:
        raise Missing("needs strace")
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp, "trace")
        argv = cell_argv(cell, built, jails, "once", trace=trace)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        lines = dict(
            line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line
        )  # {"library": ..., "start": ..., "jailed": "kept=N", "reseed": ...}
        if "reseed" not in lines:
            raise RuntimeError(f"{cell}: {proc.stdout!r} {proc.stderr!r}")
        seed, jail = _sources(trace.read_text().splitlines())
    start, reseed = lines["start"], lines["reseed"]
    result = "start-fails" if start != "ok" else "reseed-fails" if reseed != "ok" else "ok"
    kept, marker = lines["jailed"].removeprefix("kept=").split(" marker=")
    return Outcome(result, lines["library"], start, reseed, int(kept), marker == "1", seed, jail)


def run_matrix(
    cells: Iterable[Cell], built: Built, jails: Jails, jobs: int = 2, trace: bool = False
) -> dict[Cell, Outcome]:
    """Every cell, ``jobs`` at a time (each is a process of its own; threads only wait)."""
    run = trace_cell if trace else run_cell
    todo = list(cells)
    with ThreadPoolExecutor(jobs) as pool:
        return dict(zip(todo, pool.map(lambda c: run(c, built, jails), todo), strict=True))


# ---- the table, for people -----------------------------------------------------------------


def table(outcomes: dict[Cell, Outcome], sources: bool = False) -> str:
    """One row per library x getrandom x marker x kernel, one column per jail (markdown)."""
    rows = [
        "| library | getrandom | marker | kernel | " + " | ".join(JAILS) + " |",
        "|---|---|---|---|" + "---|" * len(JAILS),
    ]
    keys = sorted({replace(c, jail="") for c in outcomes}, key=_row_order)
    for key in keys:
        cols = []
        for jail in JAILS:
            outcome = outcomes.get(replace(key, jail=jail))
            text = outcome.result if outcome else "-"
            if outcome and sources:
                seed = "+".join(outcome.seed_sources) or "none"
                inside = "+".join(outcome.jail_sources) or "none"
                text += f" ({seed} / {inside}, kept={outcome.kept_fds})"
            cols.append(text)
        marker = "present" if key.marker else "absent"
        rows.append(
            f"| {key.library} | {key.getrandom} | {marker} | {key.kernel} | "
            + " | ".join(cols)
            + " |"
        )
    return "\n".join(rows)


def _row_order(cell: Cell) -> tuple[int, int, bool, int]:
    return (
        list(LIBRARIES).index(cell.library),
        GETRANDOM.index(cell.getrandom),
        cell.marker,
        KERNELS.index(cell.kernel),
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.entropy_truth", description=__doc__)
    parser.add_argument("libraries", nargs="*", default=list(LIBRARIES))
    parser.add_argument("--trace", action="store_true", help="also the sources read (strace)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    top = Path(tempfile.mkdtemp(prefix="entropy-truth-"))
    try:
        built = build(top / "build", args.libraries, args.jobs)
        for key, why in built.missing.items():
            print(f"{key}: not measured: {why}", file=sys.stderr)
        jails = make_jails(top / "jails")
        cells = [c for c in all_cells(args.libraries) if c.library in built.binaries]
        outcomes = run_matrix(cells, built, jails, args.jobs, args.trace)
        versions = sorted({(c.library, o.version) for c, o in outcomes.items()})
        for key, version in versions:
            print(f"{key}: {version}")
        print(table(outcomes, sources=args.trace))
    finally:
        remove_jails(top)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
