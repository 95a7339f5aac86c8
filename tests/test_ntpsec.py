"""`jailshim run -- ntpd -n -c CONF -u ntpsec:ntpsec -i JAIL`: ntpsec's jail and user from its
own argv, its files from ntp.conf, ntpd answering ntpq and a raw NTP client from the jail.

No test may change the host's clock (it is not namespaced). Three guards, each enough alone
for what it covers: the configs have no server, pool or peer (nothing to discipline to) and
say `disable ntp` and `disable kernel`; every ntpd runs under tests/clock_guard.py, a seccomp
filter that answers EPERM to adjtimex, clock_adjtime, clock_settime and settimeofday (ntpd
still starts: it writes the kernel's PLL state at start whatever the config says —
start_kern_loop — and its log shows that write refused, which the tests assert); and each test
asserts that CLOCK_REALTIME kept its distance to CLOCK_BOOTTIME and that the kernel's
frequency and status words did not change.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import json
import os
import pwd
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from jailshim.daemons import load
from jailshim.daemons.ntpsec import argv_options, read_config, words_of
from jailshim.errors import ConfigError, UsageError
from tests.daemons import daemon_pid, own_network, pristine_copy, status_field, stop
from tests.stock import strategies
from tests.support import NSRUN, TESTS, Result, jailshim_argv, need, run, spawn

__all__ = ["own_network"]  # a fixture (tests/daemons.py) the fixtures here use

NTPD = "/usr/sbin/ntpd"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-seccomp
GUARD = [SYSTEM_PYTHON, str(TESTS / "clock_guard.py"), "--"]
# ntpd's log line for the kernel PLL write at its start that the guard refused
REFUSED_WRITE = "start_kern_loop: ntpd/ntp_loopfilter.c line 1063: ntp_adjtime: Operation not"
# what the test configs add to Debian's: ntpd disciplines no clock
NO_DISCIPLINE = "\n# jailshim's tests: never touch the host's clock\ndisable ntp\ndisable kernel\n"


@pytest.fixture
def ntpd_bin(root: None, own_network: None) -> str:
    """Debian's ntpd and ntpq (ntpsec), its ntpsec user, and python3-seccomp for the guard."""
    need(os.access(NTPD, os.X_OK), "needs ntpd (Debian package ntpsec)")
    need(os.access("/usr/bin/ntpq", os.X_OK), "needs ntpq (Debian package ntpsec)")
    try:
        pwd.getpwnam("ntpsec")
    except KeyError:
        need(False, "needs the user ntpsec (Debian package ntpsec creates it)")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, check=False
    )
    need(probe.returncode == 0, "needs python3-seccomp for /usr/bin/python3")
    return NTPD


# -- the host's clock -------------------------------------------------------------------------


class ClockState(NamedTuple):
    realtime_minus_boottime: float
    frequency: int  # struct timex .freq
    status: int  # struct timex .status (STA_PLL, STA_UNSYNC, …)


def clock_state() -> ClockState:
    """The kernel's clock as a reader sees it: adjtimex with modes 0 changes nothing."""
    libc = ctypes.CDLL(None, use_errno=True)
    timex = ctypes.create_string_buffer(256)  # struct timex is 208 bytes on x86_64; modes 0
    assert libc.adjtimex(timex) >= 0, os.strerror(ctypes.get_errno())
    frequency = struct.unpack_from("l", timex, 16)[0]
    status = struct.unpack_from("i", timex, 40)[0]
    spans = []
    for _ in range(5):  # the narrowest of a few samples: no preemption between the two reads
        real = time.clock_gettime(time.CLOCK_REALTIME)
        boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        spans.append(real - boot)
    return ClockState(min(spans), frequency, status)


@contextlib.contextmanager
def host_clock_untouched() -> Iterator[None]:
    """Fails the test if CLOCK_REALTIME jumped (by 50 ms or more against CLOCK_BOOTTIME) or the
    kernel's frequency or status changed while the block ran."""
    before = clock_state()
    yield
    after = clock_state()
    jump = after.realtime_minus_boottime - before.realtime_minus_boottime
    assert abs(jump) < 0.05, f"CLOCK_REALTIME moved {jump:+.6f} s against CLOCK_BOOTTIME"
    assert (after.frequency, after.status) == (before.frequency, before.status), (before, after)


# -- configs and jails ------------------------------------------------------------------------


def stock_config(area: Path) -> str:
    """Debian's /etc/ntpsec/ntp.conf as shipped, changed for the test only: its four `pool`
    lines are commented out (the test's network namespace reaches nothing, and a server is a
    clock to follow) and discipline is disabled (NO_DISCIPLINE). driftfile and leapfile stay:
    both are read at their host paths before the chroot, never written in a test's seconds."""
    text = (pristine_copy("ntpsec", "/etc/ntpsec", area) / "ntp.conf").read_text()
    assert "\npool 0.debian.pool.ntp.org iburst\n" in text, text
    lines = [f"# {ln}" if ln.startswith(("pool ", "server ")) else ln for ln in text.split("\n")]
    return "\n".join(lines) + NO_DISCIPLINE


