"""Root must never act outside the jail (issue 25, item 3 and the small notify/bind ones).

The daemon's user owns its jail root (accepted as the daemon's own). It pre-creates the
directories a log socket, $NOTIFY_SOCKET or a jail file needs, and a real process of that user
renames one of them out of the jail on the first inotify event in it: jailshim used to go on
working through its directory fd, leaving a bind (socket, file) or a root-owned copy outside,
and exiting 0 with the socket missing from the jail. A directory a user other than root could
move to another parent is now refused (78) before anything is made in it. So is a jail path
another user can swap (its directory, its symlink, a FUSE mount); a user's symlink never picks
a host socket, teardown never follows one to another jail, and a name the user made where
jailshim makes dev/ is named in the refusal.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import SyslogSocket
from tests.handshake import wait_until
from tests.support import NOBODY, TESTS, clean_env, jailshim_argv, mounts_below, need, run, snapshot

SYSTEM_PYTHON = "/usr/bin/python3"  # the one python3-seccomp is installed for

# Runs as root until its fds and its inotify watch are set up, then as NOBODY only: the
# rename is the user's own (the kernel checks that user's rights), through fds, since the
# test's directories sit below pytest's root-only /tmp/pytest-of-root.
_RACER = r"""
import ctypes, os, sys
jail, watched, made, moved, away, uid = sys.argv[1:7]
IN_CREATE, IN_MOVED_TO = 0x100, 0x80
libc = ctypes.CDLL(None, use_errno=True)
jail_fd = os.open(jail, os.O_PATH | os.O_DIRECTORY)
away_fd = os.open(away, os.O_PATH | os.O_DIRECTORY)


def watch(path):
    inotify = libc.inotify_init1(os.O_CLOEXEC)  # its own queue: no earlier event is read
    assert libc.inotify_add_watch(inotify, os.fsencode(path), IN_CREATE | IN_MOVED_TO) >= 0
    return inotify

if watched:
    inotify = watch(os.path.join(jail, watched))
os.setgroups([])
os.setresgid(int(uid), int(uid), int(uid))
os.setresuid(int(uid), int(uid), int(uid))
print("ready", flush=True)
if watched:
    os.read(inotify, 4096)  # the first entry jailshim makes in that directory
if made:  # the user's own directory, made while prepare runs (after its survey)
    try:
        os.mkdir(made, dir_fd=jail_fd)
    except FileExistsError:
        print("lost", flush=True)
        sys.exit(0)
    made_fd = os.open(made, os.O_PATH | os.O_DIRECTORY, dir_fd=jail_fd)
    os.read(watch(f"/proc/self/fd/{made_fd}"), 4096)
try:
    os.rename(moved, moved, src_dir_fd=jail_fd, dst_dir_fd=away_fd)
    print("moved", flush=True)
except OSError as exc:
    print("refused", exc.errno, flush=True)
