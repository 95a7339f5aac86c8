"""The host's own directories are never a jail (issue 25, review rounds 1 and 3): a directory
a package owns, the pure rule over every package's file list, a cache of that verdict another
user could have written, a filesystem mounted on a host directory after the cache was made.
Each test here failed before its fix."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.multiarch import LIBDIR
from tests.support import NOBODY, clean_env, jailshim_argv, need, run


def _owned_by_a_package(path: str) -> bool:
    dpkg = shutil.which("dpkg")
    if dpkg is None:
        return False
    return subprocess.run([dpkg, "-S", path], check=False, capture_output=True).returncode == 0


@pytest.mark.parametrize("host_dir", [LIBDIR, "/etc/ssl", "/var/lib/dpkg/info", "/etc/apt"])
def test_a_directory_a_package_owns_is_not_a_jail(host_dir: str) -> None:
    need(os.path.isdir(host_dir) and _owned_by_a_package(host_dir), f"needs dpkg's {host_dir}")
    result = run("prepare", "--chroot", host_dir, "--dry-run")
    assert result.code == 78, result.error
    assert not os.path.exists(os.path.join(host_dir, "dev"))


def test_the_host_directory_rule_reads_every_packages_list_purely() -> None:
    """PURE: a directory two packages name, or one package of the system itself names, is the
    host's (and its parents); one that only its own optional package names is a jail."""
    from jailshim.jail.hostdirs import packaged_host_paths, system_packages

    status = (
        "Package: dpkg\nEssential: yes\nPriority: required\n\n"
        "Package: apt\nPriority: important\nDescription: x\n Priority: required\n\n"
        "Package: haproxy\nPriority: optional\n"
    )
    assert system_packages(status) == {"dpkg", "apt"}
    lists = [
        ("dpkg", "/.\n/var\n/var/lib\n/var/lib/dpkg\n/var/lib/dpkg/info\n"),
        ("openssl", "/etc\n/etc/ssl\n/etc/ssl/openssl.cnf\n"),
        ("ca-certificates", "/etc\n/etc/ssl\n/etc/ssl/certs\n"),
        ("haproxy", "/var\n/var/lib\n/var/lib/haproxy\n/etc/haproxy\n"),
    ]
    paths = packaged_host_paths(lists, {"dpkg"})
    for host in ("/var/lib/dpkg/info", "/etc/ssl", "/var/lib", "/etc", "/usr/lib"):
        assert host in paths, host
    for own in ("/var/lib/haproxy", "/etc/haproxy", "/etc/ssl/certs"):
        assert own not in paths, own


def test_a_host_directory_cache_not_roots_alone_is_never_believed() -> None:
    """The verdict is cached in /run/jailshim/hostdirs. A cache another user could have
    written (not root's, or group/other-writable) saying /etc/ssl is no host directory is
    ignored and rebuilt: /etc/ssl is still refused (78)."""
    need(_owned_by_a_package("/etc/ssl"), "needs dpkg's /etc/ssl")
    from jailshim.jail import hostdirs

    run("prepare", "--chroot", "/etc/ssl", "--dry-run")  # makes the right cache
    cache = Path(hostdirs.CACHE)
    need(cache.exists(), "needs a writable /run/jailshim")
    header = cache.read_text().splitlines()[0]
    try:
        for owner, mode in ((NOBODY, 0o600), (0, 0o666)):
            cache.write_text(header + "\n")  # the right key, no host directory at all
            os.chown(cache, owner, owner)
            cache.chmod(mode)
            result = run("prepare", "--chroot", "/etc/ssl", "--dry-run")
            assert result.code == 78, result.error
            assert "/etc/ssl" in result.error
    finally:
        cache.unlink(missing_ok=True)


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