def make_jail(area: Path) -> Path:
    """The operator's part of ntpd's jail: var/lib/ntpsec for the drift file it rewrites after
    the chroot (owned by ntpsec, as Debian's /var/lib/ntpsec is)."""
    jail = area / "jail"
    drift = jail / "var/lib/ntpsec"
    drift.mkdir(parents=True)
    for path in (jail, jail / "var", jail / "var/lib"):
        path.chmod(0o755)
    user = pwd.getpwnam("ntpsec")
    os.chown(drift, user.pw_uid, user.pw_gid)
    return jail


def write_config(area: Path, text: str) -> Path:
    directory = area / "conf"
    directory.mkdir(exist_ok=True)
    config = directory / "ntp.conf"
    config.write_text(text)
    return config


# -- NTP clients ------------------------------------------------------------------------------


def ntpq_variables(proc: subprocess.Popen[str], host: str = "127.0.0.1") -> str:
    """`ntpq -c rv HOST` once ntpd answers it (mode 6 over UDP 123); fails if proc exits."""
    deadline = time.monotonic() + 30
    seen = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = stop(proc)
            raise AssertionError(f"exited with {proc.returncode}: {err}")
        done = subprocess.run(
            ["ntpq", "-c", "rv", host], capture_output=True, text=True, timeout=20, check=False
        )
        seen = done.stdout + done.stderr
        if 'version="ntpd ntpsec-' in seen:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"ntpq never got ntpd's variables: {seen!r}")


def served(proc: subprocess.Popen[str]) -> None:
    """Until ntpd answers a raw NTP request (time service: what even `noquery` allows)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = stop(proc)
            raise AssertionError(f"exited with {proc.returncode}: {err}")
        with contextlib.suppress(OSError):
            ntp_client_reply(timeout=1)
            return
        time.sleep(0.2)
    raise AssertionError("ntpd never answered an NTP request")


def ntp_client_reply(host: str = "127.0.0.1", timeout: float = 5) -> tuple[int, int, int, int]:
    """A raw NTP client request (mode 3, version 4, 48 bytes) to HOST:123: the reply's leap,
    version, mode and transmit-timestamp seconds."""
    request = bytearray(48)
    request[0] = (0 << 6) | (4 << 3) | 3
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(bytes(request), (host, 123))
        reply, _ = s.recvfrom(512)
    first = reply[0]
    return first >> 6, (first >> 3) & 7, first & 7, struct.unpack_from("!I", reply, 40)[0]


def config_events(stderr: str) -> list[dict[str, object]]:
    return [
        json.loads(ln)
        for ln in stderr.splitlines()
        if ln.startswith("{") and '"ntpd.config"' in ln and '"files"' in ln
    ]


# -- the daemon from its jail -----------------------------------------------------------------


def test_ntpd_answers_from_the_jail_its_argv_names(area: Path, ntpd_bin: str) -> None:
    """No --chroot/--user: -i and -u from ntpd's argv; Debian's config (pools out, discipline
    off); ntpq reads ntpd's variables and a raw NTP request gets a server reply (mode 4) with
    the time; ntpd's root is the jail, its uid and gid ntpsec's and its only group ntpsec
    (-u user:group: setgroups(1)); /dev/log wanted (ntpd logs to syslog), the host's clock
    untouched while ntpd's own write was refused by the guard."""
    jail = make_jail(area)
    config = write_config(area, stock_config(area))
    argv = [ntpd_bin, "-n", "-c", str(config), "-u", "ntpsec:ntpsec", "-i", str(jail)]
    user = pwd.getpwnam("ntpsec")
    group = grp.getgrnam("ntpsec").gr_gid
    with host_clock_untouched():
        proc = spawn([*GUARD, *jailshim_argv("run", "--", *argv)])
        try:
            variables = ntpq_variables(proc)
            leap, version, mode, seconds = ntp_client_reply()
            pid = daemon_pid(proc, "ntpd")
            assert os.readlink(f"/proc/{pid}/root") == str(jail)
            assert status_field(pid, "Uid").split() == [str(user.pw_uid)] * 4
            assert status_field(pid, "Gid").split() == [str(group)] * 4
            assert status_field(pid, "Groups").split() == [str(group)]
        finally:
            _, stderr = stop(proc)
    assert "stratum=16" in variables, variables  # no source: it follows no clock
    assert (version, mode) == (4, 4) and leap == 3, (leap, version, mode)  # 3: unsynchronised
    assert abs(seconds - 2208988800 - time.time()) < 60  # the NTP era's seconds: now
    assert REFUSED_WRITE in stderr, stderr  # the guard, not luck, kept the kernel's state
    assert "Traceback" not in stderr
    read = config_events(stderr)
    assert read and read[0]["chroot"] == str(jail), stderr
    assert (read[0]["user"], read[0]["group"]) == ("ntpsec", "ntpsec")
    assert read[0]["log_sockets"] == ["/dev/log"]
    assert read[0]["files"] == [str(config)]
    assert strategies(stderr) == {"mknod"}, stderr
    checks = [json.loads(ln) for ln in stderr.splitlines() if '"event": "check"' in ln]
    reseed = [c for c in checks if str(c.get("check", "")).endswith("reseed")]
    assert reseed and reseed[0]["ok"] is True, checks  # ntpd's libcrypto (NTS) in the jail


