"""Review round 3: attacks by each attacker of the threat model on the newest code (lookups in a
fresh interpreter, host paths for --file and sockets, swappable paths, lock holders, the host
directory cache, doctor's children, the O_TMPFILE copy). Each test here failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import NOBODY, need, run

TESTS = Path(__file__).parent


def test_a_fuse_servers_root_owned_symlink_never_brings_a_secret_into_the_jail(
    tmp_path: Path,
) -> None:
    """A FUSE server says who owns its entries. A user with a FUSE mount on its own home
    (fusermount3 -o allow_other, which user_allow_other in /etc/fuse.conf permits; sshfs users
    ask for it) shows app.conf there as a symlink "owned by root" to root's 0644 notes in a
    0700 directory. The FUSE root itself claims root's ownership in root's /home, so every name
    on the way looked root's: jailshim followed the link and copied the notes into the jail,
    where the daemon's user read them. Mocked: the mount is made by root (this test must not
    edit /etc/fuse.conf); the kernel sees the same mount and jailshim the same answers."""
    need(os.path.exists("/dev/fuse"), "needs /dev/fuse")
    tmp_path.chmod(0o755)
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    secret = vault / "notes.txt"
    secret.write_bytes(b"TOPSECRET\n")
    secret.chmod(0o644)
    home = tmp_path / "home"
    home.mkdir()
    mount = home / "user"
    mount.mkdir()
    os.chown(mount, NOBODY, NOBODY)
    jail = tmp_path / "jail"
    jail.mkdir()
    log = tmp_path / "fuse.log"
    server = subprocess.Popen(
        [sys.executable, str(TESTS / "fuse_file.py"), str(mount), "app.conf", f"link:{secret}",
         str(log)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline() == b"mounted\n"
        result = run("prepare", "--chroot", str(jail), "--file", str(mount / "app.conf"),
                     "--no-verify")  # fmt: skip
        copied = jail / str(mount / "app.conf").lstrip("/")
        leaked = copied.exists() and b"TOPSECRET" in copied.read_bytes()
        assert not leaked, result
        assert result.code == 78, result
        assert "FUSE" in result.stderr, result.stderr
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        server.kill()
        server.wait(10)
        run("teardown", "--chroot", str(jail))
