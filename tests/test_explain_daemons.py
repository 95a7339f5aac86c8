"""explain on the daemons' own error lines (issue 30).

Each line comes from the real program where it is installed here (vsftpd, sshd, PowerDNS auth
and recursor, GNU cp, ntpd under the clock guard, glibc's own abort from a small C program in
tests/cdaemons), run in a network namespace the test made; the others (postfix, BIND up to
9.12, OpenSSL 1.0.x) are quoted as their sources print them, the source line cited. Every
family also gets a near miss — a line that looks alike but has another cause, or a good
outcome — which must not be explained as the failure.
"""

from __future__ import annotations

import ftplib
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from jailshim.explain import SIGNATURES, match
from tests.daemons import free_port, own_network, stop
from tests.handshake import EventReader
from tests.support import TESTS, clean_env, jailshim_argv, need, spawn
from tests.test_vsftpd import connect, vsftpd_bin, write_config

__all__ = ["own_network", "vsftpd_bin"]  # fixtures the tests here use

SYSTEM_PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
PDNS_SERVER = "/usr/sbin/pdns_server"
PDNS_RECURSOR = "/usr/sbin/pdns_recursor"

PDNS = "PowerDNS: cannot open its random source"
SSHD_CHROOT = "sshd: bad ownership or modes for chroot directory"
VSFTPD_MISSING = "vsftpd: secure_chroot_dir not found"
VSFTPD_WRITABLE = "vsftpd: refusing to run with writable root inside chroot()"
POSTFIX_TLS = "postfix: no entropy for TLS key generation"
BIND_ENTROPY = "BIND (9.12 and older): could not open entropy source"
OPENSSL_10 = "OpenSSL 1.0.x/1.1.0: PRNG not seeded"
CP_NODES = "unbound container image: cp cannot create the jail's device nodes"


def explained(text: str) -> tuple[int, str]:
    """`jailshim explain` on ``text`` (stdin), as a user pastes it: its exit code and output."""
    proc = subprocess.run(
        jailshim_argv("explain"),
        input=text,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


def names(lines: str) -> set[str]:
    return {sig.name for sig, _ in match(lines.splitlines())}


def assert_explained_as(text: str, name: str) -> str:
    code, out = explained(text)
    assert code == 0, out
    assert f"* {name}\n" in out, out
    return out


# ---- vsftpd: the OOPS lines its client reads ----------------------------------------------


def _oops(vsftpd: str, config: Path, port: int, login: bool) -> str:
    """vsftpd from ``config``; what the client is told (the 500 OOPS) on connect or login."""
    proc = spawn([vsftpd, str(config)])
    try:
        ftp = connect(port)
        try:
            if login:
                ftp.login()  # anonymous
            return ftp.getwelcome()  # no OOPS: the good banner
        except ftplib.error_perm as err:
            return str(err)
        finally:
            ftp.close()
    except ftplib.error_perm as err:  # the OOPS came in place of the banner
        return str(err)
    finally:
        stop(proc)


def test_vsftpd_missing_secure_chroot_dir_from_the_real_daemon(area: Path, vsftpd_bin: str) -> None:
    """A container whose /run is empty: secure_chroot_dir is missing and the client reads
    vsftpd's 500 OOPS in place of its banner (twoprocess.c drop_all_privs)."""
    port = free_port()
    config, jail = write_config(area, port)
    jail.rmdir()
    oops = _oops(vsftpd_bin, config, port, login=False)
    assert oops.startswith("500 OOPS: vsftpd: not found: directory given in 'secure_chroot_dir'")
    out = assert_explained_as(oops, VSFTPD_MISSING)
    assert VSFTPD_WRITABLE not in out
    assert "mkdir -p -m 0755" in out


def test_vsftpd_writable_root_from_the_real_daemon(area: Path, vsftpd_bin: str) -> None:
    """anon_root owned by ftp: after chroot and setuid vsftpd refuses the root it can write
    (secutil.c); the fix is the directory's mode or allow_writeable_chroot, not a jailshim
    jail, and explain says so."""
    port = free_port()
    config, _ = write_config(area, port)
    os.chown(area / "pub", pwd.getpwnam("ftp").pw_uid, -1)
    oops = _oops(vsftpd_bin, config, port, login=True)
    assert oops == "500 OOPS: vsftpd: refusing to run with writable root inside chroot()", oops
    out = assert_explained_as(oops, VSFTPD_WRITABLE)
    assert "allow_writeable_chroot=YES" in out and "chmod a-w" in out
    (sig,) = [s for s in SIGNATURES if s.name == VSFTPD_WRITABLE]
    assert "jailshim prepare" not in sig.fix and "jailshim run" not in sig.fix


def test_vsftpd_good_banner_and_another_oops_are_not_chroot_failures(
    area: Path, vsftpd_bin: str
) -> None:
    """Near misses: the banner of a vsftpd whose jail is sound, and an OOPS naming another
    setting (vsftpd's own words for a missing ftp_username)."""
    port = free_port()
    config, _ = write_config(area, port)
    banner = _oops(vsftpd_bin, config, port, login=True)
    assert banner.startswith("220 "), banner
    other = "500 OOPS: vsftpd: cannot locate user specified in 'ftp_username':nosuchuser"
    for line in (banner, other):
        assert not names(line) & {VSFTPD_MISSING, VSFTPD_WRITABLE}, line


# ---- sshd: safely_chroot's fatal line -------------------------------------------------------


@pytest.fixture
def sshd_keys(area: Path, root: None, own_network: None) -> Path:
    """Host key, a client key and its authorized_keys file below ``area``."""
    need(os.access(SSHD, os.X_OK), "needs sshd (Debian package openssh-server)")
    need(shutil.which("ssh") is not None, "needs ssh (Debian package openssh-client)")
    for name in ("hostkey", "id"):
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(area / name)]
        subprocess.run(keygen, check=True, capture_output=True, timeout=30)
    shutil.copy(area / "id.pub", area / "authorized_keys")
    return area