_IN_USERNS = """
set -e
ip link set lo up
[ -z "$HOSTS" ] || mount --bind "$HOSTS" /etc/hosts
"$@" 2> "$JAILSHIM_ERR" &
daemon=$!
for attempt in $(seq 150); do
    if ntpq -c rv 127.0.0.1 > "$NTPQ_OUT" 2>&1 && grep -q 'version="ntpd ntpsec-' "$NTPQ_OUT"
    then break; fi
    kill -0 "$daemon"
    sleep 0.2
done
if [ -n "$PEER" ]; then
    for attempt in $(seq 150); do
        if ntpq -pn 127.0.0.1 2>&1 | grep -q "$PEER"; then break; fi
        kill -0 "$daemon"
        sleep 0.2
    done
    sleep 2
    kill -0 "$daemon"
    echo "alive after the lookup: $(ntpq -pn 127.0.0.1 2>&1 | grep -c "$PEER")"
fi
echo "root=$(readlink /proc/$daemon/root)"
echo "uid=$(awk '/^Uid:/ {print $2}' /proc/$daemon/status)"
kill "$daemon"
wait "$daemon" || true
"""


def test_ntpd_answers_from_its_jail_in_a_user_namespace(area: Path, ntpd_bin: str) -> None:
    """The same in a user namespace (nsrun's 0-65535 map) with a mount namespace and a network
    namespace of its own: jailshim binds the device nodes (no mknod there), ntpq reads ntpd's
    variables, ntpd's root is the jail and its uid ntpsec's. The user namespace alone would
    keep the host's clock (CAP_SYS_TIME counts only in the initial one); the guard is on too."""
    jail = make_jail(area)
    config = write_config(area, stock_config(area))
    err, out = area / "jailshim.err", area / "ntpq.out"
    argv = [ntpd_bin, "-n", "-c", str(config), "-u", "ntpsec:ntpsec", "-i", str(jail)]
    wrap = [sys.executable, NSRUN, "--mount", "--", "unshare", "--net", "sh", "-c", _IN_USERNS]
    with host_clock_untouched():
        done = subprocess.run(
            [*GUARD, *wrap, "sh", *jailshim_argv("run", "--", *argv)],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "JAILSHIM_ERR": str(err),
                "NTPQ_OUT": str(out),
                "HOSTS": "",
                "PEER": "",
            },
            check=False,
        )
    stderr = err.read_text() if err.exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + stderr
    assert 'version="ntpd ntpsec-' in out.read_text(), stderr
    assert f"root={jail}" in done.stdout, done.stdout
    assert f"uid={pwd.getpwnam('ntpsec').pw_uid}" in done.stdout
    assert "ntp_adjtime: Operation not permitted" in stderr, stderr
    assert "Traceback" not in stderr
    assert strategies(stderr) == {"bind"}, stderr


# -- broken configs ---------------------------------------------------------------------------


def run_guarded(*args: str) -> Result:
    """`jailshim ARGS` under the clock guard: a jailshim that failed to refuse a config would
    start ntpd, which writes the kernel's clock state at once (seen: a test run with the
    refusal broken and no guard left STA_PLL set; it was put back by hand)."""
    return run(*args, wrap=GUARD)


def _ntpd_own_log(config: Path) -> str:
    """What ntpd itself logs for ``config`` (no jail, no user): started under the guard in the
    test's network namespace, stopped once it serves."""
    proc = spawn([*GUARD, NTPD, "-n", "-c", str(config)])
    try:
        served(proc)
    finally:
        _, stderr = stop(proc)
    return stderr


def test_a_line_ntpd_would_ignore_exits_78_in_its_words(area: Path, ntpd_bin: str) -> None:
    """A mistyped command (`restirct`): ntpd logs a syntax error and runs without the line (an
    ntpd its operator meant to restrict); jailshim refuses it (78) with the sentence ntpd
    itself logs for that line — the same words, line and column, as ntpd's own log shows —
    and takes back what it prepared."""
    jail = make_jail(area)
    # ntpd runs unjailed as root for its own log: its drift file is the test's
    text = stock_config(area).replace("restrict 127.0.0.1", "  restirct 127.0.0.1")
    text = text.replace("driftfile /var/lib/ntpsec/", f"driftfile {area}/")
    config = write_config(area, text)
    number = text.split("\n").index("  restirct 127.0.0.1") + 1
    words = f"CONFIG: syntax error in {config} line {number}, column 2"
    with host_clock_untouched():
        result = run_guarded(
            "run", "--", ntpd_bin, "-n", "-c", str(config), "-u", "ntpsec", "-i", str(jail)
        )
        own = _ntpd_own_log(config)
    assert result.code == 78, result.stderr
    assert words in result.error, result.error
    assert words in own, own  # ntpd's own sentence for that line
    assert not (jail / "dev").exists()


