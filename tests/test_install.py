"""The install story: a wheel and an sdist built as a user's pip would, installed into a fresh
venv on Debian's own libraries (the README's third way), carrying everything jailshim needs."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from tests.support import TESTS, clean_env, need

ROOT = TESTS.parent
SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_LIBRARIES = ("structlog", "tenacity", "pyroute2")
SEED_LINE = "140135125062464:error:140BA041:SSL routines:SSL_new:malloc failure\n"


def _sh(*argv: str, cwd: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``cwd`` (never the source tree, which `python -c` would import)."""
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
    return proc


def test_wheel_and_sdist_install_into_a_fresh_venv_on_debians_libraries() -> None:
    """`python -m build` makes a wheel and an sdist holding every module (supervisor.py too);
    the wheel installs with no index into a venv on Debian's python3-structlog/-tenacity/
    -pyroute2, and its `jailshim` prints its version, explains a line and runs --init."""
    found = subprocess.run(
        [SYSTEM_PYTHON, "-c", f"import {', '.join(DEBIAN_LIBRARIES)}"],
        capture_output=True,
        check=False,
    )
    need(
        found.returncode == 0,
        "needs Debian's python3-structlog python3-tenacity python3-pyroute2 (bootstrap.sh)",
    )
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "jailshim").rglob("*.py")}
    assert "jailshim/supervisor.py" in modules
    with tempfile.TemporaryDirectory(prefix="jailshim-install-") as scratch:
        dist, venv = Path(scratch, "dist"), Path(scratch, "venv")
        # No isolation: the backend (hatchling) comes from the test venv, not from the network.
        build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist)]
        _sh(*build, str(ROOT), cwd=scratch)
        (wheel,) = dist.glob("jailshim-*.whl")
        (sdist,) = dist.glob("jailshim-*.tar.gz")
        in_wheel = set(zipfile.ZipFile(wheel).namelist())
        assert modules <= in_wheel, modules - in_wheel
        metadata = zipfile.ZipFile(wheel).read(
            next(n for n in in_wheel if n.endswith(".dist-info/METADATA"))
        )
        assert b"Requires-Python: >=3.11" in metadata
        with tarfile.open(sdist) as tar:
            in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        assert modules | {"README.md", "pyproject.toml"} <= in_sdist
        _sh(SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv), cwd=scratch)
        # --no-index: every dependency must be satisfied by Debian's packages as they are
        _sh(str(venv / "bin/pip"), "install", "-q", "--no-index", str(wheel), cwd=scratch)
        command = str(venv / "bin/jailshim")
        assert _sh(command, "--version", cwd=scratch).stdout.strip() == "jailshim 0.1.0"
        explained = _sh(command, "explain", cwd=scratch, stdin=SEED_LINE)
        assert "SSL_new malloc failure" in explained.stdout
        init = _sh(command, "run", "--init", "--", "true", cwd=scratch)
        assert '"init.exited"' in init.stderr  # the supervisor, from the installed package
        where = "import jailshim.supervisor as s; print(s.__file__)"
        found_at = _sh(str(venv / "bin/python"), "-c", where, cwd=scratch).stdout
        assert found_at.startswith(str(venv)), found_at
    assert not Path(scratch).exists()
