"""`jailshim run -- vsftpd FILE`: its jail is secure_chroot_dir, read as parseconf.c does."""

from __future__ import annotations

import ftplib
import os
import pwd
import sys
import time
from pathlib import Path

import pytest

from jailshim.daemons.vsftpd import read_settings, truthy
from jailshim.errors import UsageError
from tests.daemons import descendants, free_port, own_network, status_field, stop
from tests.support import NSRUN, jailshim_argv, need, run, spawn

__all__ = ["own_network"]  # a fixture (tests/daemons.py) the fixtures here use

VSFTPD = "/usr/sbin/vsftpd"


@pytest.fixture
def vsftpd_bin(root: None, own_network: None) -> str:
    """Debian's vsftpd and its user ftp (anonymous logins) and nobody (its nopriv_user)."""
    need(os.access(VSFTPD, os.X_OK), "needs vsftpd (Debian package vsftpd)")
    try:
        pwd.getpwnam("ftp")
    except KeyError:
        need(False, "needs the user ftp (made by Debian's vsftpd package)")
    return VSFTPD


def write_config(area: Path, port: int, extra: str = "") -> tuple[Path, Path]:
    """An anonymous, read-only vsftpd on 127.0.0.1:PORT: its secure_chroot_dir (the jail) and
    anon_root (the anonymous user's own jail, the operator's) below ``area``. Two-process
    model (connect_from_port_20, as Debian's): the pre-login process chroots into the jail."""
    jail = area / "empty"
    jail.mkdir(mode=0o755)
    pub = area / "pub"
    pub.mkdir(mode=0o755)
    (pub / "hello.txt").write_text("hello\n")
    config = area / "vsftpd.conf"
    config.write_text(
        "listen=YES\nlisten_address=127.0.0.1\n"
        f"listen_port={port}\n"
        "anonymous_enable=YES\nlocal_enable=NO\n"
        f"anon_root={pub}\n"
        "connect_from_port_20=YES\n"
        f"secure_chroot_dir={jail}\n"
        f"{extra}"
    )
    return config, jail


def connect(port: int) -> ftplib.FTP:
    """An FTP control connection (its banner read), retried until vsftpd listens."""
    deadline = time.monotonic() + 20
    while True:
        try:
            ftp = ftplib.FTP()  # noqa: S321 - the client the test needs, on its own netns
            ftp.connect("127.0.0.1", port, timeout=5)
            return ftp
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_vsftpd_pre_login_process_runs_in_the_jail_it_names(
    area: Path, vsftpd_bin: str, where: str
) -> None:
    """No --chroot: secure_chroot_dir from the config file; a connection's pre-login process
    has the jail as its root and nobody as its user; the anonymous client lists its files."""
    port = free_port()
    config, jail = write_config(area, port)
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    proc = spawn([*wrap, *jailshim_argv("run", "--", vsftpd_bin, str(config))])
    try:
        ftp = connect(port)
        try:
            nobody = pwd.getpwnam("nobody")
            roots: dict[int, list[str]] = {}
            deadline = time.monotonic() + 10
            while not roots and time.monotonic() < deadline:
                for pid in descendants(proc.pid):
                    try:
                        if os.readlink(f"/proc/{pid}/root") == str(jail):
                            roots[pid] = status_field(pid, "Uid").split()
                    except OSError:
                        continue
            assert list(roots.values()) == [[str(nobody.pw_uid)] * 4], roots
            assert ftp.login().startswith("230")
            assert ftp.nlst() == ["hello.txt"]
        finally:
            ftp.close()
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    assert f'"secure_chroot_dir": "{jail}"' in stderr, stderr
    handover = [ln for ln in stderr.splitlines() if '"event": "handover"' in ln]
    assert handover and f'"chroot": "{jail}"' in handover[0], stderr  # jailshim prepared it
    assert (jail / "dev/urandom").exists() or where == "userns"