def test_an_includefile_ntpd_cannot_open_exits_78(area: Path, ntpd_bin: str) -> None:
    """`includefile` of a missing file: ntpd logs "Couldn't open <…>" and runs without it;
    78 in those words, relative to the including file's directory as ntpd resolves it; a
    missing -c file (ntpd would run on its defaults) is 78 too."""
    jail = make_jail(area)
    config = write_config(area, stock_config(area) + "includefile extra/site.conf\n")
    argv = [ntpd_bin, "-n", "-c", str(config), "-u", "ntpsec", "-i", str(jail)]
    with host_clock_untouched():
        result = run_guarded("run", "--", *argv)
    assert result.code == 78, result.stderr
    assert "CONFIG: Couldn't open <extra/site.conf>" in result.error, result.error
    assert f"{config.parent}/extra/site.conf cannot be read" in result.error
    assert not (jail / "dev").exists()
    (config.parent / "extra").mkdir()
    (config.parent / "extra/site.conf").write_text("restrict ::1\n")
    assert load("ntpd").read(argv, {}).files == (str(config), f"{config.parent}/extra/site.conf")
    missing = run_guarded(
        "run", "--", ntpd_bin, "-n", "-c", str(area / "nope.conf"), "-i", str(jail)
    )
    assert missing.code == 78, missing.stderr
    assert "ntpd would run without its configuration" in missing.error


# -- libgcc_s.so.1: what ntpd's DNS thread loads after its chroot -----------------------------

RESOLVED = "ntp.jailshim.test"  # a server name ntpd resolves in the jail, from its etc/hosts
UNREACHABLE = "192.0.2.123"  # TEST-NET-1 (RFC 5737): no route in the test's network namespace
UNWINDER_IN_JAIL = "lib/x86_64-linux-gnu/libgcc_s.so.1"


def hosts_naming_the_server(area: Path) -> Path:
    """The host's /etc/hosts plus RESOLVED -> UNREACHABLE, bound over /etc/hosts in the test's
    mount namespace: jailshim's resolver set copies it into the jail, where ntpd's DNS thread
    finds the name (no network), and the server it names is no clock to follow."""
    hosts = area / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n{UNREACHABLE} {RESOLVED}\n")
    return hosts


def test_ntpd_survives_its_dns_thread_in_a_jail_jailshim_prepared(
    area: Path, ntpd_bin: str
) -> None:
    """`server NAME`: ntpd resolves it after its chroot in a thread that ends with
    pthread_exit(), which loads libgcc_s.so.1 from the jail (without it: abort ~1 s after the
    start). No one copies the library: jailshim places the host's at its own path (the
    loader's first directory); the name resolves, ntpd lists the server by its address and is
    still alive and answering 2 s later; teardown takes the copy back."""
    from tests.stock import in_stock_layout

    jail = make_jail(area)
    config = write_config(area, stock_config(area) + f"server {RESOLVED} iburst\n")
    argv = [ntpd_bin, "-n", "-c", str(config), "-u", "ntpsec:ntpsec", "-i", str(jail)]
    hosts = hosts_naming_the_server(area)
    shell = in_stock_layout({"/etc/hosts": hosts}, jailshim_argv("run", "--", *argv), userns=False)
    peers = ""
    with host_clock_untouched():
        proc = spawn([*GUARD, *shell])
        try:
            ntpq_variables(proc)
            deadline = time.monotonic() + 30
            while UNREACHABLE not in peers and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.2)
                peers = subprocess.run(
                    ["ntpq", "-pn", "127.0.0.1"], capture_output=True, text=True, check=False
                ).stdout
            assert UNREACHABLE in peers, peers  # the DNS thread resolved the name
            time.sleep(2)  # it aborted here when the jail had no libgcc_s.so.1
            assert proc.poll() is None, proc.communicate()
            ntpq_variables(proc)
            placed = jail / UNWINDER_IN_JAIL
            assert placed.is_file() and not placed.is_symlink()
            assert placed.read_bytes() == Path(f"/{UNWINDER_IN_JAIL}").read_bytes()
            assert placed.stat().st_uid == 0
        finally:
            _, stderr = stop(proc)
    assert "must be installed for pthread_exit" not in stderr, stderr
    assert REFUSED_WRITE in stderr, stderr
    read = config_events(stderr)
    assert read and read[0]["jail_files"] == f"/{UNWINDER_IN_JAIL}", stderr
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert not (jail / UNWINDER_IN_JAIL).exists()


