"""Attacks on the daemon adapters (issue 25, items 4 and 6): a checker that acts before the jail
is judged, a checker that outlives its time-out, jails that are the host's own directories
by another name (a relative chroot, `..`, a symlink, a bind mount), and a queue directory
postfix's user swaps after the vet.

Every run that could write into a host directory if jailshim were wrong runs in a scratch root:
a private mount namespace where / is an overlay of the real / with a tmpfs upper layer, so what
a wrong run makes lands in that tmpfs (listed, then gone with the namespace), never in the
host's own /, /etc or /var/lib.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jailshim.daemons import checkconf, haproxy, stunnel
from jailshim.errors import ConfigError
from jailshim.jail import hostdirs
from tests import pids
from tests.daemons import free_port, stop
from tests.handshake import wait_until
from tests.support import EXCHANGER, clean_env, compile_c, jailshim_argv, need, run
from tests.test_postfix import write_postfix_config

_QUEUE_NAMES = {"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming"}
_QUEUE_NAMES |= {"maildrop", "pid", "private", "public", "saved", "trace"}
# what a correct run may write in the scratch root: jailshim's lock directory, Python's caches
# beside the sources, the test's own area
_EXPECTED_WRITES = ("run/", "work/", "tmp/", "root/")

_SCRATCH_ROOT = r"""
set -e
scratch=$1; shift
mount -t tmpfs -o mode=0755 tmpfs "$scratch"
mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" \
    "$scratch/root"
for d in proc dev sys; do mount --rbind "/$d" "$scratch/root/$d"; done
set +e
chroot "$scratch/root" sh -c 'cd "$0" && exec "$@"' "$PWD" "$@"
code=$?
echo "--- written in the scratch root ---"
cd "$scratch/upper" && find . -mindepth 1 | sed 's|^\./||'
exit $code
"""


class ScratchRun:
    """A `jailshim` run in a scratch root, and the paths it (or anything it ran) wrote there."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        head, _, listing = stdout.partition("--- written in the scratch root ---\n")
        self.code, self.stdout, self.stderr = code, head, stderr
        self.written = [p for p in listing.splitlines() if p]

    def written_in(self, directory: str) -> list[str]:
        """What was made in ``directory`` (a host path) or below it, beyond what a correct
        run writes (its lock, Python's caches, the test's area)."""
        inside = directory.strip("/")
        found = [p for p in self.written if not p.startswith(_EXPECTED_WRITES)]
        found = [p for p in found if p not in ("run", "work", "tmp", "root")]
        if not inside:
            return found
        return [p for p in found if p.startswith(f"{inside}/")]

    @property
    def error(self) -> str:
        import json

        failures = [
            json.loads(line)
            for line in self.stderr.splitlines()
            if line.startswith("{") and '"event": "failed"' in line
        ]
        assert len(failures) == 1, self.stderr
        return str(failures[0]["error"])


