"""Attacks on the long-tail adapters of issue 30 (lighttpd, pdns_recursor, pdns_server, radvd,
vsftpd, privoxy, ntpsec, openvpn, sshd): what each reads as root before and after the jail is
judged, by the attackers of docs/ARCHITECTURE.md's threat model — the config's author (a FIFO or
/dev/zero where a config names a file, a file only root can reach named as one the daemon reads
again inside its jail) and the daemon's user who owns its jail (a symlink on the way to a file
root reads there, a FIFO at such a file).

A run that would hang is bounded here (``_jailshim_within``): a hang is a failure, never a
stuck suite. Every attack here once succeeded or was shown able to (each fix names its test);
they all hold now (see /work/notes/s4/attack.md for each, and the break that fails it).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jailshim.daemons import radvd
from tests.daemons import free_port
from tests.support import Result, clean_env, jailshim_argv, need

RECURSOR = "/usr/sbin/pdns_recursor"
OPENVPN = "/usr/sbin/openvpn"
NTPD = "/usr/sbin/ntpd"
VSFTPD = "/usr/sbin/vsftpd"
PDNS_SERVER = "/usr/sbin/pdns_server"
HANG_S = 25  # every refusal here takes well under a second; the recursor's dump ~50 ms


def _jailshim_within(seconds: float, *args: str) -> Result:
    """``jailshim ARGS`` in a session of its own, killed whole after ``seconds``: a run still
    going then is the attack's success (jailshim held as root), said as an assertion."""
    proc = subprocess.Popen(
        jailshim_argv(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"jailshim {' '.join(args)} still ran after {seconds} s: {err}"
        ) from None
    assert "Traceback" not in err, err
    return Result(proc.returncode, out, err)


def _readable_in_jail_as(user: str, jail: Path, path: str) -> bytes | None:
    """The bytes ``user`` (its uid, gid and groups), chrooted into ``jail`` as the daemon is,
    can read at ``path`` there; None if it cannot."""
    ids = pwd.getpwnam(user)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.chroot(jail)
            os.chdir("/")
            os.setgroups(os.getgrouplist(user, ids.pw_gid))
            os.setgid(ids.pw_gid)
            os.setuid(ids.pw_uid)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            os.write(write_end, b"+" + os.read(fd, 4096))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        got = pipe.read()
    os.waitpid(child, 0)
    return got[1:] if got.startswith(b"+") else None


def _recursor_config(area: Path, jail: Path, extra: str) -> Path:
    directory = area / "powerdns"
    directory.mkdir()
    (directory / "recursor.conf").write_text(
        f"chroot={jail}\nsetuid=pdns\nsetgid=pdns\nlocal-address=127.0.0.1\n"
        f"local-port={free_port()}\nsecurity-poll-suffix=\n{extra}"
    )
    return directory


@pytest.fixture
def recursor_bin(root: None, own_network: None) -> str:
    need(os.access(RECURSOR, os.X_OK), "needs pdns_recursor (Debian package pdns-recursor)")
    try:
        pwd.getpwnam("pdns")
    except KeyError:
        need(False, "needs the user pdns (Debian package pdns-recursor creates it)")
    return RECURSOR


# --- pdns_recursor: the files it reads again inside its jail are copied there -------------


@pytest.mark.parametrize("setting", ["hint-file", "trust-anchor"])
def test_recursor_never_copies_a_file_only_root_can_reach_where_pdns_reads_it(
    area: Path, recursor_bin: str, setting: str
) -> None:
    """The config's author names, as hint-file (or in the Lua config's
    readTrustAnchorsFromFile), a 0644 file in a 0700 root directory: pdns cannot read it on the
    host. jailshim copied it into the jail with its mode, under root-made 0755 directories —
    readable there by pdns, and by every reader of the jail (a root-only copy). Now: 78 before
    anything is made, naming the file and the user."""
    secret_dir = area / "root-only"
    secret_dir.mkdir(mode=0o700)
    secret = secret_dir / "secret"
    secret.write_text("TOP-SECRET-LINE\n")
    secret.chmod(0o644)
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    if setting == "hint-file":
        extra = f"hint-file={secret}\n"
    else:
        lua = area / "recursor.lua"
        lua.write_text(f'readTrustAnchorsFromFile("{secret}")\n')
        extra = f"lua-config-file={lua}\n"
    directory = _recursor_config(area, jail, extra)
    argv = ["run", "--", recursor_bin, "--daemon=no", f"--config-dir={directory}"]
    proc = subprocess.Popen(
        jailshim_argv(*argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        start_new_session=True,
    )
    copy = jail / str(secret).lstrip("/")
    leaked = None  # what pdns, chrooted as the recursor is, reads of jailshim's copy
    try:
        deadline = time.monotonic() + HANG_S
        while proc.poll() is None and time.monotonic() < deadline and leaked is None:
            if copy.exists():
                leaked = _readable_in_jail_as("pdns", jail, str(secret))
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert leaked is None, f"pdns read {leaked!r} from jailshim's copy {copy}"
    assert proc.returncode == 78, err
    assert str(secret) in err and "pdns" in err, err
    assert not copy.exists() and not (jail / "dev").exists()


@pytest.mark.parametrize("hostile", ["fifo", "dofile-dev-zero"])
def test_recursor_lua_config_never_holds_jailshim(
    area: Path, recursor_bin: str, hostile: str
) -> None:
    """lua-config-file is read as text by root to find the trust-anchor files (the recursor's
    own dump does not open it): a FIFO there held jailshim in open() for ever, and a Lua file
    that dofile()s /dev/zero had it read without end. Now a FIFO or device is no text (the
    recursor's own checker judges the file), the run goes on at once."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    lua = area / "recursor.lua"
    if hostile == "fifo":
        os.mkfifo(lua)
    else:
        lua.write_text('dofile("/dev/zero")\n')
    directory = _recursor_config(area, jail, f"lua-config-file={lua}\n")
    started = time.monotonic()
    _jailshim_within(
        HANG_S, "run", "--dry-run", "--", recursor_bin, "--daemon=no", f"--config-dir={directory}"
    )
    assert time.monotonic() - started < HANG_S


@pytest.mark.parametrize("hint", ["/proc/version", "/x/../dev/zero", "/etc/.jailshim-new-x"])
def test_recursor_hint_file_jailshim_cannot_place_is_the_configs_error(
    area: Path, recursor_bin: str, hint: str
) -> None:
    """hint-file under /proc or /dev (or a name jailshim keeps for itself): the copy is refused
    as the config's error (78, naming the config), not as a `--file` the operator never gave
    (64), and nothing is made."""
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    directory = _recursor_config(area, jail, f"hint-file={hint}\n")
    result = _jailshim_within(
        HANG_S, "run", "--", recursor_bin, "--daemon=no", f"--config-dir={directory}"
    )
    assert result.code == 78, result.stderr
    assert "--file" not in result.error and str(directory) in result.error, result.error
    assert not (jail / "dev").exists()


# --- radvd: the jail's etc/passwd, read by root to compare radvd's user ---------------------


def test_radvd_never_reads_a_passwd_outside_the_jail_through_its_users_etc(area: Path) -> None:
    """radvd's user owns the jail (it can write its entries) and makes etc a symlink to a
    directory outside it: jailshim opened JAIL/etc/passwd with O_NOFOLLOW on the last name
    only, so root read OUTSIDE/passwd and took its uid and gid for the jail's. Inside the
    jail the link leads elsewhere; root follows no link the jail holds: no user found."""
    outside = area / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("radvd:x:4242:4343::/:/bin/false\n")
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    (jail / "etc").symlink_to(outside)
    assert radvd.jail_user(str(jail), "radvd") is None
    # the jail's own etc/passwd is still read
    (jail / "etc").unlink()
    (jail / "etc").mkdir()
    (jail / "etc/passwd").write_text("radvd:x:4242:4343::/:/bin/false\n")
    assert radvd.jail_user(str(jail), "radvd") == (4242, 4343)


@pytest.mark.parametrize("hostile", ["fifo", "symlink-to-dev-zero"])
def test_radvd_jail_passwd_that_is_no_file_never_holds_jailshim(area: Path, hostile: str) -> None:
    """The jail's user puts a FIFO (or a link to /dev/zero) at etc/passwd: root's read of it
    neither blocks nor reads without end (O_NONBLOCK, O_NOFOLLOW, a regular file only)."""
    jail = area / "jail"
    (jail / "etc").mkdir(parents=True)
    if hostile == "fifo":
        os.mkfifo(jail / "etc/passwd")
    else:
        (jail / "etc/passwd").symlink_to("/dev/zero")
    code = f"from jailshim.daemons import radvd; print(radvd.jail_user({str(jail)!r}, 'radvd'))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S, check=True
    )
    assert done.stdout.strip() == "None"


# --- vsftpd: secure_chroot_dir is the config author's ---------------------------------------


@pytest.mark.parametrize("directory", ["/", "/etc", "/var/lib", "/usr/share"])
def test_vsftpd_secure_chroot_dir_that_is_the_hosts_is_refused(
    area: Path, own_network: None, directory: str
) -> None:
    """secure_chroot_dir=/etc (any host directory): jailshim would make dev/ and log sockets
    there as root. 78 before anything is made, naming the directory."""
    need(os.access(VSFTPD, os.X_OK), "needs vsftpd (Debian package vsftpd)")
    conf = area / "vsftpd.conf"
    conf.write_text(f"listen=YES\nlisten_port={free_port()}\nsecure_chroot_dir={directory}\n")
    before = os.path.exists(os.path.join(directory, "dev/.jailshim-state.json"))
    result = _jailshim_within(HANG_S, "run", "--dry-run", "--", VSFTPD, str(conf))
    assert result.code == 78, result.stderr
    assert directory in result.error
    assert os.path.exists(os.path.join(directory, "dev/.jailshim-state.json")) == before


# --- openvpn: `config FILE` includes are read by root before anything -----------------------


def test_openvpn_config_include_fifo_never_holds_jailshim(area: Path, root: None) -> None:
    """The config's author writes `config /path/fifo`: openvpn.py's reader opened it with a
    blocking open() and jailshim, as root, waited for a writer for ever."""
    need(os.access(OPENVPN, os.X_OK), "needs openvpn (Debian package openvpn)")
    fifo = area / "more.conf"
    os.mkfifo(fifo)
    conf = area / "server.conf"
    conf.write_text(f"dev tun\nconfig {fifo}\n")
    result = _jailshim_within(HANG_S, "run", "--dry-run", "--", OPENVPN, "--config", str(conf))
    assert result.code == 78, result.stderr


@pytest.mark.parametrize("hostile", ["fifo", "dev-zero"])
def test_ntpsec_includefile_that_is_no_file_never_holds_jailshim(
    area: Path, root: None, hostile: str
) -> None:
    """`includefile` naming a FIFO or /dev/zero: ntpsec.py opens with O_NONBLOCK and reads
    only a regular file, so jailshim goes on (held)."""
    need(os.access(NTPD, os.X_OK), "needs ntpd (Debian package ntpsec)")
    target = area / "more.conf"
    if hostile == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    conf = area / "ntp.conf"
    conf.write_text(f"includefile {target}\nserver 127.0.0.1\n")
    _jailshim_within(
        HANG_S, "run", "--dry-run", "--", NTPD, "-n", "-c", str(conf), "-i", str(jail), "-u",
        "ntpsec",
    )  # fmt: skip


# --- pdns_server: include-dir's files, read again by jailshim after the server's dump --------

_IN_CLOSE_NOWRITE = 0x10


def _swap_after_first_read(watched: Path, replacement: Path) -> threading.Thread:
    """An attacker (the writer of include-dir) who renames ``replacement`` over ``watched``
    as soon as a reader has read it once and closed it (inotify), as a loop could."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    assert fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(watched), _IN_CLOSE_NOWRITE) >= 0

    def attacker() -> None:
        try:
            os.read(fd, 4096)  # the server's dump has read it
            os.rename(replacement, watched)
        finally:
            os.close(fd)

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    return thread


def test_pdns_server_include_file_swapped_for_a_fifo_after_the_dump_never_holds_jailshim(
    area: Path, root: None
) -> None:
    """The server's own `--config=diff` reads include-dir's x.conf (a regular file then);
    whoever can write include-dir renames a FIFO over it the moment the dump has closed it.
    pdns_server.py then reads the directory again for the backend settings the dump drops,
    with open(): jailshim, as root, waits for a writer for ever."""
    need(os.access(PDNS_SERVER, os.X_OK), "needs pdns_server (Debian package pdns-server)")
    include = area / "pdns.d"
    include.mkdir()
    (include / "x.conf").write_text("local-port=5300\n")
    os.mkfifo(include / ".fifo")
    (area / "pdns.conf").write_text(f"include-dir={include}\nlaunch=\n")
    attacker = _swap_after_first_read(include / "x.conf", include / ".fifo")
    result = _jailshim_within(
        HANG_S, "run", "--dry-run", "--", PDNS_SERVER, f"--config-dir={area}", "--guardian=no"
    )
    attacker.join(timeout=5)
    assert stat.S_ISFIFO(os.lstat(include / "x.conf").st_mode), "the attacker never swapped"
    assert result.code in (0, 78), result.stderr


def test_ntpsec_never_quotes_a_root_only_includefile_in_its_refusal(area: Path, root: None) -> None:
    """The config's author writes `includefile /etc/shadow`: jailshim reads it as root and
    refused with "'root:$y$…:20228:…' is no ntpd command" — the hash, in a log the author
    reads (a pod's, a CI job's). ntpd itself logs only the file, line and column."""
    need(os.access(NTPD, os.X_OK), "needs ntpd (Debian package ntpsec)")
    secret = area / "shadow"
    secret.write_text("root:$y$j9T$SECRET-HASH-xyz:20228:0:99999:7:::\n")
    secret.chmod(0o600)
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    conf = area / "ntp.conf"
    conf.write_text(f"includefile {secret}\nserver 127.0.0.1\n")
    result = _jailshim_within(
        HANG_S, "run", "--dry-run", "--", NTPD, "-n", "-c", str(conf), "-i", str(jail), "-u",
        "ntpsec",
    )  # fmt: skip
    assert result.code == 78, result.stderr
    assert str(secret) in result.error
    assert "SECRET-HASH" not in result.stdout + result.stderr


# --- privoxy: its config is read as root inside the jail, which its user owns (its home) ----


@pytest.mark.parametrize("link", ["absolute", "dot-dot", "fifo"])
def test_privoxy_config_in_the_jail_never_leads_root_out_of_it(area: Path, link: str) -> None:
    """privoxy's jail is its user's home, which that user owns: it makes etc/privoxy/config a
    link to a host file (absolute, or climbing with ..) or a FIFO. Root reads the config as
    the chrooted privoxy would: links resolve inside the jail, where there is no such file,
    and a FIFO is no file (None at once, never a wait)."""
    outside = area / "outside"
    outside.mkdir()
    (outside / "config").write_text("listen-address HOST-SECRET:8118\n")
    jail = area / "jail"
    (jail / "etc/privoxy").mkdir(parents=True)
    config = jail / "etc/privoxy/config"
    if link == "absolute":
        config.symlink_to(outside / "config")
    elif link == "dot-dot":
        config.symlink_to("../" * 12 + str(outside / "config").lstrip("/"))
    else:
        os.mkfifo(config)
    code = (
        "from jailshim.daemons import privoxy; "
        f"print(privoxy.read_in_jail({str(jail)!r}, '/etc/privoxy/config'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S, check=True
    )
    assert done.stdout.strip() == "None", done.stdout


# --- sshd: one Match block's ChrootDirectory must not stop every user's sshd ---------------


def test_sshd_still_starts_when_a_match_blocks_jail_is_a_host_directory(
    area: Path, own_network: None
) -> None:
    """The config's author gives one sftp user `ChrootDirectory /var/lib` (root's, 0755:
    sshd's own rule accepts it). jailshim must prepare nothing in /var/lib — and, as for a
    jail sshd itself would refuse, say so and still start sshd: a 78 locked every user out,
    admins on Debian's ssh.service included."""
    from tests.test_sshd import SSHD, Site

    need(os.access(SSHD, os.X_OK), "needs sshd (Debian package openssh-server)")
    match = "\nMatch User jsftp\n\tChrootDirectory /var/lib\n\tForceCommand internal-sftp\n"
    site = Site(area, free_port(), match)
    try:
        argv = jailshim_argv("run", "--", SSHD, "-D", "-f", str(site.config))
        proc = subprocess.Popen(
            site.wrap(argv, userns=False),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    finally:
        site.close()
    assert not os.path.exists("/var/lib/dev/.jailshim-state.json")
    assert '"event": "handover"' in err, err


# --- every adapter's own config file, named on its command line ----------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["haproxy", "-f", "{fifo}"],
        ["stunnel4", "{fifo}"],
        ["vsftpd", "{fifo}"],
        ["privoxy", "--no-daemon", "{fifo}"],
    ],
    ids=["haproxy", "stunnel", "vsftpd", "privoxy"],
)
def test_a_config_file_that_is_a_fifo_never_holds_jailshim(
    area: Path, root: None, command: list[str]
) -> None:
    """The config's author (a ConfigMap, a unit's argument) names a FIFO as the daemon's
    configuration: haproxy's, stunnel's, vsftpd's and privoxy's readers open()ed it blocking
    and jailshim, as root, waited for a writer for ever (found in the last read of this
    change). Now 78 at once, in one sentence naming the file; nothing is prepared."""
    need(shutil.which(command[0]) is not None, f"needs {command[0]}")
    fifo = area / "daemon.conf"
    os.mkfifo(fifo)
    jail = area / "jail"
    jail.mkdir(mode=0o755)
    argv = [word.format(fifo=fifo) for word in command]
    result = _jailshim_within(HANG_S, "run", "--chroot", str(jail), "--", *argv)
    assert result.code == 78, result.stderr
    assert str(fifo) in result.error, result.error
    assert not (jail / "dev").exists()