def test_ntpd_survives_its_dns_thread_in_a_user_namespace(area: Path, ntpd_bin: str) -> None:
    """The same in a user+mount+network namespace (nsrun): jailshim places libgcc_s.so.1 there
    too; ntpd lists the resolved server and is alive 2 s later."""
    jail = make_jail(area)
    config = write_config(area, stock_config(area) + f"server {RESOLVED} iburst\n")
    err, out = area / "jailshim.err", area / "ntpq.out"
    argv = [ntpd_bin, "-n", "-c", str(config), "-u", "ntpsec:ntpsec", "-i", str(jail)]
    wrap = [sys.executable, NSRUN, "--mount", "--", "unshare", "--net", "sh", "-c", _IN_USERNS]
    env = {
        **os.environ,
        "JAILSHIM_ERR": str(err),
        "NTPQ_OUT": str(out),
        "HOSTS": str(hosts_naming_the_server(area)),
        "PEER": UNREACHABLE,
    }
    with host_clock_untouched():
        done = subprocess.run(
            [*GUARD, *wrap, "sh", *jailshim_argv("run", "--", *argv)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    stderr = err.read_text() if err.exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + stderr
    assert "alive after the lookup: 1" in done.stdout, done.stdout + stderr
    assert f"root={jail}" in done.stdout, done.stdout
    assert "must be installed for pthread_exit" not in stderr, stderr
    assert strategies(stderr) == {"bind"}, stderr
    assert (jail / UNWINDER_IN_JAIL).is_file()


def test_the_loader_dirs_are_this_loaders_and_the_jails_own_copy_is_used(
    area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """loader_dirs() is what Debian's ld.so says it searches (`--list-diagnostics`); the host's
    copy is placed unless the jail has one where the loader finds it — not lib64, which it
    never searches, nor a link leading out of the jail; with none on the host either, 78."""
    from jailshim.daemons import ntpsec

    diagnostics = subprocess.run(
        ["/lib64/ld-linux-x86-64.so.2", "--list-diagnostics"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    listed = [ln.split("=", 1)[1].strip('"/') for ln in diagnostics.splitlines()
              if ln.startswith("path.system_dirs[")]  # fmt: skip
    assert [d.strip("/") for d in ntpsec.loader_dirs()] == listed, diagnostics
    config = write_config(area, f"server {RESOLVED}\n")
    jail = area / "jail"
    argv = ["ntpd", "-c", str(config), "-i", str(jail)]
    placed = (f"/{UNWINDER_IN_JAIL}",)
    jail.mkdir()
    assert load("ntpd").read(argv, {}).jail_files == placed  # an empty jail
    (jail / "lib64").mkdir()
    (jail / "lib64/libgcc_s.so.1").write_bytes(b"")
    assert load("ntpd").read(argv, {}).jail_files == placed  # lib64 is not searched
    (jail / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (jail / "usr/lib/x86_64-linux-gnu/libgcc_s.so.1").write_bytes(b"")
    assert load("ntpd").read(argv, {}).jail_files == ()  # the jail's own, found there
    (jail / "lib").symlink_to("usr/lib")  # a debootstrap jail: lib -> usr/lib
    assert load("ntpd").read(argv, {}).jail_files == ()
    (jail / "lib").unlink()
    (jail / "usr/lib/x86_64-linux-gnu/libgcc_s.so.1").unlink()
    (jail / "lib/x86_64-linux-gnu").mkdir(parents=True)
    (jail / UNWINDER_IN_JAIL).symlink_to(f"/{UNWINDER_IN_JAIL}")  # leads out of the jail
    assert load("ntpd").read(argv, {}).jail_files == placed
    assert load("ntpd").read(["ntpd", "-c", str(config)], {}).jail_files == ()  # no jail
    # the host without the library (faked: this host's libgcc_s.so.1 is not the test's to
    # remove): nothing to place, refused in glibc's words
    with monkeypatch.context() as patched:
        patched.setattr(ntpsec, "loader_dirs", lambda: (str(area / "nowhere"),))
        with pytest.raises(ConfigError, match="must be installed for pthread_exit to work"):
            load("ntpd").read(argv, {})
    write_config(area, "server 192.0.2.1\n")  # no name to resolve: nothing loads it
    assert load("ntpd").read(argv, {}).jail_files == ()


def test_interface_rules_with_dash_i_are_refused_in_ntpds_words(area: Path) -> None:
    """ntpd exits when the config has interface rules and argv has -I or -L."""
    config = write_config(area, "interface listen 127.0.0.1\nrestrict default ignore\n")
    with pytest.raises(ConfigError, match="are not allowed with --interface"):
        load("ntpd").read([NTPD, "-c", str(config), "-I", "lo"], {})


# -- reading argv and ntp.conf as ntpd does ---------------------------------------------------


def test_argv_is_read_as_ntp_getopt_long_reads_it() -> None:
    """Short options combined or with their value attached; a long option by any unique prefix
    (`--jail`), `=value` or the next word; no permutation: the first word that is no option
    ends them (servers on the command line), as `--` does; ntpd's own spelling `--driftile`."""
    options, servers = argv_options(
        ["ntpd", "-nNc/etc/x.conf", "--jail", "/j", "--user=ntpsec:ntp", "a.example", "-i", "/k"]
    )
    assert options == {
        "n": [""],
        "N": [""],
        "c": ["/etc/x.conf"],
        "i": ["/j"],
        "u": ["ntpsec:ntp"],
    }
    assert servers == ["a.example", "-i", "/k"]
    assert argv_options(["ntpd", "--driftile", "/d", "--", "-i", "/j"]) == (
        {"f": ["/d"]},
        ["-i", "/j"],
    )
    with pytest.raises(UsageError, match="is ambiguous"):
        argv_options(["ntpd", "--d", "x"])  # debug, driftile, dumpopts, dvar
    with pytest.raises(UsageError, match="is not one it takes"):
        argv_options(["ntpd", "--driftfile", "/d"])  # not ntpd's spelling
    with pytest.raises(UsageError, match="Unknown command line switch or missing argument"):
        argv_options(["ntpd", "-i"])
    with pytest.raises(UsageError, match="more than one -u given"):
        load("ntpd").read(["ntpd", "-c", "/dev/null", "-u", "a", "-u", "b"], {})


def test_user_group_and_identity_as_ntpd_sets_them(area: Path) -> None:
    """-u user:group splits at the last ':'; digits are a number (+N); with a group ntpd keeps
    that group alone (setgroups(1)), without one the user's groups (initgroups)."""
    from jailshim.spec import Identity

    config = write_config(area, "restrict default ignore\n")
    adapter = load("ntpd")
    plan = adapter.read(["ntpd", "-c", str(config), "-u", "ntpsec:ntpsec", "-i", "rel"], {})
    assert (plan.user, plan.group) == ("ntpsec", "ntpsec")
    assert plan.chroot == os.path.join(os.getcwd(), "rel")
    numeric = adapter.read(["ntpd", "-c", str(config), "-u", "123:45"], {})
    assert (numeric.user, numeric.group, numeric.chroot) == ("+123", "+45", None)
    alone = adapter.read(["ntpd", "-c", str(config), "-u", "ntpsec"], {})
    assert (alone.user, alone.group) == ("ntpsec", None)
    identity = Identity("ntpsec", 101, 102, (102, 7))
    assert adapter.identity(identity, plan, group_given=True).groups == (102,)
    assert adapter.identity(identity, alone, group_given=False).groups == (102, 7)


def test_nts_key_readable_as_ntpd_sets_its_identity(area: Path, ntpd_bin: str) -> None:
    """The key's mode bits against ntpd's identity after its drop: root's 0640 with group
    ntpsec is readable by `-u ntpsec` (initgroups) and `-u ntpsec:ntpsec`, not by
    `-u ntpsec:nogroup` (that group alone), nor 0600; without -u ntpd stays root."""
    from jailshim.daemons.ntpsec import _readable_by

    key = area / "key.pem"
    key.write_text("k")
    os.chown(key, 0, grp.getgrnam("ntpsec").gr_gid)
    key.chmod(0o640)
    assert _readable_by(str(key), "ntpsec", "") and _readable_by(str(key), "ntpsec", "ntpsec")
    assert not _readable_by(str(key), "ntpsec", "nogroup")
    key.chmod(0o600)
    assert not _readable_by(str(key), "ntpsec", "")
    assert not _readable_by(str(key), str(pwd.getpwnam("ntpsec").pw_uid), "")
    assert _readable_by(str(key), "root", "")


def test_config_is_read_as_ntpsecs_scanner_reads_it(area: Path) -> None:
    """Comments, quotes and columns as yylex gives them; includefile relative to the including
    file (a directory: its *.conf in order), the ntp.d directory beside the config, `end`;
    names to resolve need the resolver files; `interface listen IP` is waited for; logfile
    means no /dev/log; jail notes for the drift file and leapfile ntpd reuses after chroot."""
    assert words_of('  driftfile "/a b/c" # x') == [(2, "driftfile"), (12, "/a b/c")]
    assert words_of("\tserver 127.0.0.1#c") == [(1, "server"), (8, "127.0.0.1")]
    conf = area / "etc"
    (conf / "inc").mkdir(parents=True)
    arch = getattr(sys.implementation, "_multiarch", "x86_64-linux-gnu")
    (area / "jail/usr/lib" / arch).mkdir(parents=True)
    (area / "jail/usr/lib" / arch / "libgcc_s.so.1").write_bytes(b"")
    (conf / "ntp.d").mkdir()
    (conf / "inc/b.conf").write_text("server time.example iburst\n")
    (conf / "inc/a.conf").write_text("interface listen 127.0.0.7\n")
    (conf / "inc/skipped.txt").write_text("bogus\n")
    (conf / "ntp.d/z.conf").write_text("logfile /var/log/ntp.log\nend\nbogus line\n")
    (conf / "ntp.conf").write_text(
        "driftfile /var/lib/ntpsec/ntp.drift\nleapfile /leap.list\nincludefile inc\n"
    )
    config = read_config(str(conf / "ntp.conf"))
    assert config.files == tuple(
        str(conf / n) for n in ("ntp.conf", "inc/a.conf", "inc/b.conf", "ntp.d/z.conf")
    )
    jail = area / "jail"
    plan = load("ntpd").read(["ntpd", "-c", str(conf / "ntp.conf"), "-i", str(jail)], {})
    assert plan.file_sets == ("resolver",)
    assert [t.ip for t in plan.wait_targets] == ["127.0.0.7"]
    assert plan.sockets == ()  # logfile: no syslog
    assert any(f"{jail}/var/lib/ntpsec does not exist" in n for n in plan.notes), plan.notes
    assert any(f"{jail}/leap.list does not exist" in n for n in plan.notes), plan.notes
    (area / "ntp.conf").write_text("restrict default\nserver 192.0.2.1\n")
    quiet = load("ntpd").read(["ntpd", "-c", str(area / "ntp.conf")], {})
    assert quiet.file_sets == () and quiet.sockets == ("/dev/log",)


def test_ntpd_still_starts_when_its_clock_writes_are_refused(area: Path, ntpd_bin: str) -> None:
    """The guard's own proof: the kernel state ntpd would write is refused (its log says so),
    ntpd serves on, and the host's clock state is as before."""
    config = write_config(area, "restrict 127.0.0.1\n" + NO_DISCIPLINE)
    with host_clock_untouched():
        log = _ntpd_own_log(config)
    assert REFUSED_WRITE in log, log
    assert "set_freq: ntpd/ntp_loopfilter.c line 1042: ntp_adjtime: Operation not" in log


def test_the_clock_check_sees_a_jump_and_a_changed_frequency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """host_clock_untouched fails on a 0.1 s jump and on another frequency (readings faked: a
    real change of the host's clock is what the tests must never make)."""
    readings = iter([ClockState(100.0, 0, 64), ClockState(100.1, 0, 64)])
    monkeypatch.setattr(sys.modules[__name__], "clock_state", lambda: next(readings))
    with pytest.raises(AssertionError, match="CLOCK_REALTIME moved"), host_clock_untouched():
        pass
    readings = iter([ClockState(100.0, 0, 64), ClockState(100.0, 5, 64)])
    with pytest.raises(AssertionError), host_clock_untouched():
        pass


def test_nts_key_exchange_from_the_jail(area: Path, ntpd_bin: str) -> None:
    """An NTS server (`nts enable`): ntpd loads its certificate and key after the chroot, as
    ntpsec (nts_init2) — without them in the jail, or with a key only root may read, it would
    exit ("troubles during init2"), so 78 first; with them copied to the same paths in the
    jail (the key ntpsec's), a TLS 1.3 client gets ALPN ntske/1 from the jailed ntpd on
    127.0.0.1:4460, and ntpd's cookie keys are written inside the jail by ntpsec, as
    jailshim's note says."""
    from tests.daemons import make_certificate

    jail = make_jail(area)
    make_certificate(area)  # area/cert.pem, area/key.pem
    text = stock_config(area) + f"nts cert {area}/cert.pem\nnts key {area}/key.pem\nnts enable\n"
    config = write_config(area, text)
    argv = [ntpd_bin, "-n", "-c", str(config), "-u", "ntpsec:ntpsec", "-i", str(jail)]
    with host_clock_untouched():
        refused = run_guarded("run", "--", *argv)
    assert refused.code == 78, refused.stderr
    assert "NTS: troubles during init2.  Bailing." in refused.error, refused.error
    assert f"{jail}{area}/cert.pem, which does not exist" in refused.error
    inside = Path(f"{jail}{area}")
    inside.mkdir(parents=True)
    for name in ("cert.pem", "key.pem"):
        (inside / name).write_bytes((area / name).read_bytes())
    (inside / "key.pem").chmod(0o600)  # root's: ntpd loads it as ntpsec, after its setuid
    with host_clock_untouched():
        unreadable = run_guarded("run", "--", *argv)
    assert unreadable.code == 78, unreadable.stderr
    assert f"{inside}/key.pem is not readable by ntpsec" in unreadable.error, unreadable.error
    assert "NTS: troubles during init2.  Bailing." in unreadable.error
    user = pwd.getpwnam("ntpsec")
    os.chown(inside / "key.pem", user.pw_uid, user.pw_gid)
    client = ["openssl", "s_client", "-connect", "127.0.0.1:4460", "-alpn", "ntske/1", "-tls1_3"]
    with host_clock_untouched():
        proc = spawn([*GUARD, *jailshim_argv("run", "--", *argv)])
        try:
            ntpq_variables(proc)
            said = ""
            for _ in range(50):
                said = subprocess.run(
                    client, input="", capture_output=True, text=True, timeout=20, check=False
                ).stdout
                if "ALPN protocol: ntske/1" in said:
                    break
                time.sleep(0.2)
        finally:
            _, stderr = stop(proc)
    assert "ALPN protocol: ntske/1" in said, said + stderr
    assert "TLSv1.3" in said
    keys = jail / "var/lib/ntpsec/nts-keys"
    assert keys.is_file() and keys.stat().st_uid == user.pw_uid, stderr
    notes = [json.loads(ln)["note"] for ln in stderr.splitlines() if '"note"' in ln]
    assert any(f"{jail}/var/lib/ntpsec/nts-keys" in n for n in notes), notes


def test_example_runs_as_its_readme_says_under_the_guard(area: Path, ntpd_bin: str) -> None:
    """examples/ntpsec/README.md's commands as written (tests/test_examples.py's reader), on
    copies of Debian's /etc/ntpsec (as shipped) and /var/lib/ntpsec bound at their real paths in
    a private mount namespace, the jail in the test's area, in the test's network namespace
    (the pools resolve nowhere), the whole shell under the clock guard (the README's ntpd
    disciplines the clock: -g, and Debian's config): the README's ntpq line gets its promised
    answer while the jail holds the resolver files, Ctrl-C stops ntpd, teardown exits 0, the
    jail keeps only what the README says stays, the host's directories are untouched.
    Not in test_examples.py's table: its harness waits on a TCP port and has no clock guard."""
    import signal

    from tests import pids
    from tests.daemons import descendants
    from tests.stock import copy_of, host_state, in_stock_layout
    from tests.support import clean_env
    from tests.test_examples import _parse_readme

    jail = area / "ntpsec-jail"  # the README's /var/lib/ntpsec-jail, which the host lacks
    setup, start, backends, clients, after = _parse_readme(
        "ntpsec", lambda command: command.replace("/var/lib/ntpsec-jail", str(jail))
    )
    assert start and clients and after and not backends
    stock = ("/etc/ntpsec", "/var/lib/ntpsec")
    need(all(Path(p).is_dir() for p in stock), "needs Debian's /etc/ntpsec and /var/lib/ntpsec")
    host_before = host_state(stock)
    binds = {path: copy_of(path, area) for path in stock}
    pidfile = area / "daemon.pid"
    steps = [
        "set -e",
        *setup,
        f"{start} & echo $! > {pidfile}",
        "status=0; wait $! || status=$?",
        'echo "example-daemon-exit=$status" >&2',
        *after,
    ]
    bin_dir = os.path.dirname(sys.executable)  # this tree's `jailshim`
    env = {**clean_env(), "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
    shell = in_stock_layout(binds, ["sh", "-c", "; ".join(steps)], userns=False)
    stderr = ""
    with host_clock_untouched():
        proc = spawn([*GUARD, *shell], env)
        try:
            for command, expected in clients:
                answer = ""
                deadline = time.monotonic() + 30
                while expected not in answer and time.monotonic() < deadline:
                    assert proc.poll() is None, proc.communicate()
                    time.sleep(0.2)
                    answer = subprocess.run(
                        ["sh", "-c", f"timeout 10 {command}"],
                        capture_output=True,
                        text=True,
                        check=False,
                    ).stdout
                assert expected in answer, (command, answer)
            assert (jail / "etc/resolv.conf").is_file()  # the pool names resolve in the jail
            time.sleep(3)  # ntpd's first lookups (one a second): it aborted here without
            # libgcc_s.so.1 in the jail, which jailshim now places (the README copies none)
            assert (jail / UNWINDER_IN_JAIL).is_file()
            assert proc.poll() is None, proc.communicate()
            pid = int(pidfile.read_text())
            pinned = pids.pin(pid)
            assert pinned is not None and pid in descendants(proc.pid)
            try:
                pids.send(pinned, signal.SIGINT)  # Ctrl-C, as the README says
            finally:
                pids.close([pinned])
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None or not stderr:
                _, stderr = stop(proc)
    assert "Traceback" not in stderr
    assert proc.returncode == 0, stderr  # each command after the stop exited 0 (set -e)
    assert "example-daemon-exit=0" in stderr, stderr
    assert REFUSED_WRITE in stderr, stderr
    read = config_events(stderr)
    assert read and read[0]["chroot"] == str(jail), stderr
    assert not (jail / "dev").exists()
    left = {str(p.relative_to(jail)) for p in jail.rglob("*") if not p.is_dir()}
    kept = {"usr/share/zoneinfo/leap-seconds.list", "var/lib/ntpsec/ntp.drift"}
    assert left <= kept, left  # jailshim's libgcc_s.so.1 taken back with dev/ and resolver
    assert host_state(stock) == host_before