def _sshd_session(keys: Path, chroot: str, setup: str) -> str:
    """sshd (in a private mount namespace: a tmpfs on /run holds its privsep directory and
    ``setup``'s jails) answering one key login as root into ChrootDirectory ``chroot``: what
    sshd logged. With -e it logs to stderr, and the session child (session.c do_exec_no_pty,
    then do_setusercontext -> safely_chroot) has already put the session's pipes on its
    stderr: its fatal line reaches the client's stderr (syslog's auth.log otherwise)."""
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys}/hostkey\n"
        f"AuthorizedKeysFile {keys}/authorized_keys\n"
        # StrictModes covers the key file (in a pytest dir below /tmp), not the chroot check
        "StrictModes no\nPermitRootLogin prohibit-password\nUsePAM no\nPidFile none\n"
        f"LogLevel VERBOSE\nChrootDirectory {chroot}\n"
    )
    script = (
        "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && "
        f'{setup} exec {SSHD} -D -e -f "$1"'
    )
    sshd = spawn(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                  str(config)])  # fmt: skip
    try:
        client = [
            "ssh", "-F", "/dev/null", "-i", str(keys / "id"), "-p", str(port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "root@127.0.0.1", "true",
        ]  # fmt: skip
        for _ in range(50):  # until sshd listens
            session = subprocess.run(
                client, capture_output=True, text=True, timeout=30, check=False
            )
            if "Connection refused" not in session.stderr:
                break
            time.sleep(0.1)
    finally:
        _, stderr = stop(sshd)
    return stderr + session.stderr


def test_sshd_bad_ownership_both_variants_from_the_real_daemon(sshd_keys: Path) -> None:
    """A group-writable jail (the jail itself named) and a jail below /tmp (mode 1777: a
    "component" named): sshd's own fatal lines, each explained with the chown/chmod fix."""
    own = _sshd_session(sshd_keys, "/run/bad", "mkdir -m 0775 /run/bad &&")
    assert 'bad ownership or modes for chroot directory "/run/bad"' in own, own
    parent = _sshd_session(sshd_keys, str(sshd_keys), "")
    # pytest's directory lies below /tmp (mode 1777): a parent is named, not the jail
    assert 'bad ownership or modes for chroot directory component "/' in parent, parent
    for stderr in (own, parent):
        out = assert_explained_as(stderr, SSHD_CHROOT)
        assert "chown root" in out and "chmod go-w" in out
    (sig,) = [s for s in SIGNATURES if s.name == SSHD_CHROOT]
    assert "jailshim prepare" not in sig.fix and "jailshim run" not in sig.fix


def test_sshd_good_chroot_and_strictmodes_are_not_the_chroot_failure(sshd_keys: Path) -> None:
    """Near misses: sshd's verbose line for a sound jail, and StrictModes' refusal of a key
    file's directory (auth.c: another check with another fix)."""
    good = _sshd_session(sshd_keys, "/run/good", "mkdir -m 0755 /run/good &&")
    assert 'Changed root directory to "/run/good"' in good, good
    strict = "Authentication refused: bad ownership or modes for directory /home/alice/.ssh"
    for text in (good, strict):
        assert SSHD_CHROOT not in names(text), text


# ---- PowerDNS: its random source, auth and recursor -----------------------------------------


def _in_a_root_without_dev(argv: list[str], area: Path) -> str:
    """``argv`` in a private mount namespace whose /dev is an empty tmpfs (a jail or minimal
    image pdns is started in, with no dev/urandom): its output. It exits by itself."""
    script = 'mount -t tmpfs tmpfs /dev && exec "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=area,
        check=False,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_powerdns_auth_aborts_without_its_source(area: Path, own_network: None) -> None:
    """pdns_server 4.x with rng=urandom in a root without /dev/urandom: dns_random.cc throws
    "Cannot open /dev/urandom: …" and the server aborts (terminate … what(): …)."""
    need(os.access(PDNS_SERVER, os.X_OK), "needs pdns_server (Debian package pdns-server)")
    (area / "pdns.conf").write_text("")  # the stock settings, nothing from /etc
    output = _in_a_root_without_dev(
        [PDNS_SERVER, f"--config-dir={area}", "--launch=", "--guardian=no", "--daemon=no",
         "--rng=urandom", f"--socket-dir={area}", "--local-address=127.0.0.1",
         f"--local-port={free_port()}"],
        area,
    )  # fmt: skip
    assert "what():  Cannot open /dev/urandom: No such file or directory" in output, output
    out = assert_explained_as(output, PDNS)
    assert "before it chroots" in out


def test_powerdns_own_chroot_needs_no_device(area: Path, jail: Path, own_network: None) -> None:
    """Why the cause says "a root pdns was started in", not its own jail: pdns_server with
    rng=urandom and chroot= an empty jail opens the device before it chroots and runs on."""
    need(os.access(PDNS_SERVER, os.X_OK), "needs pdns_server (Debian package pdns-server)")
    (area / "pdns.conf").write_text("")  # the stock settings, nothing from /etc
    proc = spawn(
        [PDNS_SERVER, f"--config-dir={area}", "--launch=bind", "--guardian=no", "--daemon=no",
         "--rng=urandom", f"--chroot={jail}", "--socket-dir=/", "--local-address=127.0.0.1",
         f"--local-port={free_port()}"]
    )  # fmt: skip
    with EventReader(proc) as pdns:
        pdns.wait_for_text("Done launching threads", "pdns_server to start after chroot")
        assert os.readlink(f"/proc/{proc.pid}/root") == str(jail)
        _, rest = stop(proc)
    stderr = pdns.output()[1] + rest
    assert f"Chrooted to '{jail}'" in stderr and "Cannot open" not in stderr, stderr
    assert not (jail / "dev").exists()
    assert PDNS not in names(stderr)


def test_powerdns_recursor_falls_back_and_fails(area: Path, own_network: None) -> None:
    """pdns_recursor 4.8 (default rng=auto) with getrandom() denied by a seccomp filter, in a
    root without /dev/urandom: its own two lines, the fall-back and the fatal error."""
    need(os.access(PDNS_RECURSOR, os.X_OK), "needs pdns_recursor (Debian package pdns-recursor)")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, check=False
    )
    need(probe.returncode == 0, "needs Debian's python3-seccomp")
    (area / "recursor.conf").write_text("")  # the stock settings, nothing from /etc
    deny = [SYSTEM_PYTHON, str(TESTS / "seccomp_run.py"), "deny", "ENOSYS", "--"]
    output = _in_a_root_without_dev(
        [*deny, PDNS_RECURSOR, "--local-address=127.0.0.1", f"--local-port={free_port()}",
         f"--socket-dir={area}", "--daemon=no", f"--config-dir={area}"],
        area,
    )  # fmt: skip
    assert "getrandom() failed: Function not implemented, falling back to /dev/urandom" in output
    assert 'error="Cannot open /dev/urandom: No such file or directory"' in output, output
    lines = [ln for ln in output.splitlines() if "getrandom() failed" in ln or "Cannot" in ln]
    assert all(PDNS in names(ln) for ln in lines), lines  # each line alone is recognised
    assert_explained_as(output, PDNS)


