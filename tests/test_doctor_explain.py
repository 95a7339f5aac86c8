"""doctor on real daemons and jails; explain on error lines taken from real failures."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
import time
from pathlib import Path

from jailshim.explain import SIGNATURES, match
from tests.daemons import free_port, stop
from tests.handshake import EventReader, wait_until
from tests.multiarch import MULTIARCH
from tests.support import TESTS, clean_env, jailshim_argv, need, run

SYSTEM_PYTHON = "/usr/bin/python3"
SECCOMP_RUN = str(TESTS / "seccomp_run.py")


def _connects(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return False
    return True


def _haproxy_config(area: Path, jail: Path, extra: str = "") -> Path:
    cfg = area / "plain.cfg"
    cfg.write_text(
        f"global\n    chroot {jail}\n    user nobody\n    group nogroup\n{extra}"
        "defaults\n    mode tcp\n    log global\n    timeout connect 1s\n    timeout client 1s\n"
        f"    timeout server 1s\nfrontend f\n    bind 127.0.0.1:{free_port()}\n"
        "    default_backend b\nbackend b\n    server s 127.0.0.1:9\n"
    )
    return cfg


def _start(argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until it has chrooted
        if proc.poll() is not None:
            raise AssertionError(stop(proc)[1])
        try:
            if os.readlink(f"/proc/{proc.pid}/root") != "/":
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    stop(proc)
    raise AssertionError("the daemon never chrooted")


def _under_filter(err: str = "ENOSYS", marker: bool = True) -> list[str]:
    """A seccomp filter answering getrandom() ``err``, in an IPC namespace of its own with
    OpenSSL's "seeded" marker or without; each wrapper execs, so the PID is the daemon's."""
    need(
        subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], check=False).returncode == 0,
        "needs Debian's python3-seccomp",
    )
    flags = ["--shm-marker"] if marker else []
    return ["unshare", "--ipc", SYSTEM_PYTHON, SECCOMP_RUN, "deny", err, *flags, "--"]


def _rows(result: object) -> dict[str, dict[str, object]]:
    events = result.named("check")  # type: ignore[attr-defined]
    return {f"{e['whose']} {e['check']}": e for e in events}


def test_doctor_on_haproxy_in_an_empty_jail_is_safe_when_getrandom_works(
    area: Path, jail: Path, haproxy_bin: str
) -> None:
    """Issue 23, case 1: Debian's haproxy (OpenSSL 3) in an empty jail, no seccomp. Its
    OpenSSL reseeds from getrandom() and never opens the device: safe, exit 0 (doctor said
    "will fail at the next reseed", 69). The rows say whose fact each is; the missing node is
    information."""
    proc = _start([haproxy_bin, "-f", str(_haproxy_config(area, jail)), "-db"])
    try:
        result = run("doctor", "--pid", str(proc.pid))
    finally:
        stop(proc)
    assert result.code == 0, result.stderr
    verdict = result.named("doctor.verdict")[0]["verdict"]
    assert verdict.startswith("safe: OpenSSL 3 reads getrandom(), which works"), verdict
    rows = _rows(result)
    assert rows["daemon getrandom()"]["detail"] == "works: it has no seccomp filter"
    assert rows["jail dev/urandom"]["level"] == "warning"
    assert "not needed now" in str(rows["jail dev/urandom"]["detail"])
    assert str(rows["probe getrandom() (probe)"]["detail"]).startswith("in jailshim's probe")
    daemon = result.named("doctor.daemon")[0]
    assert daemon["root"] == str(jail) and daemon["uid"] == 65534
    assert any(lib.startswith("libcrypto.so.3 (OpenSSL 3") for lib in daemon["libraries"])


def test_doctor_on_haproxy_under_a_filter_then_after_prepare(
    area: Path, jail: Path, haproxy_bin: str
) -> None:
    """haproxy whose getrandom() a filter denies, with the marker, in an empty jail: without
    --read-filter doctor cannot tell (75, and says the option); with it, action is needed (69)
    with the exact prepare command; after `jailshim prepare` on that jail, safe (0). Its own
    probe's "getrandom() usable" is no longer said of the daemon."""
    cfg = _haproxy_config(area, jail)
    proc = _start([*_under_filter(), haproxy_bin, "-f", str(cfg), "-db"])
    try:
        unsure = run("doctor", "--pid", str(proc.pid))
        assert unsure.code == 75, unsure.stderr
        assert "--read-filter" in unsure.error
        broken = run("doctor", "--pid", str(proc.pid), "--read-filter")
        assert broken.code == 69, broken.stderr
        assert f"jailshim prepare --chroot {jail} --user nobody" in broken.error
        rows = _rows(broken)
        assert str(rows["daemon getrandom()"]["detail"]).startswith("ENOSYS")
        assert str(rows["daemon shm marker"]["detail"]).startswith("present")
        assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
        fixed = run("doctor", "--pid", str(proc.pid), "--read-filter")
        assert fixed.code == 0, fixed.stderr
        assert fixed.named("doctor.daemon")[0]["jail_mounts"] == []  # mknod: nothing mounted
        assert fixed.named("doctor.verdict")[0]["verdict"].startswith("safe")
    finally:
        stop(proc)


