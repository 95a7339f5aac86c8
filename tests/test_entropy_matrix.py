"""Issue 23's matrix, measured: does each crypto library really reseed in its jail, as nobody,
after seeding before chroot as a daemon does? Every cell (tests/entropy_truth.py) against the
table below, written down from a measurement on Debian 12 (kernel 6.x): a library upgrade that
changes behaviour fails here loudly, and docs/entropy-matrix.md explains each row. The verdict
jailshim gives for a cell must agree with the measured outcome (``compare_with_verdict``)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests import entropy_truth as truth
from tests.entropy_truth import Built, Cell, Jails, LiveCell, Outcome
from tests.support import NOBODY, need

# The versions measured; another version may behave otherwise, so it fails here first.
VERSIONS = {
    "openssl-3": "OpenSSL 3.0.",
    "openssl-1.1.1r": "OpenSSL 1.1.1r ",
    "openssl-1.1.1b": "OpenSSL 1.1.1b ",
    "gnutls": "GnuTLS 3.7.",
    "libsodium": "libsodium 1.0.18",
}

# What each cell measured: start-fails (the seed before chroot failed), reseed-fails (it
# started; the reseed in the jail failed), ok. "no dev/": an empty jail, the library's kept
# device fds closed after chroot; "prepared": `jailshim prepare`d, fds closed likewise;
# "kept fd": an empty jail, the fds the library opened before chroot still open.
EXPECTED_TABLE = """
library         getrandom marker  kernel no-dev/       prepared      kept-fd
openssl-3       allowed   absent  real   ok            ok            ok
openssl-3       allowed   absent  2.6    ok            ok            ok
openssl-3       allowed   present real   ok            ok            ok
openssl-3       allowed   present 2.6    ok            ok            ok
openssl-3       ENOSYS    absent  real   start-fails   start-fails   start-fails
openssl-3       ENOSYS    absent  2.6    reseed-fails  ok            ok
openssl-3       ENOSYS    present real   reseed-fails  ok            ok
openssl-3       ENOSYS    present 2.6    reseed-fails  ok            ok
openssl-3       EPERM     absent  real   start-fails   start-fails   start-fails
openssl-3       EPERM     absent  2.6    reseed-fails  ok            ok
openssl-3       EPERM     present real   reseed-fails  ok            ok
openssl-3       EPERM     present 2.6    reseed-fails  ok            ok
openssl-1.1.1r  allowed   absent  real   ok            ok            ok
openssl-1.1.1r  allowed   absent  2.6    ok            ok            ok
openssl-1.1.1r  allowed   present real   ok            ok            ok
openssl-1.1.1r  allowed   present 2.6    ok            ok            ok
openssl-1.1.1r  ENOSYS    absent  real   start-fails   start-fails   start-fails
openssl-1.1.1r  ENOSYS    absent  2.6    reseed-fails  ok            ok
openssl-1.1.1r  ENOSYS    present real   reseed-fails  ok            ok
openssl-1.1.1r  ENOSYS    present 2.6    reseed-fails  ok            ok
openssl-1.1.1r  EPERM     absent  real   start-fails   start-fails   start-fails
openssl-1.1.1r  EPERM     absent  2.6    reseed-fails  ok            ok
openssl-1.1.1r  EPERM     present real   reseed-fails  ok            ok
openssl-1.1.1r  EPERM     present 2.6    reseed-fails  ok            ok
openssl-1.1.1b  allowed   absent  real   ok            ok            ok
openssl-1.1.1b  allowed   absent  2.6    ok            ok            ok
openssl-1.1.1b  allowed   present real   ok            ok            ok
openssl-1.1.1b  allowed   present 2.6    ok            ok            ok
openssl-1.1.1b  ENOSYS    absent  real   reseed-fails  ok            ok
openssl-1.1.1b  ENOSYS    absent  2.6    reseed-fails  ok            ok
openssl-1.1.1b  ENOSYS    present real   reseed-fails  ok            ok
openssl-1.1.1b  ENOSYS    present 2.6    reseed-fails  ok            ok
openssl-1.1.1b  EPERM     absent  real   reseed-fails  ok            ok
openssl-1.1.1b  EPERM     absent  2.6    reseed-fails  ok            ok
openssl-1.1.1b  EPERM     present real   reseed-fails  ok            ok
openssl-1.1.1b  EPERM     present 2.6    reseed-fails  ok            ok
gnutls          allowed   absent  real   ok            ok            ok
gnutls          allowed   absent  2.6    ok            ok            ok
gnutls          allowed   present real   ok            ok            ok
gnutls          allowed   present 2.6    ok            ok            ok
gnutls          ENOSYS    absent  real   reseed-fails  ok            reseed-fails
gnutls          ENOSYS    absent  2.6    reseed-fails  ok            reseed-fails
gnutls          ENOSYS    present real   reseed-fails  ok            reseed-fails
gnutls          ENOSYS    present 2.6    reseed-fails  ok            reseed-fails
gnutls          EPERM     absent  real   reseed-fails  ok            reseed-fails
gnutls          EPERM     absent  2.6    reseed-fails  ok            reseed-fails
gnutls          EPERM     present real   reseed-fails  ok            reseed-fails
gnutls          EPERM     present 2.6    reseed-fails  ok            reseed-fails
libsodium       allowed   absent  real   ok            ok            ok
libsodium       allowed   absent  2.6    ok            ok            ok
libsodium       allowed   present real   ok            ok            ok
libsodium       allowed   present 2.6    ok            ok            ok
libsodium       ENOSYS    absent  real   reseed-fails  ok            ok
libsodium       ENOSYS    absent  2.6    reseed-fails  ok            ok
libsodium       ENOSYS    present real   reseed-fails  ok            ok
libsodium       ENOSYS    present 2.6    reseed-fails  ok            ok
libsodium       EPERM     absent  real   reseed-fails  ok            ok
libsodium       EPERM     absent  2.6    reseed-fails  ok            ok
libsodium       EPERM     present real   reseed-fails  ok            ok
libsodium       EPERM     present 2.6    reseed-fails  ok            ok
"""


def _parse(text: str) -> dict[Cell, str]:
    table: dict[Cell, str] = {}
    header, *rows = text.strip().splitlines()
    assert header.split()[4:] == [j.replace(" ", "-") for j in truth.JAILS]
    for row in rows:
        library, getrandom, marker, kernel, *results = row.split()
        assert marker in ("absent", "present") and len(results) == len(truth.JAILS), row
        for jail, result in zip(truth.JAILS, results, strict=True):
            assert result in truth.RESULTS, row
            table[Cell(library, getrandom, marker == "present", kernel, jail)] = result
    return table


EXPECTED = _parse(EXPECTED_TABLE)


# ---- the verdict, held to the truth --------------------------------------------------------

FAMILY = {"gnutls": "GnuTLS", "libsodium": "libsodium"}  # the rest: "OpenSSL"


def _real_kernel() -> tuple[int, int]:
    major, minor, *_ = os.uname().release.split(".")
    return int(major), int(minor)


def compare_with_verdict(cell: Cell, outcome: Outcome) -> list[str]:
    """Where jailshim's verdict for ``cell`` disagrees with what it measured (empty: agrees).

    Until jailshim.verify.verdict is in this tree: the table above. With it, ``decide`` is
    asked twice: as `check` (before the daemon starts: the facts of the cell, kept fds not
    yet known) and as `doctor` (the live process: the device fds it kept and the marker as
    its namespace has it once jailed, which OpenSSL may have created). A verdict agrees when
    "safe" meets ok, "will fail" meets a failure (at start: start-fails, for check) and
    "safe now, fragile" meets ok (doctor) or either (check: it rests on whether the daemon
    will keep the fd, which nothing before the start can know), but only where the cell's
    "kept fd" twin measured ok: a library a kept fd does not carry is not fragile, it fails."""
    try:
        verdict: Any = importlib.import_module("jailshim.verify.verdict")
    except ModuleNotFoundError:
        expected = EXPECTED[cell]
        if outcome.result == expected:
            return []
        return [f"{cell}: the table says {expected}, measured {outcome.result}"]
    family = FAMILY.get(cell.library, "OpenSSL")
    facts = verdict.EntropyFacts(
        library=verdict.library_of(family, outcome.version),
        getrandom=(
            verdict.Getrandom.WORKS
            if cell.getrandom == "allowed"
            else verdict.Getrandom(cell.getrandom)
        ),
        kernel=(2, 6) if cell.kernel == "2.6" else _real_kernel(),
        marker=cell.marker,
        kept_fd=None,
        nodes=cell.jail == "prepared",
        running=False,
    )
    views = {
        "check": facts,
        "doctor": facts._replace(
            kept_fd=outcome.kept_fds > 0, marker=outcome.marker_now, running=True
        ),
    }
    problems = []
    for view, asked in views.items():
        decision = verdict.decide(asked)
        if outcome.result not in fitting(cell, view, str(decision.verdict), decision.when):
            problems.append(
                f"{cell}: {view} says {decision.verdict} {decision.when} ({decision.why}; "
                f"remedy: {decision.remedy}), measured {outcome.result}"
            )
    return problems


def fitting(cell: Cell, view: str, said: str, when: str) -> set[str]:
    """The measured outcomes a verdict (``said``: "safe", "safe now, fragile", "will fail",
    "cannot tell"; ``when``: "at start", ...) agrees with, as `check` or `doctor` says it."""
    if said == "safe":
        return {"ok"}
    if said == "safe now, fragile":
        # "safe while it keeps the fd": true only if a kept fd really carries it
        carried = EXPECTED[replace(cell, jail="kept fd")] == "ok"
        return {"ok"} if view == "doctor" else {"ok", "reseed-fails"} if carried else set()
    if said == "will fail":
        at_start = view == "check" and when == "at start"
        return {"start-fails"} if at_start else {"reseed-fails", "start-fails"}
    return set()  # every fact is known here: "cannot tell" is wrong


# ---- running the cells ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Built, Jails]]:
    """entropy_cell built against every library, and the two jails, removed afterwards."""
    need(os.geteuid() == 0, "needs root: chroot, privilege drop, unshare --ipc")
    for tool in ("gcc", "unshare", "setarch"):
        need(shutil.which(tool) is not None, f"needs {tool}")
    seccomp = subprocess.run(
        [truth.SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, check=False
    )
    need(seccomp.returncode == 0, "needs Debian's python3-seccomp")
    top = tmp_path_factory.mktemp("entropy-matrix")
    try:
        built = truth.build(top / "build")
    except truth.Missing as exc:
        need(False, str(exc))
        raise
    for key, why in built.missing.items():
        need(False, f"{key} cannot be measured here: {why}")
    jails = truth.make_jails(top / "jails")
    try:
        yield built, jails
    finally:
        truth.remove_jails(top / "jails")


@pytest.fixture(scope="module")
def outcomes(matrix: tuple[Built, Jails]) -> dict[Cell, Outcome]:
    built, jails = matrix
    return truth.run_matrix(truth.all_cells(), built, jails, jobs=2)


def test_libraries_are_the_versions_measured(outcomes: dict[Cell, Outcome]) -> None:
    seen = {(cell.library, outcome.version) for cell, outcome in outcomes.items()}
    for library, version in seen:
        assert version.startswith(VERSIONS[library]), (library, version)
    assert {library for library, _ in seen} == set(truth.LIBRARIES)


def test_every_cell_is_as_measured(outcomes: dict[Cell, Outcome]) -> None:
    """The whole table at once, so a behaviour change shows every cell it moved."""
    assert set(outcomes) == set(EXPECTED)
    moved = [
        f"{cell}: expected {EXPECTED[cell]}, measured {o.result} (start {o.start}; reseed "
        f"{o.reseed}; kept fds {o.kept_fds})"
        for cell, o in sorted(outcomes.items())
        if o.result != EXPECTED[cell]
    ]
    assert not moved, "\n".join(moved)


def test_what_the_cells_kept_and_marked(outcomes: dict[Cell, Outcome]) -> None:
    """The facts doctor would read from the live process: a device fd only where the library
    read the device before chroot and kept it (never GnuTLS 3.7: it opens the device for each
    read); the marker also where OpenSSL >= 1.1.1d made it itself on a kernel it takes for
    older than 4.8 (wait_random_seeded())."""
    for cell, outcome in outcomes.items():
        denied = cell.getrandom != "allowed"
        opens_device = denied and (
            cell.library in ("openssl-1.1.1b", "libsodium", "gnutls")
            or cell.marker
            or cell.kernel == "2.6"
        )
        keeps = opens_device and cell.jail == "kept fd" and cell.library != "gnutls"
        assert outcome.kept_fds == int(keeps), (cell, outcome)
        makes_marker = (
            denied
            and cell.kernel == "2.6"
            and cell.library
            in (
                "openssl-3",
                "openssl-1.1.1r",
            )
        )
        assert outcome.marker_now == (cell.marker or makes_marker), (cell, outcome)


def test_verdict_agrees_with_every_cell(outcomes: dict[Cell, Outcome]) -> None:
    problems = [p for cell, o in sorted(outcomes.items()) for p in compare_with_verdict(cell, o)]
    assert not problems, "\n".join(problems)


def test_openssl_forgets_a_device_fd_opened_before_its_rand_init(
    matrix: tuple[Built, Jails],
) -> None:
    """A device fd in /proc/PID/fd is not proof that OpenSSL reads it. Seeded through
    RAND_get0_primary / RAND_DRBG_get0_master before any RAND_bytes, OpenSSL 3.0 and 1.1.1b
    open /dev/urandom, then their RAND init (ossl_rand_pool_init / rand_pool_init) sets the
    fd to -1 without closing it: the fd stays open, and the reseed in the jail opens the
    device again and fails. 1.1.1r keeps using it. The daemon's order (RAND_bytes first) is
    the matrix's "kept fd" column, where all three pass."""
    built, jails = matrix
    forgets = {"openssl-3": "reseed-fails", "openssl-1.1.1b": "reseed-fails"}
    for library in ("openssl-3", "openssl-1.1.1r", "openssl-1.1.1b"):
        cell = Cell(library, "ENOSYS", True, "real", "kept fd")
        outcome = truth.run_cell(cell, built, jails, drbg_first=True)
        assert outcome.kept_fds == 1, outcome
        assert outcome.result == forgets.get(library, "ok"), (cell, outcome)
        assert EXPECTED[cell] == "ok"


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_a_live_cell_is_the_daemon_doctor_would_see_and_is_cleaned_up(
    matrix: tuple[Built, Jails],
) -> None:
    """start_live leaves the cell's own process: chrooted, nobody, in an IPC namespace of its
    own, under the seccomp filter, seeing kernel 2.6; it reseeds on demand as often as asked;
    stop() ends it and with it the namespace (and the marker)."""
    built, jails = matrix
    cell = Cell("openssl-3", "EPERM", True, "2.6", "kept fd")
    live = truth.start_live(cell, built, jails)
    try:
        pid = live.pid
        assert os.readlink(f"/proc/{pid}/root") == str(jails.empty)
        status = _status(pid)
        assert status["Uid"].split()[0] == str(NOBODY)
        assert status["Seccomp"] == "2" and status["Seccomp_filters"] == "1"
        assert os.readlink(f"/proc/{pid}/ns/ipc") != os.readlink("/proc/self/ns/ipc")
        assert live.kept_fds == 1 and live.marker_now
        assert live.reseed() == "ok"
        assert live.reseed() == "ok"
    finally:
        live.stop()
    assert live.proc.returncode is not None
    assert not Path(f"/proc/{pid}").exists() or _status(pid).get("State", "").startswith("Z")