def test_powerdns_normal_start_and_other_files_are_not_the_failure() -> None:
    """Near misses: the line pdns up to 4.1 prints at every start (randomhelper.cc seedRandom:
    L<<Logger::Warning<<"Reading random entropy from '"<<source<<"'"), and another file it
    cannot open."""
    for line in (
        "Jul 06 23:39:02 Reading random entropy from '/dev/urandom'",
        "Fatal error: Cannot open /etc/powerdns/recursor.conf: No such file or directory",
    ):
        assert PDNS not in names(line), line
    # the failure up to 4.1, as seedRandom prints it before exit(EXIT_FAILURE):
    # L<<Logger::Error<<"Unable to open source of random '"<<source<<"': "<<stringerror()
    old = (
        "Jul 06 23:39:02 Reading random entropy from '/dev/urandom'\n"
        "Jul 06 23:39:02 Unable to open source of random '/dev/urandom': No such file or "
        "directory\n"
    )
    assert_explained_as(old, PDNS)


# ---- GNU cp in the unbound image's entrypoint -----------------------------------------------


def test_unbound_image_cp_line_from_a_real_cp_without_cap_mknod(area: Path) -> None:
    """The image's `cp -a /dev/random /dev/urandom /dev/null DIR/` (MatthewVance/unbound-docker
    data/unbound.sh) run by root without CAP_MKNOD (dropped from its bounding set, as a runtime
    does): cp's own stderr, explained as the case jailshim's bind fallback is for."""
    dev = area / "dev"
    dev.mkdir()
    cp = subprocess.run(
        ["setpriv", "--bounding-set", "-mknod", "--inh-caps", "-mknod",
         "cp", "-a", "/dev/random", "/dev/urandom", "/dev/null", f"{dev}/"],
        capture_output=True, text=True, timeout=30, env=clean_env(LC_ALL="C"), check=False,
    )  # fmt: skip
    assert cp.returncode != 0 and not any(dev.iterdir())
    assert f"cannot create special file '{dev}/urandom': Operation not permitted" in cp.stderr
    out = assert_explained_as(cp.stderr, CP_NODES)
    assert "bind-mounts the host's nodes" in out and "SYS_ADMIN" in out