"""


class Racer:
    """A NOBODY process that moves ``jail/moved`` into ``away`` on the first entry made in
    ``jail/watched`` (or at once when ``watched`` is empty). With ``made``, it first makes that
    directory (its own) on the first event in ``watched`` and waits for one in it."""

    def __init__(self, jail: Path, watched: str, moved: str, away: Path, made: str = "") -> None:
        argv = [sys.executable, "-c", _RACER, str(jail), watched, made, moved, str(away)]
        argv.append(str(NOBODY))
        self.waits = bool(watched)
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def result(self) -> str:
        """What the racer did ("" when it is still waiting: it is then stopped, by PID)."""
        try:
            self.proc.wait(timeout=0.5 if self.waits else 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out, err = self.proc.stdout.read(), self.proc.stderr.read()  # readline's buffer too
        assert "Traceback" not in err, err
        return out.strip()


def _nobodys(jail: Path, relative: str) -> None:
    """Make jail/relative and every directory on the way, all owned by NOBODY."""
    here = jail
    for part in Path(relative).parts:
        here = here / part
        here.mkdir(exist_ok=True)
        os.chown(here, NOBODY, NOBODY)


def _root_owned_below(top: Path) -> list[str]:
    """Anything root made below ``top`` (the user's own directory outside the jail)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            if os.lstat(os.path.join(dirpath, name)).st_uid == 0:
                found.append(os.path.join(dirpath, name))
    return found


@pytest.fixture
def owned_jail(jail: Path, area: Path) -> Iterator[tuple[Path, Path]]:
    """The jail, owned by NOBODY (its daemon's user), and ``away``: NOBODY's own directory
    outside the jail, on the same filesystem (a rename cannot cross one)."""
    os.chown(jail, NOBODY, NOBODY)
    away = area / "away"
    away.mkdir()
    os.chown(away, NOBODY, NOBODY)
    yield jail, away


def _reset(jail: Path, away: Path) -> None:
    """After a trial: whatever escaped is detached and removed, then the jail torn down."""
    for point in sorted(mounts_below(away), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    for entry in away.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    run("teardown", "--chroot", str(jail))
    for point in sorted(mounts_below(jail), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    for entry in jail.iterdir():
        if entry.name != "dev":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def _fake_unbound(area: Path, jail: Path) -> tuple[Path, Path]:
    """A COMMAND named unbound (the unbound adapter reads the config through the real
    unbound-checkconf, and the run brings $NOTIFY_SOCKET into the jail) that only exits."""
    need(shutil.which("unbound-checkconf") is not None, "needs unbound-checkconf")
    command = area / "bin" / "unbound"
    command.parent.mkdir()
    command.write_text("#!/bin/sh\nexit 0\n")
    command.chmod(0o755)
    config = area / "unbound.conf"
    config.write_text(
        "server:\n"
        f'    chroot: "{jail}"\n'
        f'    directory: "{jail}"\n'
        '    username: "nobody"\n'
        "    use-syslog: no\n"
        '    pidfile: ""\n'
        "remote-control:\n"
        "    control-enable: no\n"
    )
    return command, config


TRIALS = 3


@pytest.mark.parametrize(
    "target", ["log socket", "notify socket", "time", "bind", "time, made during prepare"]
)
def test_a_directory_the_user_moves_out_never_takes_roots_work_with_it(
    owned_jail: tuple[Path, Path], area: Path, target: str
) -> None:
    """NOBODY owns the jail and pre-creates the directories on the way to a log socket,
    $NOTIFY_SOCKET, etc/localtime (--files time) or a --file-mode bind; on the first entry
    jailshim makes there it renames the top one out of the jail. Nothing root-made and no
    mount may ever be outside the jail, every run is 0 or 78, and an exit 0 means the socket
    or file is in the jail."""
    jail, away = owned_jail
    if target.endswith("made during prepare"):
        (jail / "dev").mkdir()  # root's: apply's first entry there comes after the survey
    host_dir = area / "host"
    host_dir.mkdir()
    listener: SyslogSocket | None = None
    env = clean_env()
    args = ("--chroot", str(jail), "--user", "nobody", "--no-verify")
    if target in ("log socket", "notify socket"):
        listener = SyslogSocket(host_dir / ("log" if target == "log socket" else "notify"))
        path = str(listener.path)
        if target == "log socket":
            command: tuple[str, ...] = ("prepare", *args, "--log-socket", path)
        else:
            fake, config = _fake_unbound(area, jail)
            env = clean_env(NOTIFY_SOCKET=path)
            command = (
                "run",
                "--no-verify",
                "--no-config-check",
                "--",
                str(fake),
                "-c",
                str(config),
            )
        watched = str(host_dir).lstrip("/")
    else:
        need(os.path.isfile("/etc/localtime"), "needs the host's /etc/localtime")
        time = target.startswith("time")
        path = "/etc/localtime" if time else "/etc/hosts"
        files = ("--files", "time") if time else ("--file", path, "--file-mode", "bind")
        command = ("prepare", *args, *files)
        watched = "etc"
    moved = watched.split("/")[0]
    made = target.endswith("made during prepare")
    failures: list[str] = []
    try:
        for trial in range(TRIALS):
            if made:  # made at jailshim's first node in dev/: after the survey saw no etc/
                racer = Racer(jail, "dev", moved, away, made="etc")
            else:
                _nobodys(jail, watched)
                racer = Racer(jail, watched, moved, away)
            result = run(*command, env=env)
            did = racer.result()
            escaped = _root_owned_below(away) + mounts_below(away)
            if result.code not in (0, 78):
                failures.append(f"trial {trial}: exit {result.code}: {result.stderr[-600:]}")
            if escaped:
                failures.append(f"trial {trial} (racer {did!r}): outside the jail: {escaped}")
            inside = jail / path.lstrip("/")
            if result.code == 0 and not (inside.exists() or inside.is_socket()):
                failures.append(f"trial {trial}: exit 0 but {inside} is missing from the jail")
            if result.code == 78:
                assert "could move it out of the jail" in result.error, result.error
            _reset(jail, away)
    finally:
        if listener is not None:
            listener.close()
    assert not failures, "\n".join(failures)
    assert mounts_below(area) == []


def test_root_made_directories_stay_and_the_work_lands_in_the_jail(
    owned_jail: tuple[Path, Path], area: Path
) -> None:
    """The same user and jail, without pre-created directories: jailshim makes them (root's,
    0755), the user's rename of each one out is refused by the kernel, and the prepare puts the
    socket and the file in the jail; teardown takes all of it back."""
    jail, away = owned_jail
    listener = SyslogSocket(area / "log")
    try:
        before = snapshot(jail)
        args = ("prepare", "--chroot", str(jail), "--user", "nobody", "--no-verify")
        result = run(*args, "--log-socket", str(listener.path), "--files", "time")
        assert result.code == 0, result.stderr
        moving = Racer(jail, "", "etc", away)
        assert moving.result().startswith("refused 13")  # EACCES: root's etc/ stays put
        moving = Racer(jail, "", "tmp", away)
        assert moving.result().startswith("refused 13")
        assert stat.S_ISSOCK((jail / str(listener.path).lstrip("/")).lstat().st_mode)
        assert (jail / "etc" / "localtime").read_bytes() == Path("/etc/localtime").read_bytes()
        assert list(away.iterdir()) == []
        assert run("teardown", "--chroot", str(jail)).code == 0
        assert snapshot(jail) == before
        assert mounts_below(area) == []
    finally:
        listener.close()


def test_a_bind_moved_out_with_its_directory_is_never_dropped(
    owned_jail: tuple[Path, Path], area: Path
) -> None:
    """A bind in etc/ (root's when prepared; handed to the daemon's user afterwards, as an
    operator's chown -R would): that user moves etc/ out of the jail. Teardown must neither
    unmount outside the jail nor forget the bind ("already gone" left the mount for ever): the
    record is kept with a warning naming where it is. Back, but still the user's, it is
    kept again (nothing is done in a directory the user could move out); once root's again,
    teardown takes it back."""
    jail, away = owned_jail
    host = area / "hosts"
    host.write_text("192.0.2.1 one.test\n")
    args = ("--chroot", str(jail), "--user", "nobody", "--no-verify", "--file-mode", "bind")
    assert run("prepare", *args, "--file", str(host)).code == 0
    top = str(area).lstrip("/").split("/")[0]
    for dirpath, _dirs, _files in os.walk(jail / top):
        os.chown(dirpath, NOBODY, NOBODY)  # the operator's mistake, not the user's doing
    assert Racer(jail, "", top, away).result() == "moved"
    outside = away / str(host).lstrip("/")
    assert mounts_below(area) == [str(outside)]

    kept = run("teardown", "--chroot", str(jail))
    assert kept.code == 0, kept.stderr
    [unbind] = [e for e in kept.named("teardown") if e["step"].startswith("unbind")]
    assert unbind["level"] == "warning", unbind
    assert "out of the jail" in unbind["outcome"] and str(outside) in unbind["outcome"], unbind
    assert mounts_below(area) == [str(outside)]  # never unmounted outside the jail

    (away / top).rename(jail / top)  # back, still the user's: nothing is done there
    kept = run("teardown", "--chroot", str(jail))
    assert kept.code == 0, kept.stderr
    [unbind] = [e for e in kept.named("teardown") if e["step"].startswith("unbind")]
    assert unbind["level"] == "warning", unbind
    assert "could move it out of the jail" in unbind["outcome"], unbind
    assert "chown root:root" in unbind["outcome"], unbind
    assert mounts_below(area) == [str(jail / str(host).lstrip("/"))]
    for dirpath, _dirs, _files in os.walk(jail / top):
        os.chown(dirpath, 0, 0)
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert mounts_below(area) == []
    assert not (jail / str(host).lstrip("/")).exists()


_SUN_PATH = 108


@pytest.mark.parametrize("case", ["too long", "directory", "regular file"])
def test_a_notify_socket_that_cannot_be_one_is_named_for_what_it_is(area: Path, case: str) -> None:
    """$NOTIFY_SOCKET longer than a unix socket address holds, or naming a directory or a
    regular file on the host: one sentence that says so (78), not "(EIO)" or "does not exist
    in the jail", and no word of logs; the jail is left as it was."""
    jail = area / "jail"
    jail.mkdir()
    fake, config = _fake_unbound(area, jail)
    if case == "too long":
        deep = area / ("d" * 60) / ("e" * 60)
        deep.mkdir(parents=True)
        path = deep / "notify"
        assert len(os.fsencode(str(path))) >= _SUN_PATH
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        cwd = os.getcwd()
        os.chdir(deep)  # a path that long can only be bound relatively
        try:
            holder.bind("notify")
        finally:
            os.chdir(cwd)
        expected = "bytes long"
    else:
        holder = None
        path = area / "notify"
        if case == "directory":
            path.mkdir()
        else:
            path.write_text("")
        expected = f"is {'a directory' if case == 'directory' else 'a regular file'} on the host"
    before = snapshot(jail)
    try:
        env = clean_env(NOTIFY_SOCKET=str(path))
        result = run("run", "--no-config-check", "--", str(fake), "-c", str(config), env=env)
    finally:
        if holder is not None:
            holder.close()
    assert result.code == 78, result.stderr
    assert result.error.startswith(f"$NOTIFY_SOCKET {path} "), result.error
    assert expected in result.error, result.error
    assert "EIO" not in result.stderr and "log" not in result.error.lower()
    assert snapshot(jail) == before
    assert mounts_below(area) == []


@pytest.mark.parametrize("changed", ["host", "jail"])
def test_a_bound_file_replaced_on_the_host_during_prepare_asks_to_run_again(
    jail: Path, area: Path, changed: str
) -> None:
    """--file-mode bind: the host renames a new file over the one jailshim opened, between
    its open and the mount (the kernel then answers ENOENT for the unlinked source). That is
    the host changing under prepare: 78 "changed … run again", nothing left; not 71 naming
    /proc/self/fd paths. The same when the placeholder is unlinked in the jail (by the
    daemon's user, in its own directory below root's). Deterministic: prepare's mount(2) is
    held (a seccomp notifier) until the test has made its change. (strace delayed it 0.4 s,
    a window a loaded machine's test could miss; then prepare succeeded and the test failed.)"""
    seccomp = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, check=False
    )
    need(seccomp.returncode == 0, "needs Debian's python3-seccomp for /usr/bin/python3")
    host = area / "hosts"
    host.write_text("192.0.2.1 one.test\n")
    placeholder = jail / str(host).lstrip("/")
    placeholder.parent.mkdir(parents=True)
    os.chown(placeholder.parent, NOBODY, NOBODY)
    before = snapshot(jail)
    hold = area / "hold"
    hold.mkdir()
    argv = [
        SYSTEM_PYTHON,
        str(TESTS / "seccomp_run.py"),
        "hold",
        "mount",
        str(hold),
        "--",
        sys.executable,
        "-m",
        "jailshim",
        "prepare",
        "--chroot",
        str(jail),
        "--no-verify",
        "--file",
        str(host),
        "--file-mode",
        "bind",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(
            lambda: (hold / "held").exists() or proc.poll() is not None, "prepare's mount(2)"
        )
        assert proc.poll() is None and placeholder.exists(), proc.communicate()
        if changed == "host":
            (area / "hosts.new").write_text("192.0.2.2 two.test\n")
            (area / "hosts.new").rename(host)
        else:
            placeholder.unlink()
        (hold / "go").touch()
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err, err
    assert proc.returncode == 78, err
    assert "changed while jailshim" in err and "run again" in err, err
    assert "/proc/self/fd" not in err
    if changed == "jail":
        assert "interfering" in err, err
    assert snapshot(jail) == before
    assert mounts_below(area) == []


def test_which_directories_a_user_could_move_out() -> None:
    """rename(2) to another parent needs write access to the directory and to its parent;
    a sticky parent lets only the owners move it. Root's 0755 directory anywhere, and the
    user's own directory in root's, stay; the user's own in the user's own does not."""
    from jailshim.jail.safepath import Holder, movable_out

    roots = Holder(0, stat.S_IFDIR | 0o755, writable=False)
    users = Holder(NOBODY, stat.S_IFDIR | 0o755, writable=True)
    shared = Holder(0, stat.S_IFDIR | 0o777, writable=True)
    sticky = Holder(0, stat.S_IFDIR | 0o1777, writable=True)
    assert not movable_out(roots, users)
    assert not movable_out(users, roots)
    assert movable_out(users, users)
    assert movable_out(shared, users)
    assert not movable_out(shared, sticky)  # /tmp: only the owners may move root's entry
    assert movable_out(users, sticky)


def test_a_jail_its_user_can_move_away_is_refused(area: Path) -> None:
    """The daemon's user owns its jail and the directory the jail is in: that user could move
    the whole jail (with root's nodes and mounts) elsewhere while jailshim works in it; 78,
    whatever --allow-writable-jail says, and nothing is made. A root-owned jail writable by
    all in a sticky directory (a /tmp) cannot be moved by anyone else: accepted with the flag."""
    home = area / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    jail = home / "jail"
    jail.mkdir()
    os.chown(jail, NOBODY, NOBODY)
    before = snapshot(home)
    for extra in ((), ("--allow-writable-jail",)):
        args = ("prepare", "--chroot", str(jail), "--user", "nobody", "--no-verify", *extra)
        refused = run(*args)
        assert refused.code == 78, refused.stderr
        assert "could move the whole jail" in refused.error and str(home) in refused.error
        assert snapshot(home) == before

    shared = area / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    jail = shared / "jail"
    jail.mkdir()
    jail.chmod(0o777)
    args = ("--chroot", str(jail), "--no-verify", "--allow-writable-jail")
    result = run("prepare", *args)
    assert result.code == 0, result.stderr
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert sorted(os.listdir(jail)) == []


def test_a_jail_of_another_user_without_write_bits_is_still_theirs(jail: Path) -> None:
    """A jail owned by a user other than root and the daemon's, mode 0555: its owner can chmod
    it and write at any time, so it is refused like a writable one (it passed as root's)."""
    os.chown(jail, 12345, 12345)
    jail.chmod(0o555)
    result = run("prepare", "--chroot", str(jail), "--user", "nobody", "--no-verify")
    assert result.code == 78, result.stderr
    assert "writable by a non-root user" in result.error, result.error
    assert os.listdir(jail) == []


def test_a_temporary_dev_the_daemons_user_made_is_named_in_the_refusal(tmp_path: Path) -> None:
    """The daemon's user owns the jail root and makes .jailshim-new-dev there (a directory of
    its own, one file in it). Reconcile leaves it ("not a directory jailshim made": held, it
    is never removed or followed), then making dev/ at that name fails with the bare errno.
    Wanted: 78 and one sentence naming the entry, as _clear_temp says for a jail file's."""
    jail = tmp_path / "jail"
    jail.mkdir()
    os.chown(jail, NOBODY, NOBODY)
    made = jail / ".jailshim-new-dev"
    made.mkdir()
    (made / "mine").write_text("the user's\n")
    os.chown(made / "mine", NOBODY, NOBODY)
    os.chown(made, NOBODY, NOBODY)
    result = run("prepare", "--chroot", str(jail), "--user", "nobody", "--no-verify")
    try:
        assert (made / "mine").read_text() == "the user's\n"
        assert result.code == 78, result.error
        assert ".jailshim-new-dev" in result.error
    finally:
        run("teardown", "--chroot", str(jail))


def test_a_jail_whose_path_another_user_can_swap_is_refused(tmp_path: Path) -> None:
    """prepare as run's vet: a root-owned jail in a directory nobody owns, or reached through
    nobody's symlink, is refused (78, naming the entry) and nothing is made in it; root's
    symlink in root's directory and a root jail in a sticky root directory (a /tmp) pass."""
    tmp_path.chmod(0o755)
    area = tmp_path / "area"
    area.mkdir(mode=0o755)
    (area / "jail").mkdir()
    os.chown(area, NOBODY, NOBODY)
    real = tmp_path / "real"
    (real / "jail").mkdir(parents=True)
    users_link = tmp_path / "users-link"
    users_link.symlink_to(real)
    os.lchown(users_link, NOBODY, NOBODY)
    roots_link = tmp_path / "roots-link"
    roots_link.symlink_to(real)
    sticky = tmp_path / "sticky"
    (sticky / "jail").mkdir(parents=True)
    sticky.chmod(0o1777)
    try:
        for refused, named in (
            (area / "jail", f"{area}/jail"),
            (users_link / "jail", str(users_link)),
        ):
            result = run("prepare", "--chroot", str(refused), "--no-verify")
            assert result.code == 78, result.error
            assert named in result.error, result.error
            assert list(Path(os.path.realpath(refused)).iterdir()) == []
        for accepted in (roots_link / "jail", sticky / "jail"):
            result = run("prepare", "--chroot", str(accepted), "--dry-run")
            assert result.code == 0, result.error
    finally:
        for jail in (area / "jail", real / "jail"):
            run("teardown", "--chroot", str(jail))


def test_a_users_symlink_never_picks_the_host_socket_bound_into_the_jail(area: Path) -> None:
    """review1 noted it for log sockets and R1's fix covered --file only: the daemon's user
    owns the directory of the log socket the operator names and makes the name a symlink to
    a 0666 socket in a 0700 directory of root's (reachable only through that directory).
    prepare realpath()ed it on the host and bound root's private socket into the jail, where
    the user could connect to it. Wanted: the host path walked as a --file's is (78)."""
    import socket as sockets

    private = area / "private"
    private.mkdir(mode=0o700)
    listener = sockets.socket(sockets.AF_UNIX)
    listener.bind(str(private / "sock"))
    (private / "sock").chmod(0o666)
    users = area / "users"
    users.mkdir()
    os.chown(users, NOBODY, NOBODY)
    # the user's own link (made as root and given to it: the test's tmp is root's 0700)
    (users / "log").symlink_to(private / "sock")
    os.lchown(users / "log", NOBODY, NOBODY)
    jail = area / "jail"
    jail.mkdir()
    try:
        done = subprocess.run(
            jailshim_argv(
                "prepare",
                "--chroot",
                str(jail),
                "--user",
                "nobody",
                "--log-socket",
                str(users / "log"),
                "--no-verify",
            ),
            env=clean_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        bound = jail / str(users / "log").lstrip("/")
        private_id = os.stat(private / "sock").st_ino
        assert not (bound.exists() and os.stat(bound).st_ino == private_id), (
            "root's private socket was bound into the jail through the user's symlink"
        )
        assert done.returncode == 78, done.stderr
        assert "symlink" in done.stderr, done.stderr
    finally:
        listener.close()
        subprocess.run(
            jailshim_argv("teardown", "--chroot", str(jail)),
            env=clean_env(),
            capture_output=True,
            check=False,
        )


def test_teardown_never_follows_a_users_symlink_to_another_jail(area: Path) -> None:
    """The daemon's user owns a directory on its jail's path (prepare refuses that path since
    review1 R3) and makes a name on the way its symlink to the directory of ANOTHER daemon's
    jail. The unit's teardown (ExecStopPost runs after a failed ExecStartPre too) opened the
    path through the symlink and tore the other jail down: its dev/ nodes removed (its binds,
    its log socket unmounted). Wanted: refused (78) as prepare refuses it; the other jail
    untouched."""
    other = area / "other" / "jail"
    other.mkdir(parents=True)
    users = area / "users"
    users.mkdir()
    os.chown(users, NOBODY, NOBODY)
    (users / "x").symlink_to(area / "other")
    os.lchown(users / "x", NOBODY, NOBODY)
    prepared = subprocess.run(
        jailshim_argv("prepare", "--chroot", str(other), "--no-verify"),
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        assert prepared.returncode == 0, prepared.stderr
        before = sorted(os.listdir(other / "dev"))
        torn = subprocess.run(
            jailshim_argv("teardown", "--chroot", str(users / "x" / "jail")),
            env=clean_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        assert (other / "dev").is_dir() and sorted(os.listdir(other / "dev")) == before, (
            "root's teardown of the user's path tore down another daemon's jail"
        )
        assert torn.returncode == 78, torn.stderr
    finally:
        subprocess.run(
            jailshim_argv("teardown", "--chroot", str(other)),
            env=clean_env(),
            capture_output=True,
            check=False,
        )


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
