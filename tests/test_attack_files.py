"""Jail files attacked again (issue 25): the daemon's user racing a copy of a root-only file,
names jailshim keeps for itself given as jail files, a full disk under a copy and under the
journal, the lock files root keeps in /run and a user's flock on the jail, a user's symlink
(or a FUSE server's) to a file it cannot reach, a guess at a copy's path. Every test here
failed before its fix."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import pids
from tests.handshake import wait_until
from tests.support import NOBODY, TESTS, clean_env, jailshim_argv, need, run

_SECRET = b"TOPSECRET"
# Every inotify event on the directory: whatever jailshim does there wakes the attacker.
_IN_ALL_EVENTS = 0x00000FFF


def _owned_by_nobody(jail: Path, inside: Path) -> None:
    """The jail and ``inside`` owned by the daemon's user, the directories between them root's:
    the user's own directory directly in its own jail root could be moved out of the jail, and
    is refused (tests/test_attack_outside.py); below root's it is worked in."""
    os.chown(jail, NOBODY, NOBODY)
    inside.mkdir(parents=True, exist_ok=True)
    os.chown(inside, NOBODY, NOBODY)


def _nobody_watching(where: Path) -> int:
    """In a forked child: become the daemon's user in ``where`` (entered as root: the test's
    tmp_path above may be 0700) and watch it; the inotify fd (non-blocking)."""
    os.chdir(where)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    libc = ctypes.CDLL(None, use_errno=True)
    inotify = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if inotify < 0 or libc.inotify_add_watch(inotify, b".", _IN_ALL_EVENTS) < 0:
        raise OSError(ctypes.get_errno(), "inotify")
    return inotify


def _attacker(where: Path, names: tuple[str, ...], ready: int, stop: int, report: int) -> None:
    """The daemon's user, in a forked child: in its own setgid directory, on every inotify
    event it tries to open each name jailshim may write there and keeps every fd it gets;
    told to stop, it reads them all and reports what they hold. Never returns."""
    code = 1
    try:
        inotify = _nobody_watching(where)
        held: list[int] = []
        os.write(ready, b"r")
        while True:
            readable, _, _ = select.select([inotify, stop], [], [])
            if inotify in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(inotify, 65536):
                        pass
                for name in names:
                    with contextlib.suppress(OSError):
                        held.append(os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW))
            if stop in readable:
                break
        seen = b"".join(os.pread(fd, 4096, 0) for fd in held)
        os.write(report, struct.pack("I", len(held)) + seen[:60000])
        code = 0
    finally:
        os._exit(code)


@contextlib.contextmanager
def _racing(where: Path, names: tuple[str, ...]) -> Iterator[list[bytes]]:
    """A nobody process racing in ``where`` while the body runs; the list gets, afterwards,
    everything the files it managed to open held."""
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _attacker(where, names, ready_w, stop_r, report_w)
    for fd in (ready_w, stop_r, report_w):
        os.close(fd)
    seen: list[bytes] = []
    try:
        assert os.read(ready_r, 1) == b"r", "the attacker did not start"
        yield seen
        os.write(stop_w, b"s")
        data = b""
        while chunk := os.read(report_r, 65536):
            data += chunk
        seen.append(data[4:])
    finally:
        for fd in (ready_r, stop_w, report_r):
            os.close(fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)  # by PID: the attacker this test forked (already gone when done)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) in (0, -9)


def test_the_daemons_user_never_reads_a_root_only_copy_while_it_is_made(
    jail: Path, area: Path
) -> None:
    """The daemon's user owns the jail and the copy's directory (setgid, its group) and opens
    the temporary copy on every inotify event: a file created with its final mode 0640 took
    that group, and an fd opened before the chown read TOPSECRET after it (18 of 20 copies,
    9 of 10 refreshes). The copy must be root:root with its final bits before any other user
    can open it, on the copy and the refresh path alike."""
    secret = area / "keys" / "secret.pem"
    secret.parent.mkdir()
    secret.write_bytes(_SECRET + b" 0\n")
    secret.chmod(0o640)
    inside = jail / str(secret.parent).lstrip("/")
    _owned_by_nobody(jail, inside)
    inside.chmod(0o2755)  # setgid: new entries take the directory's group (nobody's)
    names = (".jailshim-new-secret.pem", "secret.pem")
    args = ("--chroot", str(jail), "--user", "nobody", "--no-verify", "--file", str(secret))
    leaks = {"copy": 0, "refresh": 0}
    trials = 20
    for trial in range(trials):
        with _racing(inside, names) as seen:
            result = run("prepare", *args)
        assert result.code == 0, result.stderr
        leaks["copy"] += _SECRET in seen[0]
        secret.write_bytes(_SECRET + f" {trial + 1}\n".encode())  # stale: a refresh is due
        with _racing(inside, names) as seen:
            result = run("prepare", *args)
        assert result.code == 0, result.stderr
        assert [e["outcome"] for e in result.named("jail_file")] == ["refreshed"]
        leaks["refresh"] += _SECRET in seen[0]
        assert run("teardown", "--chroot", str(jail)).code == 0
    assert leaks == {"copy": 0, "refresh": 0}, f"read by the daemon's user in {trials} trials"