def test_cp_refused_for_another_reason_is_not_the_mknod_case(area: Path) -> None:
    """Near miss: root with CAP_MKNOD but without CAP_DAC_OVERRIDE copying into a directory
    another user owns (EACCES: the directory's permission, not mknod)."""
    dev = area / "dev"
    dev.mkdir(mode=0o755)
    os.chown(dev, 65534, 65534)
    cp = subprocess.run(
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
         "--inh-caps", "-dac_override,-dac_read_search",
         "cp", "-a", "/dev/urandom", f"{dev}/"],
        capture_output=True, text=True, timeout=30, env=clean_env(LC_ALL="C"), check=False,
    )  # fmt: skip
    assert f"cannot create special file '{dev}/urandom': Permission denied" in cp.stderr, cp
    assert CP_NODES not in names(cp.stderr)


# ---- quoted from their sources: postfix, BIND <= 9.12, OpenSSL 1.0.x ------------------------

# postfix src/tls/tls_server.c tls_server_init:
#     msg_warn("no entropy for TLS key generation: disabling TLS support");
# preceded by tls_mgr.c's warnings when tlsmgr cannot be reached.
POSTFIX_LINES = (
    "postfix/smtpd[8694]: warning: connect to private/tlsmgr: Connection refused\n"
    "postfix/smtpd[8694]: warning: problem talking to server private/tlsmgr: Connection "
    "refused\n"
    "postfix/smtpd[8694]: warning: no entropy for TLS key generation: disabling TLS support\n"
)
# bind9 bin/named/server.c (9.x up to 9.12), ISC_LOG_INFO:
#     "could not open entropy source %s: %s", randomdev, isc_result_totext(result)
#     "using pre-chroot entropy source %s", PATH_RANDOMDEV
BIND_LINES = (
    "named[4705]: could not open entropy source /dev/random: file not found\n"
    "named[4705]: using pre-chroot entropy source /dev/random\n"
)
# OpenSSL 1.0.x crypto/rand/md_rand.c ssleay_rand_bytes:
#     RANDerr(RAND_F_SSLEAY_RAND_BYTES, RAND_R_PRNG_NOT_SEEDED);
#     ERR_add_error_data(1, "You need to read the OpenSSL FAQ, http://www.openssl.org/support/faq.html");
# rand_err.c: ERR_PACK(36, 100, 100) = 24064064, "SSLEAY_RAND_BYTES", "PRNG not seeded"
OPENSSL_10_LINE = (
    "140250304546464:error:24064064:random number generator:SSLEAY_RAND_BYTES:PRNG not "
    "seeded:md_rand.c:549:You need to read the OpenSSL FAQ, "
    "http://www.openssl.org/support/faq.html\n"
)