def test_a_cell_that_says_nothing_is_killed(matrix: tuple[Built, Jails], tmp_path: Path) -> None:
    """Clean-up on failure: a cell that never reports is ended and reaped, not left behind.
    Judged by the PID of the process this test started (it writes it, then execs): not by
    the names of pytest's children, which other tests' processes (a namespace holder's
    `sleep 600`) share, and which cannot tell a reaped cell from one never started."""
    cell = Cell("openssl-3", "allowed", False, "real", "no dev/")
    pidfile = tmp_path / "cell.pid"
    argv = ["sh", "-c", f'echo $$ > "{pidfile}" && exec sleep 60']
    with pytest.raises(RuntimeError, match="no output"):
        LiveCell(cell, argv, timeout=0.3)
    pid = pidfile.read_text().strip()
    # A child of this process until reaped (a zombie if killed and not waited for); once
    # reaped, its PID is nobody's child here, even if the kernel has given it out again.
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert pid not in children


# ---- doctor and check themselves, on live cells --------------------------------------------

# One cell per library x verdict class (issue 23's three cases first): doctor on the cell's
# live process and check on its binary under the same wrappers must agree with the truth.
CLI_CELLS = (
    # case 1: Debian's OpenSSL 3, getrandom() working, an empty jail: safe, exit 0
    Cell("openssl-3", "allowed", False, "real", "no dev/"),
    # case 2: ENOSYS, no marker, a prepared jail: fails, and the sentence names the filter
    Cell("openssl-3", "ENOSYS", False, "real", "prepared"),
    # case 3: the marker: an empty jail fails with the prepare remedy, a prepared one passes
    Cell("openssl-3", "ENOSYS", True, "real", "no dev/"),
    Cell("openssl-3", "ENOSYS", True, "real", "prepared"),
    Cell("openssl-3", "EPERM", True, "real", "kept fd"),
    Cell("openssl-3", "EPERM", False, "2.6", "prepared"),
    Cell("openssl-1.1.1r", "allowed", False, "real", "no dev/"),
    Cell("openssl-1.1.1r", "EPERM", False, "real", "prepared"),
    Cell("openssl-1.1.1r", "ENOSYS", True, "real", "kept fd"),
    Cell("openssl-1.1.1r", "ENOSYS", False, "2.6", "no dev/"),
    Cell("openssl-1.1.1b", "ENOSYS", False, "real", "prepared"),
    Cell("openssl-1.1.1b", "ENOSYS", False, "real", "no dev/"),
    Cell("openssl-1.1.1b", "EPERM", False, "real", "kept fd"),
    Cell("gnutls", "allowed", False, "real", "no dev/"),
    Cell("gnutls", "EPERM", False, "real", "prepared"),
    Cell("gnutls", "ENOSYS", False, "real", "kept fd"),
    Cell("gnutls", "ENOSYS", True, "2.6", "no dev/"),
    Cell("libsodium", "allowed", False, "real", "no dev/"),
    Cell("libsodium", "ENOSYS", False, "real", "kept fd"),
    Cell("libsodium", "EPERM", False, "2.6", "no dev/"),
    Cell("libsodium", "ENOSYS", False, "real", "prepared"),
)
_EXIT = {"safe": 0, "cannot tell": 75}  # doctor (errors.VERDICT_ERRORS); the rest: 69


