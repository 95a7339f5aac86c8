"""tests/ci_skips.py: under CI=true every kind of skip fails the run; without CI it skips.
Each case runs a small pytest session in a subprocess on a file of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import TESTS, clean_env

SKIPS = """
import sys

import pytest


def test_skip_call():
    pytest.skip("skipped in the test")


@pytest.mark.skip(reason="a skip marker")
def test_skip_marker():
    pass


@pytest.mark.skipif(sys.platform.startswith("linux"), reason="a skipif marker")
def test_skipif_marker():
    pass


def test_importorskip():
    pytest.importorskip("no_such_module_for_jailshim")


@pytest.fixture
def skipping_fixture():
    pytest.skip("skipped in a fixture")


def test_skip_in_fixture(skipping_fixture):
    pass


@pytest.mark.xfail(reason="a known failure", strict=True)
def test_xfail_marker():
    raise AssertionError


def test_xfail_call():
    pytest.xfail("xfail called")


def test_passes():
    pass
"""

MODULE_SKIP = """
import pytest

pytest.importorskip("no_such_module_for_jailshim")


def test_never_collected():
    pass
"""

SKIPPING = (
    "test_skip_call",
    "test_skip_marker",
    "test_skipif_marker",
    "test_importorskip",
    "test_skip_in_fixture",
)


def _session(tmp_path: Path, source: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on one file, with only tests/ci_skips.py as a plugin (not the repository's
    conftest or pyproject options), with CI set to ``ci`` or unset."""
    test = tmp_path / "test_sample.py"
    test.write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = clean_env()
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(TESTS.parent)
    argv = [sys.executable, "-m", "pytest", "-p", "tests.ci_skips", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*argv, "-rA", "-c", str(tmp_path / "pytest.ini"), str(test)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _outcomes(stdout: str) -> dict[str, str]:
    """test name -> PASSED/FAILED/SKIPPED/XFAIL/ERROR, from the -rA summary."""
    seen: dict[str, str] = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "SKIPPED", "XFAIL", "ERROR") and "::" in rest:
            seen[rest.split("::")[1].split()[0]] = word
    return seen


def test_under_ci_every_skip_fails_and_xfail_stays(tmp_path: Path) -> None:
    proc = _session(tmp_path, SKIPS, "true")
    seen = _outcomes(proc.stdout)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for name in SKIPPING:
        assert seen.get(name) in ("FAILED", "ERROR"), (name, proc.stdout)
    assert seen["test_xfail_marker"] == "XFAIL" and seen["test_xfail_call"] == "XFAIL", seen
    assert seen["test_passes"] == "PASSED", seen
    assert "skipped" not in proc.stdout.splitlines()[-1], proc.stdout
    assert "CI=true: a skip is a failure here" in proc.stdout


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_without_ci_skips_stay_skips(tmp_path: Path, ci: str | None) -> None:
    proc = _session(tmp_path, SKIPS, ci)
    seen = _outcomes(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 skipped" in proc.stdout.splitlines()[-1], proc.stdout
    assert seen["test_passes"] == "PASSED", seen


def test_under_ci_a_module_level_skip_fails_the_collection(tmp_path: Path) -> None:
    proc = _session(tmp_path, MODULE_SKIP, "true")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "CI=true: a skip is a failure here" in proc.stdout, proc.stdout
    assert _session(tmp_path, MODULE_SKIP, None).returncode == 5  # nothing collected, skipped