def test_a_name_jailshim_keeps_for_itself_is_refused_and_the_jail_stays_usable(
    jail: Path, area: Path
) -> None:
    """A --file or --log-socket with a component starting .jailshim-new- or
    .jailshim-displaced- was placed (exit 0); its record then read as forged, and every
    prepare and teardown of the jail exited 78. Refused at input (64), nothing made."""
    plain = area / "hosts"
    plain.write_text("192.0.2.1 one.test\n")
    named = area / ".jailshim-new-hosts"
    named.write_text("192.0.2.2 two.test\n")
    below = area / ".jailshim-displaced-etc" / "hosts"
    below.parent.mkdir()
    below.write_text("192.0.2.3 three.test\n")
    sock_path = area / ".jailshim-new-log"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    args = ("prepare", "--chroot", str(jail), "--no-verify")
    try:
        for given in (
            ("--file", str(named)),
            ("--file", str(below)),
            ("--log-socket", str(sock_path)),
        ):
            refused = run(*args, "--file", str(plain), *given)
            assert refused.code == 64, refused.stderr
            assert "jailshim's own" in refused.error and given[1] in refused.error
            assert os.listdir(jail) == []
        placed = run(*args, "--file", str(plain))
        assert placed.code == 0, placed.stderr
        assert run("teardown", "--chroot", str(jail)).code == 0
        assert os.listdir(jail) == []
    finally:
        sock.close()


def test_a_reserved_name_from_a_daemons_config_is_a_config_error(
    haproxy_bin: str, jail: Path, area: Path
) -> None:
    """A log socket named in haproxy's config (an adapter derives sockets from config) with a
    reserved name is the config's fault: 78, before anything is made."""
    cfg = area / "haproxy.cfg"
    cfg.write_text(
        f"global\n  chroot {jail}\n  log {area}/.jailshim-displaced-log local0\n"
        "defaults\n  mode http\n  timeout client 1s\n  timeout server 1s\n"
        "  timeout connect 1s\nfrontend f\n  bind 127.0.0.1:18443\n"
    )
    refused = run("run", "--dry-run", "--", haproxy_bin, "-f", str(cfg))
    assert refused.code == 78, refused.stderr
    assert "'.jailshim-displaced-log'" in refused.error and "jailshim's own" in refused.error
    assert os.listdir(jail) == []


@pytest.fixture
def small_jail(area: Path) -> Path:
    """A jail on a 64 KiB tmpfs (unmounted by ``area`` afterwards)."""
    path = area / "small"
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(path)], check=True
    )
    return path


def _fill(jail: Path) -> Path:
    """Fill the jail's filesystem up to its last byte; the file that does it."""
    filler = jail / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    assert os.statvfs(jail).f_bavail == 0
    return filler


def test_a_full_disk_under_a_copy_is_said_naming_the_file(small_jail: Path, area: Path) -> None:
    """A jail file larger than the space left: "Preparing …/dev failed: No space left on
    device" named neither the file nor the cause. One sentence naming the copy's path and a
    full disk (71); nothing is left in the jail."""
    big = area / "big.conf"
    big.write_bytes(os.urandom(200_000))
    result = run("prepare", "--chroot", str(small_jail), "--no-verify", "--file", str(big))
    assert result.code == 71, result.stderr
    assert f"{small_jail}{big} cannot be written: the disk is full (ENOSPC)" in result.error
    assert os.listdir(small_jail) == []


