"""Review round 3: attacks by each attacker of the threat model on the newest code (lookups in a
fresh interpreter, host paths for --file and sockets, swappable paths, lock holders, the host
directory cache, doctor's children, the O_TMPFILE copy). Each test here failed before its fix."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

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


_TWO_FILTERS = r"""
/* Two seccomp filters answering getrandom() with different errnos: the oldest EPERM, the
   newest ENOSYS. The kernel runs the newest first and keeps the first of equal actions. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

static void install(int err) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getrandom, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = 4, .filter = f};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) perror("seccomp");
}

int main(void) {
    char b[8];
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    install(EPERM);
    install(ENOSYS);
    long r = syscall(SYS_getrandom, b, 8, 0);
    const char *name = errno == ENOSYS ? "ENOSYS" : errno == EPERM ? "EPERM" : "other";
    printf("getrandom=%ld errno=%s\n", r, name);
    fflush(stdout);
    for (;;) pause();
}
"""


def test_the_newest_seccomp_filters_errno_is_the_one_reported(tmp_path: Path) -> None:
    """Of two filters that both answer getrandom() with an errno, the kernel returns the
    newest's (it runs them newest first and keeps the first of equal actions). The ptrace
    request numbers filters from the oldest, and doctor took the first: a daemon getting
    ENOSYS was said to get EPERM. Not a top severity: a wrong fact in doctor's row."""
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc)")
    from jailshim.verify.daemon_entropy import read_filters
    from jailshim.verify.seccomp import getrandom_answer

    (tmp_path / "two.c").write_text(_TWO_FILTERS)
    binary = tmp_path / "two"
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(tmp_path / "two.c")], check=True)
    daemon = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        assert daemon.stdout.readline() == "getrandom=-1 errno=ENOSYS\n"
        _, why = getrandom_answer(read_filters(daemon.pid), os.uname().machine)
        assert "ENOSYS" in why, why
    finally:
        daemon.kill()
        daemon.wait(10)


def test_a_jail_path_through_a_fuse_mount_is_refused(tmp_path: Path) -> None:
    """A FUSE server answers every lookup anew: a user's FUSE mount (allow_other) on its home
    shows `jail` as a "root-owned" symlink to a root directory, and the config names
    HOME/jail/sub. Every name looked root's in root's directories, so the path was judged
    unswappable and prepared (exit 0), while the server can point `jail` anywhere the moment
    after, for the probe's chroot and a checker that act by name. Mocked as in the test
    above: root makes the mount."""
    need(os.path.exists("/dev/fuse"), "needs /dev/fuse")
    tmp_path.chmod(0o755)
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    mount = tmp_path / "home" / "user"
    mount.mkdir(parents=True)
    os.chown(mount, NOBODY, NOBODY)
    server = subprocess.Popen(
        [sys.executable, str(TESTS / "fuse_file.py"), str(mount), "jail", f"link:{real}",
         str(tmp_path / "fuse.log")],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline() == b"mounted\n"
        result = run("prepare", "--chroot", str(mount / "jail" / "sub"), "--dry-run")
        assert result.code == 78, result
        assert "fuse" in result.stderr, result.stderr
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        server.kill()
        server.wait(10)