@pytest.mark.parametrize(
    ("text", "name", "says"),
    [
        (POSTFIX_LINES, POSTFIX_TLS, "tlsmgr unix - - y 1000? 1 tlsmgr"),
        (BIND_LINES, BIND_ENTROPY, "BIND 9.13 and later"),
        (OPENSSL_10_LINE, OPENSSL_10, "then restart the daemon"),
    ],
)
def test_quoted_source_lines_are_explained(text: str, name: str, says: str) -> None:
    out = assert_explained_as(text, name)
    assert says in out
    assert names(text) == {name}  # that signature, no other


@pytest.mark.parametrize(
    ("line", "name"),
    [
        # tls_server.c: an unsupported digest, another reason TLS is off
        ("postfix/smtpd[1]: warning: disabling TLS support", POSTFIX_TLS),
        # Rust's getrandom users: panic message, not BIND's
        ("thread 'main' panicked at 'Could not open entropy source!'", BIND_ENTROPY),
        ("named[4705]: using pre-chroot entropy source /dev/random", BIND_ENTROPY),
        # OpenSSL 1.1.1's DRBG: its own signature, not 1.0's
        (
            "140:error:2406C06E:random number generator:RAND_DRBG_instantiate:error retrieving "
            "entropy:crypto/rand/drbg_lib.c:221:",
            OPENSSL_10,
        ),
    ],
)
def test_quoted_near_misses_are_not_matched(line: str, name: str) -> None:
    assert name not in names(line)