def _said(events: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """Each entropy verdict row: (verdict, when, the event)."""
    rows = []
    for event in events:
        if event.get("event") != "check" or not str(event["check"]).startswith("entropy"):
            continue
        detail = str(event["detail"])
        said = next(
            v
            for v in ("safe now, fragile", "safe", "will fail", "cannot tell")
            if detail.startswith(v)
        )
        when = detail.removeprefix("will fail ").split(":")[0] if said == "will fail" else ""
        rows.append((said, when, event))
    return rows


def _wrappers(cell: Cell) -> list[str]:
    """The cell's own wrappers (entropy_truth.cell_argv), with the marker made by
    seccomp_run: check runs where the daemon would."""
    argv = ["unshare", "--ipc"]
    if cell.getrandom != "allowed":
        marker = ["--shm-marker"] if cell.marker else []
        argv += [truth.SYSTEM_PYTHON, truth.SECCOMP_RUN, "deny", cell.getrandom, *marker, "--"]
    if cell.kernel == "2.6":
        argv += ["setarch", "--uname-2.6"]
    return argv


def _events(stderr: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_doctor_and_check_agree_with_the_truth_on_live_cells(
    matrix: tuple[Built, Jails],
) -> None:
    """Issue 23, done when: doctor's verdict on a live process of the cell (--read-filter: its
    own seccomp filter, marker, kernel, kept fds) and check's on the cell's binary under the
    same filter, IPC namespace and personality agree with a real reseed there; their exit
    codes follow the verdict; each row says whose fact it is."""
    from tests.support import clean_env, jailshim_argv

    built, jails = matrix
    problems = []
    for cell in CLI_CELLS:
        with truth.live_cell(cell, built, jails) as live:
            doctor = subprocess.run(
                jailshim_argv("doctor", "--pid", str(live.pid), "--read-filter"),
                capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
            )  # fmt: skip
            outcome = live.outcome()
        assert outcome.result == EXPECTED[cell], (cell, outcome)
        jail = jails.prepared if cell.jail == "prepared" else jails.empty
        check = subprocess.run(
            [*_wrappers(cell), *jailshim_argv(
                "check", "--chroot", str(jail), "--user", "nobody", "--only-devices",
                "--device", "urandom", "--device", "random", "--timeout", "0.3", "--",
                str(built.binaries[cell.library]))],
            capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
        )  # fmt: skip
        for view, proc in (("doctor", doctor), ("check", check)):
            events = _events(proc.stderr)
            said = _said(events)
            if len(said) != 1:
                problems.append(f"{cell}: {view} said {len(said)} verdicts: {proc.stderr[-600:]}")
                continue
            verdict, when, row = said[0]
            if outcome.result not in fitting(cell, view, verdict, when):
                problems.append(f"{cell}: {view}: {row['detail']}; measured {outcome.result}")
            if view == "doctor":
                code = _EXIT.get(verdict, 69)
            else:
                code = 69 if verdict in ("will fail", "safe now, fragile") else 0
            if proc.returncode != code:
                problems.append(f"{cell}: {view} exit {proc.returncode} for {verdict}")
            rows = [e for e in events if e.get("event") == "check"]
            if any(e.get("whose") not in ("daemon", "jail", "probe") for e in rows):
                problems.append(f"{cell}: {view}: a row without its owner: {rows}")
        _issue_cases(cell, doctor, check, problems)
    assert not problems, "\n".join(problems)


def _issue_cases(
    cell: Cell,
    doctor: subprocess.CompletedProcess[str],
    check: subprocess.CompletedProcess[str],
    problems: list[str],
) -> None:
    """The issue's three cases, in the words the operator reads."""
    failed = " ".join(str(e.get("error", "")) for e in _events(check.stderr))
    if cell == CLI_CELLS[0] and (doctor.returncode, check.returncode) != (0, 0):
        problems.append(f"case 1: doctor {doctor.returncode}, check {check.returncode}")
    if cell == CLI_CELLS[1] and not (
        check.returncode == 69 and "getrandom()" in failed and "seccomp filter" in failed
        and "SystemCallFilter=" in failed
    ):  # fmt: skip
        problems.append(f"case 2: check {check.returncode}: {failed}")
    if cell == CLI_CELLS[2] and not (check.returncode == 69 and "jailshim prepare" in failed):
        problems.append(f"case 3, empty jail: check {check.returncode}: {failed}")
    if cell == CLI_CELLS[3] and check.returncode != 0:
        problems.append(f"case 3, prepared: check {check.returncode}: {check.stderr[-600:]}")
