"""Review round 3: attacks by each attacker of the threat model on the newest code (lookups in a
fresh interpreter, host paths for --file and sockets, swappable paths, lock holders, the host
directory cache, doctor's children, the O_TMPFILE copy). Each test here failed before its fix."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import NOBODY, clean_env, jailshim_argv, need, run

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


def test_a_filesystem_mounted_on_a_host_directory_after_the_cache_is_still_the_hosts(
    tmp_path: Path,
) -> None:
    """The host directories' identities are cached in /run/jailshim/hostdirs, keyed on dpkg's
    files only. A filesystem mounted later on one of them (a disk on /srv, an automounted
    /home; here a tmpfs on /mnt, in a private mount namespace) gives it a new identity the
    cache did not know: `--chroot /mnt` was planned as a jail (exit 0), where a fresh start
    refuses it (78)."""
    need(os.path.isdir("/mnt") and not os.path.ismount("/mnt"), "needs an unmounted /mnt")
    scratch = tmp_path / "jail"
    scratch.mkdir()
    jailshim = " ".join(shlex.quote(a) for a in jailshim_argv("prepare", "--dry-run"))
    script = (
        f"{jailshim} --chroot {shlex.quote(str(scratch))} >/dev/null 2>&1; "  # the cache, valid
        "mount -t tmpfs -o mode=0755 jailshim-review3 /mnt || exit 99; "
        f"{jailshim} --chroot /mnt; echo exit=$?"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, env=clean_env(), timeout=120, check=False,
    )  # fmt: skip
    assert "exit=78" in proc.stdout, proc.stdout + proc.stderr
    assert "the host's own" in proc.stderr, proc.stderr
