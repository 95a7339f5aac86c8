"""The daemon's own crypto library, probed: OpenSSL 1.1.1 (from a PyPI wheel), OpenSSL 3 and
GnuTLS (Debian's), through small C daemons (tests/cdaemons) that seed, chroot, drop privileges
and reseed on SIGUSR1, with getrandom() denied and OpenSSL's "seeded" shm marker set."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jailshim.doctor import after_prepare
from jailshim.explain import match
from jailshim.verify import cryptolib
from jailshim.verify.cryptolib import CryptoLib
from tests import wheels
from tests.daemons import free_port, stop
from tests.support import TESTS, clean_env, need, run

SYSTEM_PYTHON = "/usr/bin/python3"
DENIED = [
    "unshare",
    "--ipc",
    SYSTEM_PYTHON,
    str(TESTS / "seccomp_run.py"),
    "deny",
    "ENOSYS",
    "--shm-marker",
    "--",
]
SOURCE = TESTS / "cdaemons" / "reseed_daemon.c"
WHEEL = "psycopg2-binary==2.9.5"
LIB111 = "OpenSSL 1.1.1r"
ERR111 = "error:2406E06E:random number generator:RAND_DRBG_reseed:error retrieving entropy"


# ---- pure decisions -----------------------------------------------------------------------


def test_names_recognised_vendored_and_versioned() -> None:
    assert cryptolib.classify("libcrypto-2ade47cd.so.1.1") == "OpenSSL"
    assert cryptolib.classify("libcrypto.so.3") == "OpenSSL"
    assert cryptolib.classify("libgnutls.so.30") == "GnuTLS"
    assert cryptolib.classify("libwolfssl.so.35") == "wolfSSL"
    assert cryptolib.classify("libmbedcrypto.so.7") == "Mbed TLS"
    assert cryptolib.classify("libssl.so.3") == ""  # its reseed lives in libcrypto
    assert cryptolib.classify("libcryptsetup.so.12") == ""
    assert cryptolib.classify("libgnutls-dane.so.0") == ""


def test_loader_list_and_maps_parsed() -> None:
    listed = cryptolib.from_loader_list(
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibcrypto-2ade47cd.so.1.1 => /opt/d/libcrypto-2ade47cd.so.1.1 (0x00007f10)\n"
        "\tlibgnutls.so.30 => not found\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f20)\n"
    )
    assert listed == [
        CryptoLib("OpenSSL", "libcrypto-2ade47cd.so.1.1", "/opt/d/libcrypto-2ade47cd.so.1.1")
    ]
    mapped = cryptolib.mapped_files(
        "7f10-7f20 r--p 00000000 fe:00 42  /opt/d/libcrypto-2ade47cd.so.1.1\n"
        "7f20-7f30 r-xp 00001000 fe:00 42  /opt/d/libcrypto-2ade47cd.so.1.1\n"
        "7f30-7f40 r--p 00000000 fe:00 43  /usr/lib/libgnutls.so.30.34.3 (deleted)\n"
        "7f40-7f50 rw-p 00000000 00:00 0 \n"
        "7f50-7f60 r--p 00000000 fe:00 42  /opt/d/another-name-of-the-same-file\n"
    )
    assert cryptolib.missing_in_loader_list(
        "\tlibgnutls.so.30 => not found\n/opt/d: error while loading shared libraries: "
        "libcrypto-2ade47cd.so.1.1: cannot open shared object file: No such file or directory\n"
    ) == ["libgnutls.so.30", "libcrypto-2ade47cd.so.1.1"]
    assert [(m.path, m.inode, m.range) for m in mapped] == [
        ("/opt/d/libcrypto-2ade47cd.so.1.1", 42, "7f10-7f20"),
        ("/usr/lib/libgnutls.so.30.34.3", 43, "7f30-7f40"),
    ]


def test_restart_advice_is_one_table_for_doctor_and_explain() -> None:
    """1.1.1, 3.x and GnuTLS recover by themselves (measured below); anything else: restart."""
    assert not cryptolib.recovery("OpenSSL", "OpenSSL 1.1.1r  11 Oct 2022").restart
    assert not cryptolib.recovery("OpenSSL", "OpenSSL 3.0.19 27 Jan 2026").restart
    assert not cryptolib.recovery("GnuTLS", "GnuTLS 3.7.9").restart
    assert cryptolib.recovery("OpenSSL", "OpenSSL 1.0.2u  20 Dec 2019").restart
    assert cryptolib.recovery("wolfSSL", "").restart
    lib111 = CryptoLib("OpenSSL", "libcrypto-2ade47cd.so.1.1", "/x", "OpenSSL 1.1.1r  11 Oct 2022")
    assert after_prepare((lib111,)).startswith("takes effect at once, no restart needed")
    wolf = CryptoLib("wolfSSL", "libwolfssl.so.35", "/y")
    assert after_prepare((lib111, wolf)).startswith("then restart the daemon: ")
    assert cryptolib.version_in(b"\0OpenSSL x\0OpenSSL 1.1.1r  11 Oct 2022\0") == (
        "OpenSSL 1.1.1r  11 Oct 2022"
    )
    for name in ("OpenSSL 1.1.1", "OpenSSL 3", "GnuTLS: randomness"):
        fix = next(m[0].fix for m in match([_LINES[name]]) if m[0].name.startswith(name))
        assert "no restart needed" in fix and "then restart" not in fix, fix


_LINES = {
    "OpenSSL 1.1.1": f"140:{ERR111}:crypto/rand/drbg_lib.c:297:",
    "OpenSSL 3": "error:1C8000BD:Provider routines::error retrieving entropy",
    "GnuTLS: randomness": "Error in the system's randomness device.",
}


# ---- the test daemons ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three test daemons: OpenSSL 1.1.1r out of psycopg2-binary's wheel (rpath $ORIGIN,
    next to its library), OpenSSL 3 and GnuTLS from Debian."""
    need(os.geteuid() == 0, "needs root: chroot and privilege drop")
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc)")
    need(shutil.which("unshare") is not None, "needs unshare(1)")
    seccomp = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, check=False
    )
    need(seccomp.returncode == 0, "needs Debian's python3-seccomp")
    top = tmp_path_factory.mktemp("cdaemons")
    top.chmod(0o755)
    wheel = wheels.cached(WHEEL)  # bootstrap's download: no test reaches the index
    need(wheel is not None, wheels.missing(WHEEL))
    assert wheel is not None
    with zipfile.ZipFile(wheel) as z:
        (member,) = [n for n in z.namelist() if n.split("/")[-1].startswith("libcrypto-")]
        lib111 = top / member.split("/")[-1]
        lib111.write_bytes(z.read(member))
    out = {}
    for api, lib in (
        ("OSSL11", f"-l:{lib111.name}"),
        ("OSSL3", "-l:libcrypto.so.3"),
        ("GNUTLS", "-l:libgnutls.so.30"),
    ):
        out[api] = top / f"reseed_{api.lower()}"
        cc = subprocess.run(
            ["gcc", "-O1", "-Wall", "-Werror", f"-DAPI_{api}", "-o", str(out[api]), str(SOURCE),
             f"-L{top}", lib, "-Wl,-rpath,$ORIGIN"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert cc.returncode == 0, cc.stderr
    # one daemon on two libraries: OpenSSL 1.1.1 and GnuTLS (as one linking libssl and GnuTLS)
    out["BOTH"] = top / "reseed_both"
    cc = subprocess.run(
        ["gcc", "-O1", "-Wall", "-Werror", "-DAPI_OSSL11", "-o", str(out["BOTH"]), str(SOURCE),
         f"-L{top}", f"-l:{lib111.name}", "-Wl,--no-as-needed", "-l:libgnutls.so.30",
         "-Wl,-rpath,$ORIGIN"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cc.returncode == 0, cc.stderr
    out["lib111"] = lib111
    return out


class Daemon:
    """A test daemon started with getrandom() denied, chrooted into ``jail`` as nobody."""

    def __init__(self, binary: Path, jail: Path, via: list[str] | None = None) -> None:
        argv = [*DENIED, *(via or []), str(binary), str(jail), "65534", "65534"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        assert self.line() == "seed ok"
        assert self.line() == "jailed ok"

    def line(self, timeout: float = 30.0) -> str:
        """The daemon's next output line (read from the fd: a buffered reader would keep a
        second line where select cannot see it)."""
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            chunk = os.read(self.fd, 4096) if ready else b""
            if not chunk:
                raise AssertionError(f"no output from the daemon: {stop_bytes(self.proc)}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().strip()

    def reseed(self) -> str:
        os.kill(self.proc.pid, signal.SIGUSR1)
        return self.line()


def stop_bytes(proc: subprocess.Popen[bytes]) -> str:
    """Stop a daemon this test started, by PID; its stderr."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=15)
    return (err or b"").decode(errors="replace")


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for d in started:
            stop_bytes(d.proc)


def _findings(result_events: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(e["check"]): e for e in result_events if e["event"] == "check"}


# ---- OpenSSL 1.1.1 ------------------------------------------------------------------------


def test_openssl111_check_fails_in_empty_jail_with_its_own_error_then_passes(
    jail: Path, built: dict[str, Path]
) -> None:
    """`check -- DAEMON`: 1.1.1's master DRBG, not the host's OpenSSL 3, and 1.1.1's error."""
    daemon = built["OSSL11"]
    failed = run("check", "--chroot", str(jail), "--user", "nobody", "--timeout", "0.3",
                 "--", str(daemon), wrap=DENIED)  # fmt: skip
    assert failed.code == 69
    reseed = _findings(failed.events)[f"{LIB111} reseed"]
    assert reseed["ok"] is False
    assert ERR111 in str(reseed["detail"])
    assert f"libcrypto-2ade47cd.so.1.1 ({LIB111}" in str(reseed["detail"])
    assert str(built["lib111"]) in str(reseed["detail"])
    assert "OpenSSL reseed" not in _findings(failed.events)  # the host's library is not probed
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    passed = run("check", "--chroot", str(jail), "--user", "nobody", "--", str(daemon), wrap=DENIED)
    assert passed.code == 0, passed.stderr
    assert "master DRBG reseeded" in str(_findings(passed.events)[f"{LIB111} reseed"]["detail"])


def test_openssl111_run_hands_over_and_the_daemons_reseed_succeeds(
    jail: Path, built: dict[str, Path], daemons: list[Daemon]
) -> None:
    """`run -- DAEMON`: prepared, probed with 1.1.1, exec'd; the daemon's own reseed works."""
    via = ["-m", "jailshim", "run", "--chroot", str(jail), "--user", "nobody", "--"]
    daemons.append(Daemon(built["OSSL11"], jail, [sys.executable, *via]))
    assert daemons[0].reseed() == "reseed ok"


def test_openssl111_doctor_then_prepare_on_the_live_jail_recovers_without_restart(
    jail: Path, built: dict[str, Path], daemons: list[Daemon]
) -> None:
    """doctor names the vendored 1.1.1 and says it will fail; the daemon does fail; after
    prepare its next reseed works (its DRBG re-instantiates), and doctor says safe: doctor and
    explain both say no restart is needed."""
    daemon = Daemon(built["OSSL11"], jail)
    daemons.append(daemon)
    pid = str(daemon.proc.pid)
    broken = run("doctor", "--pid", pid, "--read-filter")
    assert broken.code == 69
    assert broken.named("doctor.daemon")[0]["libraries"] == [
        f"libcrypto-2ade47cd.so.1.1 ({LIB111})"
    ]
    assert broken.error.startswith("will fail at its next reseed: getrandom() fails with ENOSYS")
    assert "OpenSSL 1.1.1d-1.1.1w reads dev/urandom and the jail has none" in broken.error
    assert "no restart needed" in broken.error
    failure = daemon.reseed()
    assert failure == f"reseed failed: {ERR111}", failure
    (sig, _), *_ = match([failure])
    assert "no restart needed" in sig.fix
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    assert daemon.reseed() == "reseed ok"
    fixed = run("doctor", "--pid", pid, "--read-filter")
    assert fixed.code == 0, fixed.stderr
    assert fixed.named("doctor.verdict")[0]["verdict"].startswith("safe")
    assert _findings(fixed.events)[f"{LIB111} reseed"]["ok"] is True


# ---- OpenSSL 3 ----------------------------------------------------------------------------


def test_openssl3_daemon_recovers_after_prepare_without_restart(
    jail: Path, built: dict[str, Path], daemons: list[Daemon]
) -> None:
    """The measurement behind recovery() for 3.x: fails in the empty jail, then works."""
    daemon = Daemon(built["OSSL3"], jail)
    daemons.append(daemon)
    assert "error retrieving entropy" in daemon.reseed()
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    assert daemon.reseed() == "reseed ok"


def test_haproxy_check_and_doctor_name_openssl3(
    own_network: None, area: Path, jail: Path, haproxy_bin: str
) -> None:
    """haproxy: its libcrypto.so.3 is probed under its version; doctor names it; prepare fixes."""
    failed = run("check", "--chroot", str(jail), "--user", "nobody", "--timeout", "0.3",
                 "--", haproxy_bin, wrap=DENIED)  # fmt: skip
    assert failed.code == 69
    (name,) = [c for c in _findings(failed.events) if c.endswith(" reseed")]
    assert name.startswith("OpenSSL 3.")
    assert "libcrypto.so.3 (OpenSSL 3." in str(_findings(failed.events)[name]["detail"])
    assert "error retrieving entropy" in str(_findings(failed.events)[name]["detail"])
    cfg = area / "h.cfg"
    cfg.write_text(
        f"global\n    chroot {jail}\n    user nobody\n    group nogroup\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        f"    timeout server 1s\nfrontend f\n    bind 127.0.0.1:{free_port()}\n"
        "    default_backend b\n"
        "backend b\n    server s 127.0.0.1:9\n"
    )
    proc = subprocess.Popen([*DENIED, haproxy_bin, "-f", str(cfg), "-db"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for _ in range(200):
            if proc.poll() is not None or os.readlink(f"/proc/{proc.pid}/root") != "/":
                break
            select.select([], [], [], 0.05)
        broken = run("doctor", "--pid", str(proc.pid), "--read-filter")
        assert broken.code == 69, broken.stderr
        libs = broken.named("doctor.daemon")[0]["libraries"]
        assert any(lib.startswith("libcrypto.so.3 (OpenSSL 3.") for lib in libs), libs
        # haproxy's OpenSSL 3 keeps the device fd it opened before chroot: fragile, not failed
        assert broken.error.startswith("safe now, fragile:"), broken.error
        assert "through the fd it kept before chroot" in broken.error
        assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
        fixed = run("doctor", "--pid", str(proc.pid), "--read-filter")
        assert fixed.code == 0, fixed.stderr
    finally:
        stop(proc)


# ---- GnuTLS -------------------------------------------------------------------------------


def test_gnutls_check_fails_then_passes_and_strace_shows_dev_urandom_opened(
    area: Path, jail: Path, built: dict[str, Path]
) -> None:
    """GnuTLS: -342 in the empty jail; after prepare it passes, and strace shows the probe,
    after chroot, opening dev/urandom the way GnuTLS does (plain O_RDONLY, unlike jailshim's
    own device check) because getrandom() answered ENOSYS."""
    need(shutil.which("strace") is not None, "needs strace")
    daemon = str(built["GNUTLS"])
    failed = run("check", "--chroot", str(jail), "--user", "nobody", "--timeout", "0.3",
                 "--", daemon, wrap=DENIED)  # fmt: skip
    assert failed.code == 69
    (name,) = [c for c in _findings(failed.events) if c.endswith(" reseed")]
    assert name.startswith("GnuTLS 3.")
    assert "(-342)" in str(_findings(failed.events)[name]["detail"])
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    trace = area / "strace.txt"
    traced = [*DENIED, "strace", "-f", "-o", str(trace), "-e", "trace=chroot,openat,getrandom"]
    passed = run("check", "--chroot", str(jail), "--user", "nobody", "--", daemon, wrap=traced)
    assert passed.code == 0, passed.stderr
    assert _findings(passed.events)[name]["ok"] is True
    lines = trace.read_text().splitlines()
    chroot_at = next(i for i, line in enumerate(lines) if f'chroot("{jail}")' in line)
    probe_pid = lines[chroot_at].split()[0]
    assert any("getrandom(" in line and "ENOSYS" in line for line in lines)
    gnutls_opens = [
        line for line in lines[chroot_at:]
        if line.startswith(probe_pid) and 'openat(AT_FDCWD, "/dev/urandom", O_RDONLY) = ' in line
    ]  # fmt: skip
    assert gnutls_opens and not gnutls_opens[0].endswith(("ENOENT (No such file or directory)",))


def test_gnutls_daemon_doctor_and_recovery(
    jail: Path, built: dict[str, Path], daemons: list[Daemon]
) -> None:
    """doctor names libgnutls and says it fails; the daemon fails; after prepare it recovers."""
    daemon = Daemon(built["GNUTLS"], jail)
    daemons.append(daemon)
    pid = str(daemon.proc.pid)
    broken = run("doctor", "--pid", pid, "--read-filter")
    assert broken.code == 69
    assert any(
        lib.startswith("libgnutls.so.30") for lib in broken.named("doctor.daemon")[0]["libraries"]
    )
    assert broken.error.startswith("will fail at its next reseed: getrandom() fails with ENOSYS")
    assert "GnuTLS reads dev/urandom and the jail has none" in broken.error
    assert "no restart needed" in broken.error
    failure = daemon.reseed()
    assert "(-342)" in failure
    assert "no restart needed" in match([failure])[0][0].fix
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    assert daemon.reseed() == "reseed ok"
    assert run("doctor", "--pid", pid, "--read-filter").code == 0


def test_ld_library_path_is_honoured_as_the_loader_would(
    area: Path, jail: Path, built: dict[str, Path]
) -> None:
    """A daemon built without an rpath finds its libcrypto 1.1 only through LD_LIBRARY_PATH:
    with it, that library is probed; without it, the loader finds none, and check says so."""
    binary = area / "norpath"
    cc = subprocess.run(
        ["gcc", "-DAPI_OSSL11", "-o", str(binary), str(SOURCE), f"-L{built['lib111'].parent}",
         f"-l:{built['lib111'].name}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cc.returncode == 0, cc.stderr
    argv = ("check", "--chroot", str(jail), "--timeout", "0.3", "--", str(binary))
    found = run(*argv, env=clean_env(LD_LIBRARY_PATH=str(built["lib111"].parent)))
    assert f"{LIB111} reseed" in _findings(found.events)
    lost = run(*argv)
    assert f"{LIB111} reseed" not in _findings(lost.events)
    note = str(_findings(lost.events)["crypto library"]["detail"])
    assert "the loader finds no libcrypto-2ade47cd.so.1.1" in note, note


def test_two_libraries_in_one_daemon_are_each_probed(jail: Path, built: dict[str, Path]) -> None:
    """OpenSSL 1.1.1 and GnuTLS in one daemon: one finding each, failing, then passing."""
    argv = ("check", "--chroot", str(jail), "--user", "nobody", "--timeout", "0.3", "--")
    failed = run(*argv, str(built["BOTH"]), wrap=DENIED)
    seen = {c: f for c, f in _findings(failed.events).items() if c.endswith(" reseed")}
    gnutls, openssl = sorted(seen)
    assert gnutls.startswith("GnuTLS 3.") and openssl == f"{LIB111} reseed", seen
    assert not any(f["ok"] for f in seen.values())
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    passed = run(*argv, str(built["BOTH"]), wrap=DENIED)
    assert passed.code == 0, passed.stderr
    assert len([c for c in _findings(passed.events) if c.endswith(" reseed")]) == 2


# ---- overrides and what cannot be probed --------------------------------------------------


def test_crypto_lib_overrides_and_bad_path_is_usage(jail: Path, built: dict[str, Path]) -> None:
    """--crypto-lib wins over COMMAND's libraries; a path that is no file is exit 64."""
    result = run("check", "--chroot", str(jail), "--timeout", "0.3", "--crypto-lib",
                 str(built["lib111"]), "--", "/usr/sbin/haproxy", wrap=DENIED)  # fmt: skip
    names = [c for c in _findings(result.events) if c.endswith(" reseed")]
    assert names == [f"{LIB111} reseed"]
    bad = run("check", "--chroot", str(jail), "--crypto-lib", str(jail / "nope.so"))
    assert bad.code == 64 and "--crypto-lib" in bad.error
    stray = run("check", "--chroot", str(jail), "haproxy")
    assert stray.code == 64 and "give the daemon after --" in stray.error


def test_static_openssl_is_named_and_reported_not_probeable(
    area: Path, jail: Path, built: dict[str, Path]
) -> None:
    """A statically linked binary carrying OpenSSL's version string: named, not probed."""
    src = area / "static.c"
    src.write_text(
        'const char v[] = "OpenSSL 1.1.1w  11 Sep 2023";\nint main(void) { return v[0] == 0; }\n'
    )
    cc = subprocess.run(["gcc", "-static", "-o", str(area / "static"), str(src)],
                        capture_output=True, text=True, check=False)  # fmt: skip
    need(cc.returncode == 0, f"needs a static libc (libc6-dev): {cc.stderr[-200:]}")
    prepared = run("prepare", "--chroot", str(jail), "--no-verify")
    assert prepared.code == 0
    result = run("check", "--chroot", str(jail), "--", str(area / "static"))
    assert result.code == 0, result.stderr
    note = _findings(result.events)["OpenSSL 1.1.1w reseed"]
    assert note["level"] == "warning" and "linked statically" in str(note["detail"])


EVIL = """
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {
    if (getenv("EVIL_QUIET") == NULL) close(open(MARKER, O_WRONLY | O_CREAT, 0644));
}
"""


def test_doctor_never_loads_a_library_the_daemons_user_could_write(
    area: Path, jail: Path, built: dict[str, Path]
) -> None:
    """Attack: a daemon running as nobody maps a 'libcrypto' that nobody owns, whose
    constructor would run as root in doctor's probe. doctor refuses to load it and says why;
    the same file owned by root (the control) is loaded, so the refusal is what stopped it."""
    evil_dir = area / "evil"
    evil_dir.mkdir(mode=0o755)
    lib, marker = evil_dir / "libcrypto-deadbeef.so.3", area / "ran-as-root"
    (evil_dir / "evil.c").write_text(EVIL)
    argv = [
        "gcc",
        "-shared",
        "-fPIC",
        f'-DMARKER="{marker}"',
        "-o",
        str(lib),
        str(evil_dir / "evil.c"),
    ]
    cc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert cc.returncode == 0, cc.stderr
    os.chown(lib, 65534, 65534)
    code = (
        f"import ctypes, os, sys, time; ctypes.CDLL({str(lib)!r}); os.chroot({str(jail)!r}); "
        "os.setgroups([]); os.setgid(65534); os.setuid(65534); print('jailed', flush=True); "
        "time.sleep(60)"
    )
    env = {**os.environ, "EVIL_QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"jailed\n"
        refused = run("doctor", "--pid", str(proc.pid))
        assert not marker.exists()
        detail = str(_findings(refused.events)["OpenSSL reseed"]["detail"])
        assert "owned by uid 65534" in detail and "--crypto-lib" in detail, detail
        os.chown(lib, 0, 0)  # the control: a root-owned library is loaded (its code runs)
        run("doctor", "--pid", str(proc.pid))
        assert marker.exists()
    finally:
        stop_bytes(proc)
