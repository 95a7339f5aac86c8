"""The Debian package (issue 31): built from a clean copy of the tree with Debian's own tools,
lintian-clean, then installed into a fresh container of the suite's debootstrapped base, used
(--version, man, Tab, check on a jail) and purged with nothing left behind.

The container runs with --network=none: its dependencies (python3-structlog, -tenacity,
-pyroute2, and man-db and bash-completion to read the page and press Tab) are installed once
into a layer over BASE (DEPS, kept in podman's store as BASE is), the way the Containerfile
installs them, from Debian's archive. `apt-get install ./jailshim_*.deb` then resolves every
dependency from what is installed, as it does on an administrator's host.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import TESTS, need
from tests.test_containers import (  # the suite's podman, its base image and session fixtures
    BASE,
    PATH,
    Podman,
    _container_name,
    _import_base,
    podman,  # noqa: F401 (a fixture)
    shared,  # noqa: F401 (a fixture)
)
from tests.test_pipx import _clean_copy  # `git ls-files` as they are now

pytestmark = pytest.mark.slow

REPO = TESTS.parent
BUILD_TOOLS = ("dpkg-buildpackage", "dh", "lintian")
BUILD_ENV = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/nonexistent"}  # Debian's python3 only
DEPS_FILE = """\
ARG BASE
FROM ${BASE}
# hadolint ignore=DL3008
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 python3-structlog python3-tenacity \\
      python3-pyroute2 man-db bash-completion \\
 && rm -rf /var/lib/apt/lists/*
"""
# tagged by its Containerfile: a dependency added above builds a new layer, not a stale reuse
DEPS = "localhost/jailshim-deb-deps:" + hashlib.sha256(DEPS_FILE.encode()).hexdigest()[:12]


def _version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


@pytest.fixture(scope="module")
def built() -> Iterator[Path]:
    """The directory holding jailshim_VERSION_all.deb and its .changes, built by
    dpkg-buildpackage from `git ls-files` copied to a fresh directory (nothing untracked or
    built before can leak in)."""
    for tool in BUILD_TOOLS:
        need(shutil.which(tool) is not None, f"needs {tool} (scripts/bootstrap.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="jailshim-deb-") as top:
        tree = Path(top) / "jailshim"
        tree.mkdir()
        _clean_copy(tree)
        build = subprocess.run(
            ["dpkg-buildpackage", "-us", "-uc", "-b"],
            check=False,
            cwd=tree,
            env=BUILD_ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert build.returncode == 0, build.stdout[-6000:] + build.stderr[-4000:]
        top_path = Path(top)
        top_path.chmod(0o755)  # podman mounts it into the container
        yield top_path


def _deb(built: Path) -> Path:
    return built / f"jailshim_{_version()}_all.deb"


def test_the_package_holds_the_command_page_completion_and_examples(built: Path) -> None:
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(_deb(built))], capture_output=True, text=True, check=True
    ).stdout
    paths = {line.split()[-1].removeprefix(".") for line in listing.splitlines()}
    assert {
        "/usr/bin/jailshim",
        "/usr/share/man/man8/jailshim.8.gz",
        "/usr/share/bash-completion/completions/jailshim",
        "/usr/share/doc/jailshim/copyright",
        "/usr/share/doc/jailshim/examples/systemd/jailshim-prepare.conf",
        "/usr/share/doc/jailshim/examples/haproxy-dot/haproxy.cfg",
        "/usr/lib/python3/dist-packages/jailshim/cli.py",
    } <= paths
    assert not any("/tests/" in p for p in paths)
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(_deb(built)), "Version", "Depends"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Version: {_version()}\n" in fields
    # Debian's libraries, not vendored copies
    for dependency in ("python3-structlog", "python3-tenacity", "python3-pyroute2"):
        assert dependency in fields


def test_lintian_finds_no_error(built: Path) -> None:
    changes = next(built.glob("jailshim_*.changes"))
    lint = subprocess.run(
        ["lintian", "--pedantic", "--info", "--fail-on", "error", str(changes)],
        check=False,
        env=BUILD_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tags = [line for line in lint.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert not [t for t in tags if t.startswith("E: ")], tags
    # every warning is answered in /work/notes (none today): a new one fails until it is
    assert not [t for t in tags if t.startswith("W: ")], tags


@pytest.fixture(scope="module")
def deps_image(podman: Podman) -> str:  # noqa: F811 (the imported fixture)
    need(shutil.which("debootstrap") is not None, "needs debootstrap (scripts/bootstrap.sh)")
    if podman("image", "exists", BASE, check=False).returncode != 0:
        _import_base(podman)
    if podman("image", "exists", DEPS, check=False).returncode != 0:
        podman(
            *("build", "-q", "--build-arg", f"BASE={BASE}", "-t", DEPS, "-f", "-", "/"),
            stdin=DEPS_FILE.encode(),
            timeout=900,
        )
    return DEPS


# One shell in a fresh container: install, use, purge, each result on a marked line.
IN_CONTAINER = r"""
set -u
snapshot() { find /usr /etc /var/lib/jailshim /var/cache/jailshim -xdev 2>/dev/null | sort; }
snapshot > /tmp/before
apt-get install -y --no-install-recommends "/deb/$1" > /tmp/apt.log 2>&1 \
  || { echo "APT-FAILED"; cat /tmp/apt.log; exit 1; }
echo "WHICH $(command -v jailshim)"
echo "VERSION $(jailshim --version)"
echo "MAN $(man -w jailshim)"
echo "COMPLETE $(bash --norc -c 'source /usr/share/bash-completion/bash_completion
  __load_completion jailshim; COMP_WORDS=(jailshim pre); COMP_CWORD=1; _jailshim
  echo ${COMPREPLY[@]}')"
mkdir -p /srv/jail && chmod 0755 /srv/jail
jailshim prepare --chroot /srv/jail --user nobody --log-level error; echo "PREPARE $?"
jailshim check --chroot /srv/jail --user nobody --log-level error; echo "CHECK $?"
jailshim teardown --chroot /srv/jail --log-level error; echo "TEARDOWN $?"
rmdir /srv/jail
dpkg -L jailshim > /tmp/owned
apt-get purge -y jailshim > /tmp/apt.log 2>&1 || { echo "PURGE-FAILED"; cat /tmp/apt.log; }
echo "STATUS $(dpkg-query -W -f='${db:Status-Abbrev}' jailshim 2>&1)"
snapshot > /tmp/after
diff /tmp/before /tmp/after | sed 's/^/LEFT /'
while read -r path; do [ -f "$path" ] && echo "LEFT $path"; done < /tmp/owned
echo DONE
"""


def test_installed_in_a_fresh_container_then_purged(
    built: Path,
    podman: Podman,  # noqa: F811 (the imported fixture)
    deps_image: str,
) -> None:
    name = _container_name()
    try:
        done = podman(
            *("run", "--rm", "--name", name, "--network=none", "--cap-add=MKNOD"),
            *("-v", f"{built}:/deb:ro", deps_image),
            *("bash", "-c", IN_CONTAINER, "in-container", _deb(built).name),
            timeout=600,
            check=False,
        )
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
    out = done.stdout.decode()
    said = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert out.rstrip().endswith("DONE"), out + done.stderr.decode()
    assert said["WHICH"] == "/usr/bin/jailshim", out
    assert said["VERSION"] == f"jailshim {_version()}", out
    assert said["MAN"] == "/usr/share/man/man8/jailshim.8.gz", out
    assert said["COMPLETE"] == "prepare", out
    assert (said["PREPARE"], said["CHECK"], said["TEARDOWN"]) == ("0", "0", "0"), out
    assert said["STATUS"].startswith(("un", "dpkg-query: no packages found")), out
    assert [line for line in out.splitlines() if line.startswith("LEFT ")] == [], out