def test_fixes_never_advertise_jailshim_where_it_does_not_help() -> None:
    """sshd's ownership rule, vsftpd's writable root and postfix's tlsmgr are not fixed by a
    jail: their fixes name the real step and no jailshim command."""
    for sig in SIGNATURES:
        if sig.name in (SSHD_CHROOT, VSFTPD_WRITABLE, POSTFIX_TLS):
            assert "jailshim prepare" not in sig.fix and "jailshim run" not in sig.fix, sig.name


def test_no_known_signature_lists_the_daemons() -> None:
    code, out = explained("all good\n")
    assert code == 1
    for word in ("PowerDNS", "BIND", "sshd", "vsftpd", "unbound", "OpenSSL 1.0", "libgcc_s", "NTS"):
        assert word in out, word


# ---- glibc: libgcc_s.so.1 loaded after the chroot (any threaded daemon) -------------------

LIBGCC = "glibc: libgcc_s.so.1 loaded after chroot, missing in the jail"
NTS_INIT2 = "ntpsec: NTS certificate or key could not be loaded after the chroot"
EXIT_THREAD = TESTS / "cdaemons" / "exit_thread.c"
UNWINDER = "/lib/x86_64-linux-gnu/libgcc_s.so.1"  # the path the fix names


@pytest.fixture
def exit_thread(area: Path) -> str:
    """tests/cdaemons/exit_thread.c built here: it chroots, then a thread ends with
    pthread_exit() (or is cancelled), as ntpd's DNS thread does after its chroot."""
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc)")
    need(os.path.isfile(UNWINDER), f"needs {UNWINDER} (Debian package libgcc-s1)")
    binary = area / "exit_thread"
    cc = subprocess.run(
        ["gcc", "-O1", "-Wall", "-Werror", "-pthread", "-o", str(binary), str(EXIT_THREAD)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cc.returncode == 0, cc.stderr
    return str(binary)


def _in_jail(binary: str, jail: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, str(jail), mode], capture_output=True, text=True, timeout=30, check=False
    )


def test_libgcc_lines_from_a_real_thread_after_chroot(area: Path, exit_thread: str) -> None:
    """In an empty jail glibc's lazy dlopen of libgcc_s.so.1 fails: pthread_exit() and
    pthread_cancel() each print their line and abort; both are explained. The fix is true:
    `jailshim prepare --file /lib/x86_64-linux-gnu/libgcc_s.so.1` and the same program runs
    to its end in that jail."""
    jail = area / "jail"
    jail.mkdir()
    for mode, line in (
        ("exit", "libgcc_s.so.1 must be installed for pthread_exit to work"),
        ("cancel", "libgcc_s.so.1 must be installed for pthread_cancel to work"),
    ):
        died = _in_jail(exit_thread, jail, mode)
        assert died.returncode == -6, died  # SIGABRT: the whole process
        assert line in died.stderr, died.stderr
        out = assert_explained_as(died.stderr, LIBGCC)
        assert f"--file {UNWINDER}" in out and "jailshim run -- ntpd" in out
        assert names(died.stderr) == {LIBGCC}
    prepared = subprocess.run(
        jailshim_argv("prepare", "--chroot", str(jail), "--user", "nobody", "--file", UNWINDER),
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    try:
        for mode, said in (("exit", "thread exited"), ("cancel", "thread cancelled")):
            lived = _in_jail(exit_thread, jail, mode)
            assert (lived.returncode, lived.stdout.strip()) == (0, said), lived
    finally:
        torn = subprocess.run(
            jailshim_argv("teardown", "--chroot", str(jail)),
            capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
        )  # fmt: skip
    assert torn.returncode == 0, torn.stderr
    assert not (jail / UNWINDER.lstrip("/")).exists()


def test_libgcc_near_misses_are_not_the_lazy_load(area: Path, exit_thread: str) -> None:
    """A jail with the library only in lib64 still aborts (the loader never looks there: the
    fix's path is the right one); the loader's own "cannot open shared object file" for the
    library (real: the program's dlopen in an empty jail) and a good run are not the line."""
    jail = area / "jail"
    (jail / "lib64").mkdir(parents=True)
    (jail / "lib64/libgcc_s.so.1").write_bytes(Path(UNWINDER).read_bytes())
    assert _in_jail(exit_thread, jail, "exit").returncode == -6
    (jail / "lib64/libgcc_s.so.1").unlink()
    missing = _in_jail(exit_thread, jail, "dlopen")
    assert "libgcc_s.so.1: cannot open shared object file" in missing.stdout, missing
    assert LIBGCC not in names(missing.stdout)
    (jail / "lib/x86_64-linux-gnu").mkdir(parents=True)
    (jail / UNWINDER.lstrip("/")).write_bytes(Path(UNWINDER).read_bytes())
    good = _in_jail(exit_thread, jail, "dlopen")
    assert good.stdout.strip() == f"loaded {UNWINDER}", good
    assert LIBGCC not in names(good.stdout + _in_jail(exit_thread, jail, "exit").stdout)


# ---- ntpsec: NTS certificate and key after the chroot ---------------------------------------


def test_ntpd_nts_init2_line_from_the_real_daemon(area: Path, own_network: None) -> None:
    """ntpd (`nts enable`, -u ntpsec -i JAIL, under the clock guard) in a jail without its
    certificate: "NTSs: can't stat certificate (chain) from …" then "NTS: troubles during
    init2.  Bailing." and exit 1 — explained; with the certificate in the jail but the key
    root's 0600 (unreadable by ntpsec after the drop), "can't load private key" and the same
    line. Near misses: the good lines of a start that loaded both, and nts_init's "troubles
    during init." (before the chroot, another cause)."""
    from tests.daemons import make_certificate
    from tests.test_ntpsec import GUARD, NTPD, host_clock_untouched

    need(os.access(NTPD, os.X_OK), "needs ntpd (Debian package ntpsec)")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, check=False
    )
    need(probe.returncode == 0, "needs python3-seccomp for the clock guard")
    make_certificate(area)  # area/cert.pem, area/key.pem
    config = area / "ntp.conf"
    config.write_text(
        f"restrict 127.0.0.1\nnts cert {area}/cert.pem\nnts key {area}/key.pem\nnts enable\n"
        "disable ntp\ndisable kernel\n"
    )
    jail = area / "jail"
    jail.mkdir()
    argv = [*GUARD, NTPD, "-n", "-c", str(config), "-u", "ntpsec:ntpsec", "-i", str(jail)]

    def bails() -> str:
        with host_clock_untouched():
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1, done.stderr
        assert "NTS: troubles during init2.  Bailing." in done.stderr, done.stderr
        return done.stderr

    missing = bails()
    assert f"NTSs: can't stat certificate (chain) from {area}/cert.pem" in missing, missing
    out = assert_explained_as(missing, NTS_INIT2)
    assert "readable by ntpd's user" in out and "refuses (78)" in out
    inside = Path(f"{jail}{area}")
    inside.mkdir(parents=True)
    for name in ("cert.pem", "key.pem"):
        (inside / name).write_bytes((area / name).read_bytes())
    (inside / "key.pem").chmod(0o600)  # root's: ntpd has dropped to ntpsec when it loads it
    unreadable = bails()
    assert f"NTSs: can't load private key from {area}/key.pem" in unreadable, unreadable
    assert NTS_INIT2 in names(unreadable)
    good = (
        f"ntpd[1]: NTSs: loaded certificate (chain) from {area}/cert.pem\n"
        f"ntpd[1]: NTSs: loaded private key from {area}/key.pem\n"
        "ntpd[1]: NTSs: Private Key OK\n"
        # ntpsec ntpd/nts.c nts_init, before the chroot: another cause
        "ntpd[1]: NTS: troubles during init.  Bailing.\n"
    )
    assert NTS_INIT2 not in names(good)