def test_missing_secure_chroot_dir_is_refused_before_vsftpd_runs(
    area: Path, vsftpd_bin: str
) -> None:
    """A container whose /run is empty: vsftpd would start and OOPS on every connection;
    jailshim refuses at once (78) and names the directory."""
    config, jail = write_config(area, free_port())
    jail.rmdir()
    result = run("run", "--", vsftpd_bin, str(config))
    assert result.code == 78, result.stderr
    assert f"The jail {jail} does not exist" in result.stderr


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("bogus_setting=1\n", "unrecognised variable in config file: bogus_setting"),
        ("anonymous_enable=maybe\n", "bad bool value in config file for: anonymous_enable"),
        ("ssl_enable=YES\nrsa_cert_file=/nonexistent.pem\n", "SSL: cannot load RSA certificate"),
    ],
)
def test_broken_config_is_78_in_vsftpds_words(
    area: Path, vsftpd_bin: str, extra: str, words: str
) -> None:
    config, jail = write_config(area, free_port(), extra)
    result = run("run", "--", vsftpd_bin, str(config))
    assert result.code == 78, result.stderr
    assert words in result.stderr
    assert not (jail / "dev").exists(), "the jail was not taken back"


def test_inetd_mode_is_refused_in_vsftpds_words(area: Path, vsftpd_bin: str) -> None:
    config, _ = write_config(area, free_port())
    result = run("run", "--", vsftpd_bin, str(config), "-olisten=NO")
    assert result.code == 78, result.stderr
    assert "not configured for standalone, must be started from inetd" in result.stderr


def test_settings_read_as_parseconf_does(tmp_path: Path) -> None:
    """Files and -o settings in argv order, the last one winning; leading space dropped;
    the value is everything after the first "="; comments and blank lines skipped."""
    first = tmp_path / "a.conf"
    first.write_text("# c\n\n   \n  secure_chroot_dir=/a=b\nlisten=yes\n")
    settings, files = read_settings(["vsftpd", "-olisten=NO", str(first), "-olisten_port=2121"])
    assert files == (str(first),)
    assert settings["secure_chroot_dir"] == "/a=b"
    assert settings["listen"] == "yes" and truthy(settings["listen"]) is True
    assert settings["listen_port"] == "2121"
    assert truthy("False") is False and truthy("on") is None
    with pytest.raises(UsageError, match="unrecognise option: -x"):
        read_settings(["vsftpd", "-x"])


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_stock_debian_config_answers_from_its_jail(area: Path, vsftpd_bin: str, where: str) -> None:
    """Debian's /etc/vsftpd.conf as installed (listen_ipv6=YES, local users, PAM), with only
    its secure_chroot_dir, its port and its log files moved by -o (after the file: they win):
    a client's banner and refused login come from a pre-login process whose root is the jail."""
    stock = Path("/etc/vsftpd.conf")
    need(stock.is_file(), "needs Debian's /etc/vsftpd.conf (package vsftpd)")
    jail = area / "empty"
    jail.mkdir(mode=0o755)
    port = free_port()
    argv = [
        vsftpd_bin,
        str(stock),
        f"-olisten_port={port}",
        f"-osecure_chroot_dir={jail}",
        f"-ovsftpd_log_file={area}/vsftpd.log",
        f"-oxferlog_file={area}/xferlog",
    ]
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    proc = spawn([*wrap, *jailshim_argv("run", "--", *argv)])
    try:
        ftp = connect(port)
        try:
            assert ftp.getwelcome().startswith("220 (vsFTPd 3.")
            deadline = time.monotonic() + 10
            jailed: list[int] = []
            while not jailed and time.monotonic() < deadline:
                for pid in descendants(proc.pid):
                    try:
                        if os.readlink(f"/proc/{pid}/root") == str(jail):
                            jailed.append(pid)
                    except OSError:
                        continue
            assert jailed, "no pre-login process in the jail"
            with pytest.raises(ftplib.error_perm, match="530"):
                ftp.login("no-such-user-jailshim", "x")
        finally:
            ftp.close()
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    handover = [ln for ln in stderr.splitlines() if '"event": "handover"' in ln]
    assert handover and f'"chroot": "{jail}"' in handover[0], stderr
