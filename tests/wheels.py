"""The PyPI wheels some tests take an old OpenSSL (1.1.1) from, downloaded once by
scripts/bootstrap.sh (`python -m tests.wheels`): no test reaches the package index, so a run
offline or behind a proxy gets the same libraries, or one sentence naming the missing step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CACHE = Path("/var/cache/jailshim-tests/wheels")

# requirement -> (platform, python version) as pip download asks for them: psycopg2-binary
# 2.9.5 vendors OpenSSL 1.1.1r, 2.8.3 (June 2019) 1.1.1b with the zlib its libcrypto needs.
WHEELS = {
    "psycopg2-binary==2.9.5": ("manylinux2014_x86_64", "3.11"),
    "psycopg2-binary==2.8.3": ("manylinux1_x86_64", "3.7"),
}


def _directory(requirement: str) -> Path:
    return CACHE / requirement.replace("==", "-")


def cached(requirement: str) -> Path | None:
    """The wheel bootstrap downloaded for ``requirement``, or None."""
    found = sorted(_directory(requirement).glob("*.whl"))
    return found[0] if found else None


def missing(requirement: str) -> str:
    return f"no {requirement} wheel in {_directory(requirement)}: run scripts/bootstrap.sh"


def download() -> int:
    """Download every wheel not cached yet; the number that could not be downloaded."""
    failed = 0
    for requirement, (platform, python) in WHEELS.items():
        if cached(requirement) is not None:
            continue
        into = _directory(requirement)
        into.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--platform", platform, "--python-version", python, requirement,
             "-d", str(into), "-q"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if got.returncode != 0:
            print(f"tests.wheels: {requirement}: {got.stderr[-300:]}", file=sys.stderr)
            failed += 1
    return failed


if __name__ == "__main__":
    sys.exit(1 if download() else 0)
