"""The README's pipx install, and how the systemd examples find it: by name, in systemd's path.

README ("Install"): `PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install .` puts the
command at /usr/local/bin/jailshim, which every unit in examples/systemd/ finds by calling
`jailshim` by name (systemd's fixed search path; the .deb's /usr/bin is in it too); `pipx install .`
alone puts it in ~/.local/bin. Here both run offline: pipx gets the wheel built from the
checkout's tracked files (no build backend fetched) and, with --system-site-packages, Debian's
python3-structlog/-tenacity/-pyroute2 (bootstrap.sh) for the dependencies; PIP_NO_INDEX keeps
every pip that pipx starts off the network. /opt and /usr/local/bin are the test's own
directories, bound over the host's in a private mount namespace, so the README's command runs
as written and the host's /usr/local/bin is never touched.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import TESTS, clean_env, need

ROOT = TESTS.parent
UNITS = ROOT / "examples" / "systemd"
CLAIMED = "/usr/local/bin/jailshim"


def _clean_copy(to: Path) -> None:
    """The checkout's tracked files as they are now (no .venv, caches or build leftovers)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the tree but not yet in the index: gone
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)


def _wheel(scratch: Path) -> Path:
    source, dist = scratch / "src", scratch / "dist"
    _clean_copy(source)
    # No isolation: the backend (hatchling) comes from the test venv, not from the network.
    build = [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(dist)]
    done = subprocess.run(
        [*build, str(source)], capture_output=True, text=True, cwd=scratch, check=False
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = dist.glob("jailshim-*.whl")
    return wheel


def _units_call() -> set[str]:
    """Every path the example units run jailshim by (Exec*= lines)."""
    called = set()
    for unit in UNITS.rglob("*"):
        if unit.is_file():
            for line in unit.read_text().splitlines():
                if re.match(r"Exec\w*=", line) and "jailshim" in line:
                    called.add(line.split("=", 1)[1].split()[0].lstrip("-@:+!"))
    return called


def test_units_call_jailshim_by_name_where_every_install_puts_it() -> None:
    """A bare command in Exec*= is resolved in systemd's fixed search path (systemd >= 239): the
    pipx/venv link in /usr/local/bin and the .deb's /usr/bin are both in it, /usr/local first."""
    assert _units_call() == {"jailshim"}
    path = subprocess.run(
        ["systemd-path", "search-binaries-default"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dirs = path.split(":")
    assert dirs.index("/usr/local/bin") < dirs.index("/usr/bin"), path
    assert (
        f"PIPX_BIN_DIR={CLAIMED.rsplit('/', 1)[0]} pipx install ."
        in (ROOT / "README.md").read_text()
    )


def test_pipx_install_gives_the_units_their_command_offline() -> None:
    """The README's command, verbatim but for the wheel in place of `.`: /usr/local/bin/jailshim
    is pipx's link into its venv under /opt/pipx; it prints its version and plans a prepare
    (--dry-run) from that venv. `pipx install` without PIPX_* links ~/.local/bin/jailshim."""
    need(shutil.which("pipx") is not None, "needs pipx (scripts/bootstrap.sh)")
    with tempfile.TemporaryDirectory(prefix="jailshim-pipx-") as name:
        scratch = Path(name)
        wheel = _wheel(scratch)
        for d in ("opt", "bin", "home", "jail"):
            (scratch / d).mkdir()
        (scratch / "jail").chmod(0o755)
        jail = scratch / "jail"
        offline = f"--system-site-packages {wheel}"  # in place of the README's `.`
        readme = f"PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin pipx install {offline}"
        script = "\n".join(
            [
                "set -e",
                f"mount --bind {scratch / 'opt'} /opt",
                f"mount --bind {scratch / 'bin'} /usr/local/bin",
                readme,
                f"readlink {CLAIMED}",
                f"{CLAIMED} --version",
                f"{CLAIMED} prepare --chroot {jail} --dry-run",
                f"HOME={scratch / 'home'} pipx install {offline}",
                f"{scratch / 'home'}/.local/bin/jailshim --version",
            ]
        )
        env = {**clean_env(), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        env = {k: v for k, v in env.items() if not k.startswith("PIPX_")}
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            capture_output=True,
            text=True,
            env=env,
            cwd=scratch,
            timeout=300,
            check=False,
        )
        context = f"{shlex.quote(script)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        assert done.returncode == 0, context
        lines = done.stdout.splitlines()
        assert "/opt/pipx/venvs/jailshim/bin/jailshim" in lines, context
        assert lines.count("jailshim 0.1.0") == 2, context
        # the plan, from the installed package: what it would create, nothing made
        assert re.search(r"^dev/urandom +1:9 +mknod", done.stdout, re.MULTILINE), context
        assert list(jail.iterdir()) == [], "the dry run changed the jail"
        assert (scratch / "opt" / "pipx" / "venvs" / "jailshim").is_dir()
        assert (scratch / "home" / ".local" / "bin" / "jailshim").is_symlink()