def in_scratch_root(tmp: Path, *args: str, env: dict[str, str] | None = None) -> ScratchRun:
    """Run `jailshim ARGS` with / an overlay whose upper layer is a tmpfs in a private mount
    namespace; the host's / is the lower layer and is never written."""
    need(shutil.which("unshare") is not None, "needs unshare(1)")
    scratch = tmp / "scratch-root"
    scratch.mkdir()
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SCRATCH_ROOT, "sh"]
    proc = subprocess.run(
        [*argv, str(scratch), *jailshim_argv(*args)],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=180,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return ScratchRun(proc.returncode, proc.stdout, proc.stderr)


# --- item 4: the checker runs only on a jail already judged --------------------------------


@pytest.mark.parametrize(
    ("queue", "chrooted"),
    [("/", True), ("/etc", True), ("/var/lib", True), ("/", False)],
)
def test_postfix_check_never_runs_on_a_refused_queue_directory(
    tmp_path: Path, postfix_bin: str, queue: str, chrooted: bool
) -> None:
    """queue_directory = / (or /etc, /var/lib): `postfix check` made /active, /bounce … there
    and ran find over /, then the refusal came. Now the refusal (78, one sentence) comes first
    and nothing is made — also with no service chrooted (no jail), where postfix check still
    writes its queue."""
    area = tmp_path / "pfx"
    area.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    setup = write_postfix_config(area, port=25690 if chrooted else None)
    if not chrooted:
        services = subprocess.run(
            ["postconf", "-c", str(setup.conf), "-F", "*/*/chroot"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        flips = [f"{line.split(' = ')[0]}=n" for line in services]
        subprocess.run(["postconf", "-c", str(setup.conf), "-Fe", *flips], check=True)
    subprocess.run(
        ["postconf", "-c", str(setup.conf), "-e", f"queue_directory={queue}"], check=True
    )
    os.utime(setup.conf / "main.cf", (time.time() - 60, time.time() - 60))
    os.utime(setup.conf / "master.cf", (time.time() - 60, time.time() - 60))
    env = clean_env(MAIL_CONFIG=str(setup.conf))
    started = time.monotonic()
    result = in_scratch_root(tmp_path, "run", "--", postfix_bin, "status", env=env)
    assert result.code == 78, result.stderr
    words = ("system directory", "which is no jail")
    assert any(w in result.error for w in words), result.error
    assert result.written_in(queue) == [], result.written
    assert not _QUEUE_NAMES & {p.rsplit("/", 1)[-1] for p in result.written}, result.written
    assert time.monotonic() - started < 30  # no find over /


def test_postfix_check_never_walks_a_data_directory_that_is_the_hosts(
    tmp_path: Path, postfix_bin: str
) -> None:
    """data_directory = /: postfix check's check-warn runs `find $data_directory/.` over all of
    / (and create-missing would make it): refused first, 78, nothing walked or made."""
    area = tmp_path / "pfx"
    area.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    setup = write_postfix_config(area, port=25692, main={"data_directory": "/"})
    started = time.monotonic()
    result = in_scratch_root(tmp_path, "run", "--", postfix_bin, "-c", str(setup.conf), "status")
    assert result.code == 78, result.stderr
    assert "`postfix's checker` would act in /" in result.error, result.error
    assert result.written_in("/") == [], result.written
    assert time.monotonic() - started < 30


def _hanging_checker(tmp: Path) -> tuple[list[str], Path]:
    """A checker that starts a child which ignores TERM and sleeps, then hangs itself; the
    child writes its PID where the test can read it."""
    pidfile = tmp / "child.pid"
    script = textwrap.dedent(
        f"""
        sh -c 'trap "" TERM HUP; echo $$ > {shlex.quote(str(pidfile))}; exec sleep 300' &
        echo checking
        exec sleep 300
        """
    )
    return ["sh", "-c", script], pidfile


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def _living(sid: int) -> list[int]:
    """The processes of session ``sid`` that still run (a zombie has ended; its parent reaps
    it, here the machine's PID 1)."""
    return [pid for pid, _, state in checkconf.session_members(sid) if state not in ("Z", "X")]


def _wait_for_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            text = path.read_text().strip()
            if text:
                return text
        time.sleep(0.01)
    raise AssertionError(f"{path} not written within {timeout}s")


@contextlib.contextmanager
def _killed_afterwards(pidfile: Path) -> Iterator[None]:
    """Whatever the test's checker left (before the fix: its child) is killed, through a pidfd
    on the `sleep` started since the test began under the PID it wrote."""
    began = pids.mark()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            pids.kill([pids.pin(pid, pids.comm_is("sleep"), pids.started_since(began))])


@pytest.mark.parametrize("how", ["pipes", "terminal"])
def test_a_checker_child_that_ignores_term_ends_with_the_time_out(tmp_path: Path, how: str) -> None:
    """A checker that forks a child ignoring TERM and hangs: after the time-out no process of
    its session is left (before, only the checker itself was killed; its child ran on)."""
    argv, pidfile = _hanging_checker(tmp_path)
    with _killed_afterwards(pidfile):
        started = time.monotonic()
        with pytest.raises(ConfigError, match="did not finish in 1 s"):
            if how == "pipes":
                checkconf.run(argv, "test", timeout=1)
            else:
                checkconf.run_on_terminal(argv, "test", timeout=1)
        # ended by the 1 s time-out, not by the checker's own 300 s (was "< 8", which a slow
        # start on a loaded machine could pass)
        assert time.monotonic() - started < 300
        child = int(_wait_for_file(pidfile))
        assert not _alive(child)
        assert _living(child) == []


_STOPPED_DRIVER = """
import signal, sys
from jailshim import stopsignals
from jailshim.daemons import checkconf
for sig in stopsignals.STOP_SIGNALS:
    signal.signal(sig, stopsignals.interrupt)
try:
    checkconf.run_on_terminal(sys.argv[1:], "test", timeout=120)
except stopsignals.Interrupted:
    sys.exit(143)
"""


def test_a_stop_signal_to_jailshim_ends_the_checkers_whole_session(tmp_path: Path) -> None:
    """SIGTERM to jailshim while its checker runs (postfix check on a pty): the checker and
    every process of its session are killed and reaped before jailshim exits."""
    argv, pidfile = _hanging_checker(tmp_path)
    with _killed_afterwards(pidfile):
        proc = subprocess.Popen(
            [sys.executable, "-c", _STOPPED_DRIVER, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            child = int(_wait_for_file(pidfile))
            checker_sid = os.getsid(child)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
        finally:
            stop(proc)
        assert proc.returncode == 143, err
        assert not _alive(child)
        assert _living(checker_sid) == []


def test_haproxy_check_cancelled_by_a_failed_run_leaves_no_session(tmp_path: Path) -> None:
    """`haproxy -c` runs beside prepare; a run that fails first cancels it: its whole session
    ends (here a stand-in haproxy whose child ignores TERM)."""
    argv, pidfile = _hanging_checker(tmp_path)
    fake = tmp_path / "haproxy"
    fake.write_text(f"#!/bin/sh\n{argv[2]}")
    fake.chmod(0o755)
    with _killed_afterwards(pidfile):
        pending = haproxy.ADAPTER.start_check([str(fake), "-f", "/dev/null"])
        child = int(_wait_for_file(pidfile))
        pending.cancel()
        assert not _alive(child)
        assert _living(child) == []


# --- item 6: the host's own directories, by whatever name ----------------------------------


def test_the_rule_refuses_shared_directories_and_keeps_a_packages_own(tmp_path: Path) -> None:
    """By device and inode: /var/lib, /var/../var/lib and a symlink's target are the host's;
    a package's own jail (listed by its package, not base-files) is not."""
    for shared in ("/", "/var/lib", "/var/../var/lib", "/usr/lib", "/etc", "/tmp", "/dev/shm"):
        st = os.stat(shared)
        assert hostdirs.host_directory(st, os.path.realpath(shared)) is not None, shared
    link = tmp_path / "lib"
    link.symlink_to("/var/lib")
    assert hostdirs.host_directory(os.stat(link), str(link)) is not None
    for own in ("/var/lib/haproxy", "/var/spool/postfix", "/var/lib/unbound", "/etc/unbound"):
        if os.path.isdir(own):
            assert hostdirs.host_directory(os.stat(own), own) is None, own
    assert hostdirs.host_directory(os.stat(tmp_path), str(tmp_path)) is None


def test_the_skeleton_is_base_files_list_and_every_parent() -> None:
    """PURE: the FHS directories, each path of dpkg's list and its parents, once each."""
    listing = "/.\n/var\n/var/lib\n/etc/default\n/usr/share/doc/base-files/README\n"
    paths = hostdirs.skeleton(listing)
    assert len(paths) == len(set(paths))
    for path in ("/", "/var/lib", "/etc/default", "/usr/share/doc/base-files", "/usr/share"):
        assert path in paths
    assert "/var/lib/haproxy" not in paths


def _haproxy_config(tmp: Path, chroot: str) -> Path:
    config = tmp / "haproxy.cfg"
    config.write_text(
        "global\n"
        f"    chroot {chroot}\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\n"
        "listen test\n    bind 127.0.0.1:1\n    server s 127.0.0.1:2\n"
    )
    return config


@pytest.mark.parametrize("spelling", ["plain", "dotdot", "symlink", "bind"])
def test_haproxy_chroot_var_lib_by_any_name_is_refused(
    tmp_path: Path, haproxy_bin: str, spelling: str
) -> None:
    """haproxy's `chroot /var/lib` prepared /var/lib/dev/{null,random,urandom}: now 78 and one
    sentence, however /var/lib is named; nothing is made in it."""
    tmp_path.chmod(0o755)
    names = {
        "plain": "/var/lib",
        "dotdot": "/var/../var/lib",
        "symlink": f"{tmp_path}/lib/.",
        "bind": f"{tmp_path}/bound",
    }
    (tmp_path / "lib").symlink_to("/var/lib")
    config = _haproxy_config(tmp_path, names[spelling])
    args = ["run", "--no-verify", "--", haproxy_bin, "-c", "-f", str(config)]
    if spelling == "bind":
        (tmp_path / "bound").mkdir()
        result = _in_scratch_root_with_bind(tmp_path, tmp_path / "bound", args)
    else:
        result = in_scratch_root(tmp_path, *args)
    assert result.code == 78, result.stderr
    assert "system directory /var/lib" in result.error, result.error
    assert result.written_in("/var/lib") == [], result.written


def _in_scratch_root_with_bind(tmp: Path, target: Path, args: list[str]) -> ScratchRun:
    """in_scratch_root, with /var/lib bound at ``target`` inside the scratch root first."""
    scratch = tmp / "scratch-root"
    scratch.mkdir()
    script = _SCRATCH_ROOT.replace(
        'set +e\nchroot "$scratch/root"',
        f'mount --bind "$scratch/root/var/lib" "$scratch/root{target}"\n'
        'set +e\nchroot "$scratch/root"',
    )
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    proc = subprocess.run(
        [*argv, str(scratch), *jailshim_argv(*args)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=180,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return ScratchRun(proc.returncode, proc.stdout, proc.stderr)


def test_prepare_refuses_var_lib_by_any_name(tmp_path: Path) -> None:
    """`prepare --chroot` takes the same rule: /var/../var/lib is /var/lib."""
    need(os.geteuid() == 0, "needs root")
    for name in ("/var/lib", "/var/../var/lib", "/usr/lib", "/etc/default"):
        result = run("prepare", "--chroot", name, "--dry-run")
        assert result.code == 78, result.stderr
        assert "system directory" in result.error


def test_unbound_relative_chroot_is_refused_before_anything_is_prepared(
    tmp_path: Path, unbound_bin: str
) -> None:
    """unbound's `chroot: ".."` from /A/a/b/c: jailshim prepared /A/a/b (its own cwd + ..) and
    exited 0, while unbound went elsewhere — chdir() to each `directory:` as it parses, then
    chdir("..") and chroot("..") (here its root was /A). Now: 78, one sentence, and nothing is
    prepared anywhere."""
    tmp_path.chmod(0o755)
    inner = tmp_path / "a" / "b"
    cwd = inner / "c"
    cwd.mkdir(parents=True)
    port = free_port()
    config = inner / "unbound.conf"
    config.write_text(
        "server:\n"
        '    chroot: ".."\n'
        '    directory: ".."\n'
        '    username: "unbound"\n'
        f"    interface: 127.0.0.1@{port}\n    port: {port}\n"
        '    do-ip6: no\n    do-daemonize: no\n    use-syslog: no\n    pidfile: ""\n'
        '    module-config: "iterator"\n    access-control: 127.0.0.0/8 allow\n'
        "remote-control:\n    control-enable: no\n"
    )
    argv = jailshim_argv("run", "--", unbound_bin, "-d", "-c", "../unbound.conf")
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )
    try:
        code = proc.wait(timeout=60)
    finally:
        _, stderr = stop(proc)
    assert code == 78, stderr
    failed = [line for line in stderr.splitlines() if '"failed"' in line]
    assert len(failed) == 1 and "chroot '..'" in failed[0] and "relative path" in failed[0]
    for directory in (tmp_path, tmp_path / "a", inner, cwd):
        assert not (directory / "dev").exists(), directory


def test_haproxy_relative_chroot_is_taken_from_minus_c_up_to_3_1() -> None:
    """PURE: chroot() from haproxy's current directory: -C DIR up to 3.1, the starting one
    from 3.2 (it goes back after reading the configuration), the starting one without -C."""
    assert haproxy.jail_of("j", "/start", None, "2.6.12") == "/start/j"
    assert haproxy.jail_of("j", "/start", "/etc/h", "2.6.12") == "/etc/h/j"
    assert haproxy.jail_of("j", "/start", "conf", "3.1.9") == "/start/conf/j"
    assert haproxy.jail_of("j", "/start", "/etc/h", "3.2.0") == "/start/j"
    assert haproxy.jail_of("/abs", "/start", "/etc/h", "2.6.12") == "/abs"


def test_haproxy_relative_chroot_with_minus_c_is_read_from_there(
    tmp_path: Path, haproxy_bin: str
) -> None:
    """haproxy 2.6 -C DIR: init() chdir()s there before reading and chroot() is relative to it."""
    conf = tmp_path / "conf"
    conf.mkdir()
    _haproxy_config(conf, "jail")
    config = haproxy.ADAPTER.read([haproxy_bin, "-C", str(conf), "-f", "haproxy.cfg"], {})
    assert config.chroot == f"{conf}/jail"


def test_stunnel_relative_chroot_is_from_its_starting_directory(tmp_path: Path) -> None:
    """stunnel's change_root() runs before daemonize() moves to /: from where it starts."""
    conf = tmp_path / "stunnel.conf"
    conf.write_text("chroot = jail/\nsetuid = nobody\n[svc]\naccept = 127.0.0.1:1\n")
    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        config = stunnel.ADAPTER.read(["stunnel", str(conf)], {})
    finally:
        os.chdir(here)
    assert config.chroot == f"{tmp_path}/jail"


def test_nsd_relative_chroot_is_refused_in_one_sentence(tmp_path: Path) -> None:
    """nsd chdir()s to zonesdir, then chroot()s from there: a relative chroot is refused."""
    need(shutil.which("nsd-checkconf") is not None, "needs nsd-checkconf (Debian package nsd)")
    conf = tmp_path / "nsd.conf"
    # relative everywhere, so nsd-checkconf accepts it (its files must be "inside" the chroot)
    conf.write_text(
        'server:\n    chroot: "jail"\n    zonesdir: "jail"\n    pidfile: "jail/nsd.pid"\n'
        '    database: ""\n    xfrdfile: "jail/xfrd.state"\n    zonelistfile: "jail/zone.list"\n'
        '    xfrdir: "jail/xfr"\n'
    )
    result = run("run", "--dry-run", "--", "nsd", "-c", str(conf))
    assert result.code == 78 and "relative path" in result.error, result.stderr
    result = run("run", "--dry-run", "--", "nsd", "-t", "jail", "-c", str(conf))
    assert result.code == 78 and "relative path" in result.error, result.stderr


def test_postfix_relative_queue_directory_is_refused_in_one_sentence(
    tmp_path: Path, postfix_bin: str
) -> None:
    """Every postfix program takes a relative queue_directory from another directory."""
    tmp_path.chmod(0o755)
    setup = write_postfix_config(tmp_path, port=25691, main={"queue_directory": "spool"})
    result = run("run", "--", postfix_bin, "-c", str(setup.conf), "status")
    assert result.code == 78, result.stderr
    assert "queue_directory 'spool'" in result.error and "relative path" in result.error
    assert not (tmp_path / "spool").exists() and not Path("spool").exists()


def test_a_packages_own_jail_stays_accepted(tmp_path: Path) -> None:
    """Debian's stock jails are not the host's: each is a jail (Jail opens it)."""
    from jailshim.jail.safepath import Jail

    seen = 0
    for own in ("/var/lib/haproxy", "/var/spool/postfix", "/var/lib/unbound", "/etc/unbound"):
        if os.path.isdir(own):
            with Jail(own) as jail:
                assert jail.real == own
            seen += 1
    need(seen > 0, "needs a stock daemon package (haproxy, postfix, unbound)")


def test_postfix_check_never_follows_a_queue_directory_swapped_after_the_vet(
    tmp_path: Path, postfix_bin: str
) -> None:
    """queue_directory = AREA/queue where AREA belongs to the daemon's user postfix (a
    config's author who gave postfix its own tree). postfix exchanges AREA/queue with a
    symlink to a directory outside the jail, in a loop (renameat2 RENAME_EXCHANGE). run's
    vet_jail sees a directory (a symlink is refused: 78 and nothing runs); `postfix check`
    then creates the missing queue directories through the path, by then the symlink: root
    made OUTSIDE/active (postfix's, 0700) in 1 of 3 runs by hand, before postfix's own
    refusal. Up to 15 runs here; any entry made outside fails the test."""
    from tests.test_postfix import write_postfix_config

    exchanger = compile_c(tmp_path, "exchange", EXCHANGER, "-O2")
    tmp_path.chmod(0o755)
    area = tmp_path / "area"
    area.mkdir(mode=0o755)
    setup = write_postfix_config(area)
    owner = pwd.getpwnam("postfix")
    os.chown(area, owner.pw_uid, owner.pw_gid)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    os.symlink(outside, area / "link")
    os.lchown(area / "link", owner.pw_uid, owner.pw_gid)
    env = clean_env(MAIL_CONFIG=str(setup.conf))
    queue = area / "queue"
    area_fd = os.open(area, os.O_PATH | os.O_DIRECTORY)
    for _ in range(15):
        racer = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={owner.pw_uid}",
                f"--regid={owner.pw_gid}",
                "--clear-groups",
                str(exchanger),
                f"fd:{area_fd}",
                "queue",
                "link",
            ],
            pass_fds=(area_fd,),
        )
        try:
            # racing once it has swapped (it was "0.1 s after the start": a slow start left
            # the run unraced, and the test passed without looking)
            wait_until(queue.is_symlink, "the racer to swap queue and link")
            run("run", "--no-verify", "--", "/usr/sbin/postfix", "status", env=env)
        finally:
            racer.send_signal(signal.SIGTERM)
            racer.wait(timeout=10)
            if queue.is_symlink():
                os.rename(area / "queue", area / "tmp")
                os.rename(area / "link", area / "queue")
                os.rename(area / "tmp", area / "link")
            run("teardown", "--chroot", str(queue))
        if any(outside.iterdir()):
            break
    os.close(area_fd)
    assert sorted(p.name for p in outside.iterdir()) == []