def test_a_used_up_quota_under_a_copy_is_said_naming_the_file(jail: Path, area: Path) -> None:
    """EDQUOT as a container without CAP_SYS_RESOURCE meets it (root ignores quota limits
    otherwise, and this machine's tmpfs has no quota support): strace makes the copy's fsync,
    where delayed allocation reports it, answer EDQUOT. One sentence naming the file (71)."""
    strace = shutil.which("strace")
    need(strace is not None, "needs strace (scripts/bootstrap.sh installs it)")
    assert strace is not None
    conf = area / "quota.conf"
    conf.write_text("setting\n")
    inject = [strace, "-f", "-qq", "-o", "/dev/null", "-e", "inject=fsync:error=EDQUOT"]
    args = ("prepare", "--chroot", str(jail), "--no-verify", "--file", str(conf))
    result = run(*args, wrap=inject)
    assert result.code == 71, result.stderr
    assert f"{jail}{conf} cannot be written: the disk quota is used up (EDQUOT)" in result.error
    assert os.listdir(jail) == []


def test_a_full_disk_leaves_no_temporary_journal(small_jail: Path, area: Path) -> None:
    """The journal is rewritten by a temporary name and a rename: on a full disk teardown
    stopped at its first record (71) and left dev/.jailshim-state.json.new. Teardown now
    goes on (forgetting can wait; each undo frees space) and gives the jail back; a prepare
    on a full disk says so in one sentence and leaves nothing."""
    conf = area / "small.conf"
    conf.write_text("setting\n")
    args = ("--chroot", str(small_jail), "--no-verify", "--file", str(conf))
    assert run("prepare", *args).code == 0
    filler = _fill(small_jail)
    torn = run("teardown", "--chroot", str(small_jail))
    assert torn.code == 0, torn.stderr
    assert os.listdir(small_jail) == [filler.name]

    refused = run("prepare", *args)
    assert refused.code == 71, refused.stderr
    assert "/dev/.jailshim-state.json, jailshim's record" in refused.error
    assert "the disk is full (ENOSPC)" in refused.error
    assert os.listdir(small_jail) == [filler.name]


_LOCKS = Path("/run/jailshim/locks")
# Takes the jail's lock ROUNDS times and writes "in PID" / "out PID" around a short hold.
_CONTENDER = """
import os, sys, time
from jailshim.jail.lock import JailLock
jail, log, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(jail, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
out = os.open(log, os.O_WRONLY | os.O_APPEND)
for _ in range(rounds):
    with JailLock(fd, jail, 60):
        os.write(out, f"in {os.getpid()}\\n".encode())
        time.sleep(0.002)
        os.write(out, f"out {os.getpid()}\\n".encode())
"""


def _lock_file(jail: Path) -> Path:
    st = jail.stat()
    return _LOCKS / f"{st.st_dev}-{st.st_ino}"


@contextlib.contextmanager
def _users_lock_on(jail: Path) -> Iterator[None]:
    """nobody holds the jail directory's flock (ignored by jailshim), so root's lock file is
    the only thing that serialises root's runs."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import fcntl, os, time; fd = os.open({str(jail)!r}, os.O_RDONLY); "
         "os.setgroups([]); os.setgid(65534); os.setuid(65534); fcntl.flock(fd, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()  # by PID: the holder this test started
        holder.wait()
        if holder.stdout:
            holder.stdout.close()


def test_root_lock_files_are_removed_when_no_longer_needed(area: Path) -> None:
    """One lock file per jail ever prepared stayed in /run/jailshim/locks (322 after an
    afternoon): each prepare and teardown now removes its own as it lets go."""
    conf = area / "conf"
    conf.write_text("setting\n")
    for i in range(6):
        jail = area / f"jail{i}"
        jail.mkdir()
        args = ("--chroot", str(jail), "--no-verify", "--file", str(conf))
        assert run("prepare", *args).code == 0
        assert not _lock_file(jail).exists()
        assert run("teardown", "--chroot", str(jail)).code == 0
        assert not _lock_file(jail).exists()


def test_root_lock_still_serialises_while_its_file_is_removed(jail: Path, area: Path) -> None:
    """Removing a flocked file another process waits on breaks the lock: the waiter gets a
    lock on a file no one else sees while a newcomer locks a new one. 8 processes take the
    jail's lock 40 times each, with a user holding the jail directory's flock (ignored), so
    only root's file serialises them: every hold is alone, and no file is left."""
    log = area / "holds"
    log.touch()
    rounds = 40
    with _users_lock_on(jail):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _CONTENDER, str(jail), str(log), str(rounds)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    lines = log.read_text().splitlines()
    assert len(lines) == 8 * rounds * 2
    holds = list(zip(lines[0::2], lines[1::2], strict=True))
    overlaps = [h for h in holds if (h[0].split()[0], h[1]) != ("in", h[0].replace("in", "out"))]
    assert overlaps == []
    assert not _lock_file(jail).exists()