def test_doctor_names_the_filter_when_openssl_cannot_read_the_devices(
    jail: Path, root: None
) -> None:
    """Issue 23: a daemon on OpenSSL 3 whose filter answers getrandom() ENOSYS, no marker, a
    prepared jail: doctor said "safe". OpenSSL never reads the devices there: will fail, and
    the fix is the filter (SystemCallFilter=, the runtime's profile), not the jail."""
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    code = f"import os, time; os.chroot({str(jail)!r}); os.setuid(65534); time.sleep(60)"
    proc = _start([*_under_filter(marker=False), sys.executable, "-c", code])
    libcrypto = f"/lib/{MULTIARCH}/libcrypto.so.3"
    need(os.path.exists(libcrypto), "needs Debian's libssl3")
    try:
        result = run("doctor", "--pid", str(proc.pid), "--read-filter", "--crypto-lib", libcrypto)
    finally:
        stop(proc)
    assert result.code == 69, result.stderr
    assert "will fail at its next reseed" in result.error
    assert "SystemCallFilter=" in result.error and "seccomp profile" in result.error
    assert "jailshim prepare" not in result.error


def _start_master_worker(haproxy_bin: str, cfg: Path) -> tuple[subprocess.Popen[str], int]:
    """haproxy -W: the master (not chrooted) and, once it has chrooted, its one worker."""
    from jailshim.doctor import chrooted_children

    proc = subprocess.Popen(
        [haproxy_bin, "-W", "-db", "-f", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not (workers := chrooted_children(proc.pid)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(stop(proc)[1])
        time.sleep(0.05)
    assert len(workers) == 1, workers
    return proc, workers[0]


def test_doctor_on_haproxy_master_worker_as_pidof_gives_it(
    area: Path, jail: Path, haproxy_bin: str
) -> None:
    """haproxy -W (the issue's `haproxy -W -db`): `doctor --pid WORKER MASTER` (what $(pidof
    haproxy) gives) inspects the worker once and says the master stands for its chrooted
    children; the master alone too; in an empty jail without seccomp it is safe (exit 0, not
    "will fail": issue 23, case 1)."""
    proc, worker = _start_master_worker(haproxy_bin, _haproxy_config(area, jail))
    try:
        for pids in ([str(worker), str(proc.pid)], [str(proc.pid)], [f"{worker} {proc.pid}"]):
            result = run("doctor", "--pid", *pids)
            assert result.code == 0, result.stderr
            assert [e["pid"] for e in result.named("doctor.daemon")] == [worker]
            said = result.named("doctor.workers")[0]
            assert said["pid"] == proc.pid and said["workers"] == [worker]
            assert f"PID {proc.pid} is not chrooted but its children {worker} are" in said["detail"]
            verdict = result.named("doctor.verdict")[0]["verdict"]
            assert verdict.startswith("safe: OpenSSL 3 reads getrandom()"), verdict
    finally:
        stop(proc)


def test_doctor_on_several_unsafe_daemons_names_each(area: Path, haproxy_bin: str) -> None:
    """Two daemons under a filter (with the marker) in two empty jails: exit 69, the verdict
    names each PID."""
    procs = []
    try:
        for name in ("a", "b"):
            jail = area / name
            jail.mkdir(mode=0o755)
            cfg = _haproxy_config(area, jail)
            procs.append(_start([*_under_filter(), haproxy_bin, "-f", str(cfg), "-db"]))
        result = run("doctor", "--pid", *(str(p.pid) for p in procs), "--read-filter")
    finally:
        for proc in procs:
            stop(proc)
    assert result.code == 69, result.stderr
    for proc in procs:
        assert f"PID {proc.pid}: " in result.error


def test_doctor_reports_a_daemon_that_keeps_the_device_open(jail: Path, root: None) -> None:
    """A process that opened /dev/urandom before chroot, its getrandom() denied (marker
    present), OpenSSL 3 named: the open descriptor is reported, and the verdict is "safe now,
    fragile" with what would break it; without a library named, "cannot tell" (75)."""
    code = (
        "import os, sys, time; fd = os.open('/dev/urandom', os.O_RDONLY); "
        f"os.chroot({str(jail)!r}); os.setgid(65534); os.setuid(65534); time.sleep(60)"
    )
    libcrypto = f"/lib/{MULTIARCH}/libcrypto.so.3"
    need(os.path.exists(libcrypto), "needs Debian's libssl3")
    proc = _start([*_under_filter(), sys.executable, "-c", code])
    try:
        unknown = run("doctor", "--pid", str(proc.pid), "--read-filter")
        result = run("doctor", "--pid", str(proc.pid), "--read-filter", "--crypto-lib", libcrypto)
    finally:
        stop(proc)
    assert unknown.code == 75 and "--crypto-lib" in unknown.error, unknown.stderr
    assert result.code == 69, result.stderr
    fds = result.named("doctor.daemon")[0]["open_entropy_fds"]
    assert len(fds) == 1 and "-> /dev/urandom (1:9)" in fds[0]
    assert result.error.startswith("safe now, fragile:")
    assert "through the fd it kept before chroot" in result.error
    assert "it breaks if the library opens the device inside the jail" in result.error


def test_doctor_lists_the_mounts_in_the_daemons_jail(nodev_jail: Path, root: None) -> None:
    """A nodev jail gets binds; doctor reads them from the daemon's own mountinfo."""
    assert run("prepare", "--chroot", str(nodev_jail), "--no-verify").code == 0
    code = f"import os, time; os.chroot({str(nodev_jail)!r}); time.sleep(60)"
    proc = _start([sys.executable, "-c", code])
    try:
        result = run("doctor", "--pid", str(proc.pid))
    finally:
        stop(proc)
    assert result.code == 0, result.stderr
    mounts = result.named("doctor.daemon")[0]["jail_mounts"]
    assert any(m.startswith("/dev/urandom (devtmpfs") and "ro" in m for m in mounts), mounts


def test_doctor_on_a_jail_without_daemon(jail: Path) -> None:
    """--chroot: jailshim's probe stands for a daemon about to start there. With getrandom()
    working an empty jail is safe (the node is a warning); under a filter with the marker it
    is not (69), a prepared one is (0)."""
    assert run("doctor", "--chroot", str(jail), "--user", "nobody").code == 0
    wrap = _under_filter()
    assert run("doctor", "--chroot", str(jail), "--user", "nobody", wrap=wrap).code == 69
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    assert run("doctor", "--chroot", str(jail), "--user", "nobody", wrap=wrap).code == 0


def test_doctor_bad_input() -> None:
    """No target, or a PID that does not exist: usage errors."""
    assert run("doctor").code == 64
    gone = run("doctor", "--pid", "999999999")
    assert gone.code == 64 and "no such process" in gone.error


def _explain(text: str) -> tuple[int, str]:
    proc = subprocess.run(
        jailshim_argv("explain"),
        input=text,
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    return proc.returncode, proc.stdout


# Verbatim from the original report (OpenSSL 1.1.1-pre in haproxy 1.8.3; not installable here).
SEED_STORY = (
    "140135125062464:error:2406C06E:random number generator:RAND_DRBG_instantiate:error "
    "retrieving entropy:crypto/rand/drbg_lib.c:221:\n"
    "140135125062464:error:2406B072:random number generator:RAND_DRBG_generate:in error "
    "state:crypto/rand/drbg_lib.c:479:\n"
    "140135125062464:error:140BA041:SSL routines:SSL_new:malloc failure:ssl/ssl_lib.c:839:\n"
)


def test_explain_openssl_111_lines_from_the_report() -> None:
    """The seed story's lines: the DRBG and the misleading malloc failure are both explained."""
    code, out = _explain(SEED_STORY)
    assert code == 0
    assert "OpenSSL 1.1.1: DRBG could not get entropy" in out
    assert "SSL_new malloc failure (really an entropy failure)" in out
    assert "OpenSSL 3" not in out
    assert "jailshim prepare" in out


def test_explain_openssl3_from_a_real_failed_reseed(jail: Path, root: None) -> None:
    """OpenSSL 3's error queue, produced by a real reseed in an empty jail without getrandom."""
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, check=False
    )
    need(probe.returncode == 0, "needs python3-seccomp")
    wrap = ["unshare", "--ipc", SYSTEM_PYTHON, SECCOMP_RUN, "deny", "ENOSYS", "--shm-marker", "--"]
    result = run("check", "--chroot", str(jail), "--timeout", "0.2", wrap=wrap)
    reseed = next(e for e in result.events if e.get("check") == "OpenSSL reseed")
    code, out = _explain(str(reseed["detail"]))
    assert code == 0 and "OpenSSL 3: error retrieving entropy" in out


def test_explain_python_from_a_real_chrooted_interpreter(jail: Path, root: None) -> None:
    """Python's os.urandom in an empty jail with getrandom denied."""
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, check=False
    )
    need(probe.returncode == 0, "needs python3-seccomp")
    code = f"import os; os.chroot({str(jail)!r}); os.urandom(4)"
    failed = subprocess.run(
        [SYSTEM_PYTHON, SECCOMP_RUN, "deny", "ENOSYS", "--", SYSTEM_PYTHON, "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode != 0
    rc, out = _explain(failed.stderr)
    assert rc == 0 and "Python: no /dev/urandom" in out


def test_explain_gnutls_codes_from_the_library() -> None:
    """GnuTLS's own strings for -342 and -206 (gnutls_strerror), and the bare codes."""
    name = ctypes.util.find_library("gnutls")
    need(name is not None, "needs libgnutls30")
    lib = ctypes.CDLL(name)
    lib.gnutls_strerror.restype = ctypes.c_char_p
    texts = [f"gnutls: {lib.gnutls_strerror(c).decode()}" for c in (-342, -206)]
    rc, out = _explain("\n".join(texts) + "\nTLS handshake error code -342\n")
    assert rc == 0
    assert "GnuTLS: randomness device error" in out and "GnuTLS: failed to acquire" in out
    assert match(["handshake returned -206"])


def test_explain_haproxy_bind_and_syslog_from_real_haproxy(
    area: Path, jail: Path, haproxy_bin: str
) -> None:
    """haproxy's own ALERT lines: a bind on an absent address, a log socket missing in a jail."""
    cfg = area / "bind.cfg"
    cfg.write_text(f"frontend f\n    mode tcp\n    bind 192.0.2.99:{free_port()}\n")
    bind = subprocess.run(
        [haproxy_bin, "-f", str(cfg), "-db"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "cannot bind socket" in bind.stderr
    logged = _haproxy_config(area, jail, extra="    log /dev/log local0\n")
    port = int(logged.read_text().split("bind 127.0.0.1:")[1].split()[0])
    proc = _start([haproxy_bin, "-f", str(logged), "-db"])
    with EventReader(proc) as haproxy:
        # a connection to log, then haproxy's ALERT about its logger: waited for (it was
        # "whatever came within 1.5 s", and a connect loop whose failure went unnoticed)
        wait_until(lambda: _connects(port), "haproxy to accept a connection")
        haproxy.wait_for_text("logger", "haproxy's ALERT about the missing log socket")
        _, rest = stop(proc)
    stderr = haproxy.output()[1] + rest
    assert "logger" in stderr, stderr
    rc, out = _explain(bind.stderr + stderr)
    assert rc == 0
    assert "haproxy: cannot bind" in out and "Syslog socket missing" in out


def test_explain_unrelated_text_exits_1() -> None:
    """Nothing recognised: 'no known signature', exit 1."""
    code, out = _explain("all good here\nGET / 200\n")
    assert code == 1 and "no known signature" in out


def test_explain_file_argument(tmp_path: Path) -> None:
    """A FILE argument is read like stdin; a missing file exits 66 (EX_NOINPUT)."""
    (tmp_path / "log").write_text(SEED_STORY)
    assert run("explain", str(tmp_path / "log")).code == 0
    assert run("explain", str(tmp_path / "nope")).code == 66


def test_signature_table_is_well_formed() -> None:
    """Every row has a name, a cause and a fix; names are unique."""
    assert len({s.name for s in SIGNATURES}) == len(SIGNATURES)
    assert all(s.cause and s.fix.startswith("Fix:") for s in SIGNATURES)


def test_explain_names_the_filter_where_openssl_never_reads_the_device() -> None:
    """Issue 23: explain said OpenSSL 3 "falls back to /dev/urandom, which the jail lacks"
    and prescribed `jailshim prepare` alone. Under a filter with no marker on a kernel >= 4.8
    OpenSSL never reads the device: the cause is the filter, in the table's own words."""
    from jailshim.verify.verdict import EntropyFacts, Getrandom, Library, decide

    for line, library in (
        ("error:1C8000BD:Provider routines::error retrieving entropy", Library.OPENSSL_3),
        ("RAND_DRBG_reseed:error retrieving entropy", Library.OPENSSL_111),
    ):
        ((sig, _),) = match([line])
        facts = EntropyFacts(library, Getrandom.ENOSYS, kernel=(6, 1), marker=False)
        assert decide(facts).why in sig.cause, sig.cause
        assert "the filter is the cause" in sig.cause
        assert "allow getrandom()" in sig.fix and "SystemCallFilter=" in sig.fix
        assert "--read-filter" in sig.fix
    for sig in SIGNATURES:
        assert "fall back to /dev/urandom" not in sig.cause, sig.name
        assert "falls back to /dev/urandom" not in sig.cause, sig.name