def _mover(where: Path, tmp: str, away: Path, *, ready: int, stop: int, report: int) -> None:
    """The daemon's user, in a forked child: the moment jailshim's temporary copy appears in
    its own directory, it renames the file to a directory of its own outside the jail (a
    non-directory moves between any two parents its user can write) and notes the size it
    had; told to stop, it reports that size and the size the file has there now (-1, -1: it
    never caught the file). Never returns."""
    code = 1
    try:
        away_fd = os.open(away, os.O_RDONLY | os.O_DIRECTORY)  # as root, before the drop
        inotify = _nobody_watching(where)
        os.write(ready, b"r")
        moved_at = -1
        while True:
            readable, _, _ = select.select([inotify, stop], [], [])
            if inotify in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(inotify, 65536):
                        pass
                if moved_at < 0:
                    with contextlib.suppress(OSError):
                        os.rename(tmp, tmp, dst_dir_fd=away_fd)
                        moved_at = os.stat(tmp, dir_fd=away_fd, follow_symlinks=False).st_size
            if stop in readable:
                break
        now = os.stat(tmp, dir_fd=away_fd, follow_symlinks=False).st_size if moved_at >= 0 else -1
        os.write(report, struct.pack("qq", moved_at, now))
        code = 0
    finally:
        os._exit(code)


def test_root_writes_no_byte_of_a_copy_outside_the_jail(jail: Path, area: Path) -> None:
    """The daemon's user owns the copy's directory (below root's, so the directory itself
    cannot leave the jail) and moves jailshim's temporary copy out of the jail the moment it
    appears: root kept writing the host file's bytes through its fd into a file that was now
    outside the jail. The copy is written unnamed (O_TMPFILE) and gets a name only whole."""
    host = area / "conf" / "big.conf"
    host.parent.mkdir()
    host.write_bytes(b"x" * (3 << 20))
    inside = jail / str(host.parent).lstrip("/")
    _owned_by_nobody(jail, inside)
    away = area / "away"  # the user's own directory on the same filesystem, outside the jail
    away.mkdir()
    os.chown(away, NOBODY, NOBODY)
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _mover(inside, ".jailshim-new-big.conf", away, ready=ready_w, stop=stop_r, report=report_w)
    for fd in (ready_w, stop_r, report_w):
        os.close(fd)
    try:
        assert os.read(ready_r, 1) == b"r", "the attacker did not start"
        args = ("--chroot", str(jail), "--user", "nobody", "--no-verify", "--file", str(host))
        # strace holds each fchown 0.3 s, so the attacker always wins the race for a file
        # that has a name before its bytes are written (it won 0 of 3 without: a 3 MiB write
        # is quicker than its wake-up here)
        slow = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "inject=fchown:delay_exit=300000"]
        result = run("prepare", *args, wrap=slow)
        assert result.code in (0, 78), result.stderr
        os.write(stop_w, b"s")
        data = os.read(report_r, 16)
    finally:
        for fd in (ready_r, stop_w, report_r):
            os.close(fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)  # by PID: the attacker this test forked (gone when done)
        os.waitpid(pid, 0)
    moved_at, now = struct.unpack("qq", data)
    assert moved_at >= 0, f"the attacker never caught the temporary copy: {result.stderr}"
    assert now == moved_at, f"root wrote {now - moved_at} bytes after the file left the jail"
    assert run("teardown", "--chroot", str(jail)).code == 0


def test_a_jail_out_of_inodes_is_said_so(area: Path) -> None:
    """A jail whose filesystem has no inode left for dev/ or a node: "Preparing …/dev failed:
    No space left on device" named neither the jail's filesystem nor what to do. One sentence
    (71) saying the disk is full and to free space or inodes; nothing left in the jail."""
    jail = area / "noinodes"
    jail.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=2,mode=0755", "tmpfs", str(jail)],
        check=True,
    )
    (jail / "taken").write_text("")  # the last inode (the root directory holds the other)
    result = run("prepare", "--chroot", str(jail), "--no-verify")
    assert result.code == 71, result.stderr
    assert f"The jail {jail} cannot take what jailshim makes there: the disk is full" in (
        result.error
    )
    assert os.listdir(jail) == ["taken"]


@contextlib.contextmanager
def _flock_kept_by_an_heir(jail: Path) -> Iterator[int]:
    """A local user (nobody) flocks the jail directory in one process, forks, and exits: its
    child keeps the open file, and with it the flock; /proc/locks still names the exited
    locker, whose /proc/PID/status no longer exists. Yields the heir's PID."""
    read_end, write_end = os.pipe()
    locker = os.fork()
    if locker == 0:
        try:
            os.close(read_end)
            fd = os.open(jail, os.O_RDONLY | os.O_DIRECTORY)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            heir = os.fork()
            if heir == 0:
                os.setsid()
                os.write(write_end, b"%d" % os.getpid())
                os.close(write_end)
                time.sleep(120)
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(locker, 0)
    with os.fdopen(read_end, "rb") as f:
        heir = int(f.read())
    # pinned now, while it sleeps: once reparented to PID 1 its number is free when it ends
    pinned = pids.pin(heir, pids.session_of(heir))
    try:
        yield heir
    finally:
        pids.kill([pinned])


def test_a_users_flock_kept_by_a_child_of_the_locker_does_not_stop_roots_prepare(
    tmp_path: Path,
) -> None:
    jail = tmp_path / "jail"
    jail.mkdir()
    tmp_path.chmod(0o755)
    with _flock_kept_by_an_heir(jail) as heir:
        assert Path(f"/proc/{heir}").exists()
        result = run("prepare", "--chroot", str(jail), "--timeout", "3", "--no-verify")
        try:
            # exit 0 within a budget the heir's lock outlasts, and said so: it was ignored, not
            # waited for (was "took < 2.5 s", start-up included, on a loaded machine)
            assert result.code == 0, result.error
            assert result.named("lock.ignored"), result.stderr
        finally:
            run("teardown", "--chroot", str(jail))


def _as_nobody(action: Callable[[], bytes], cwd: Path, *, chroot: bool = False) -> bytes:
    """``action``'s result, run in a forked child as nobody from ``cwd`` (entered as root:
    pytest's own directories are root's 0700), or "refused: ERRNO"."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.chdir(cwd)
            if chroot:
                os.chroot(".")
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                out = action()
            except OSError as exc:
                out = f"refused: {errno.errorcode.get(exc.errno or 0)}".encode()
            os.write(write_end, out)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read()
    os.waitpid(child, 0)
    return out


@pytest.mark.parametrize("file_mode", ["copy", "bind"])
def test_a_users_symlink_never_brings_a_file_it_cannot_reach_into_the_jail(
    tmp_path: Path, file_mode: str
) -> None:
    """The operator names a file in a directory the daemon's user owns (its app.conf, a
    certificate a renewal hook of that user writes). The user replaces it by a symlink to a
    file it cannot reach: root's 0644 notes in a 0700 directory (as /root, /etc/ssl/private
    keep theirs). jailshim reads the host side through its symlinks, checks only that the
    target is a regular file outside /proc, /sys and /dev, and gives the copy the target's
    bits (0644): inside the jail the user reads root's secret."""
    tmp_path.chmod(0o755)
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    secret = vault / "notes.txt"
    secret.write_bytes(b"TOPSECRET\n")
    secret.chmod(0o644)
    home = tmp_path / "app"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    wanted = home / "app.conf"

    def plant() -> bytes:  # the user's own symlink, made by the user
        os.symlink(secret, "app.conf")
        return b"made"

    assert _as_nobody(plant, home) == b"made"
    assert _as_nobody(lambda: Path("vault/notes.txt").read_bytes(), tmp_path) == (
        b"refused: EACCES"
    )
    jail = tmp_path / "jail"
    jail.mkdir()
    result = run(
        "prepare",
        "--chroot",
        str(jail),
        "--file",
        str(wanted),
        "--file-mode",
        file_mode,
        "--no-verify",
    )
    try:
        inside = str(wanted)

        def read_in_the_jail() -> bytes:
            return Path(inside).read_bytes()

        seen = _as_nobody(read_in_the_jail, jail, chroot=True) if result.code == 0 else b""
        assert b"TOPSECRET" not in seen, f"prepare exited {result.code}; the user read {seen!r}"
    finally:
        run("teardown", "--chroot", str(jail))


@pytest.mark.parametrize("between", ["root's", "the user's"])
def test_the_daemons_user_cannot_learn_a_secret_by_guessing_its_copy(
    tmp_path: Path, between: str
) -> None:
    """The daemon's user owns its jail and the copy's directory. It writes a guess at the path
    where `--file /…/pin` (root:root 0600) will go. decide_file compared contents whatever the
    owner: an equal guess was left in place (the user's file, the user's bits), a wrong one was
    moved aside to .jailshim-displaced-pin-0 — visible to the user after every prepare, so each
    restart of its daemon answered "is the secret X?". Wanted: a file root did not make is
    never "already right"; the user sees the same outcome whatever it guessed. With the
    directories between the jail and the copy's root's, that outcome is a root-owned copy;
    with them the user's too, a refusal (78: the user could move them out of the jail), and
    before the fix a right guess there passed (nothing to do) and a wrong one was refused."""
    tmp_path.chmod(0o755)
    secret = tmp_path / "host" / "pin"
    secret.parent.mkdir()
    secret.write_bytes(b"4711\n")
    secret.chmod(0o600)

    def outcome(guessed: bytes) -> tuple[int, int, bytes | None, list[str]]:
        jail = tmp_path / f"jail-{guessed.decode().strip()}"
        inside = jail / str(secret.parent).lstrip("/")
        inside.mkdir(parents=True)
        mine = inside
        while True:  # the jail and the copy's directory are the user's, and maybe all between
            if mine in (jail, inside) or between == "the user's":
                os.chown(mine, NOBODY, NOBODY)
            if mine == jail:
                break
            mine = mine.parent
        guess = inside / "pin"
        guess.write_bytes(guessed)
        os.chown(guess, NOBODY, NOBODY)
        result = run(
            "prepare", "--chroot", str(jail), "--user", "nobody", "--file", str(secret),
            "--no-verify",
        )  # fmt: skip
        try:
            st = os.stat(guess)
            seen = guess.read_bytes() if st.st_uid == 0 else None
            return result.code, st.st_uid, seen, sorted(p.name for p in inside.iterdir())
        finally:
            run("teardown", "--chroot", str(jail))

    right, wrong = outcome(b"4711\n"), outcome(b"0000\n")
    assert right == wrong, f"a right guess gave {right}, a wrong one {wrong}"
    if between == "root's":
        assert right[:3] == (0, 0, b"4711\n"), "the user's right guess was left in place"


def test_a_users_flock_held_through_a_setuid_program_does_not_stop_roots_prepare(
    area: Path,
) -> None:
    """A local user who can open the jail directory flocks it and exec()s su (setuid root),
    which keeps the fd and waits at its password prompt for ever: /proc/locks names the user's
    process, whose effective uid is now 0, so the lock was taken for root's jailshim and
    root's prepare waited out --timeout and failed (71, "another jailshim prepare or
    teardown"), at every start. Wanted: the user's lock is ignored (real uid)."""
    su = shutil.which("su")
    need(su is not None and os.stat(su).st_mode & 0o4000 != 0, "needs a setuid su")
    jail = area / "jail"
    jail.mkdir()
    # the user's process (the jail is opened as root: the test's tmp is root's 0700)
    locker = subprocess.Popen(
        [
            "/usr/bin/python3",
            "-c",
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "os.set_inheritable(fd, True)\n"
            "os.setgroups([])\n"
            f"os.setresgid({NOBODY}, {NOBODY}, {NOBODY})\n"
            f"os.setresuid({NOBODY}, {NOBODY}, {NOBODY})\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.execv(sys.argv[2], ['su', 'root', '-c', 'true'])\n",
            str(jail),
            str(su),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def su_holds_the_jail() -> bool:
            try:
                status = Path(f"/proc/{locker.pid}/status").read_text()
                return status.startswith("Name:\tsu\n") and f"/{jail.name}" in "".join(
                    os.readlink(f"/proc/{locker.pid}/fd/{fd}")
                    for fd in os.listdir(f"/proc/{locker.pid}/fd")
                )
            except OSError:  # an fd closed while listed (su at work)
                return False

        # a deadline that fails only when it never happens (it was 10 s, then an assert on
        # the name alone: su without the jail open passed it)
        wait_until(su_holds_the_jail, "su to hold the jail open")
        done = subprocess.run(
            jailshim_argv("prepare", "--chroot", str(jail), "--no-verify", "--timeout", "3"),
            env=clean_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    finally:
        locker.kill()
        locker.wait()
        subprocess.run(
            jailshim_argv("teardown", "--chroot", str(jail)),
            env=clean_env(),
            capture_output=True,
            check=False,
        )


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
