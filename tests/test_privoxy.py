"""`jailshim run -- privoxy --chroot --user privoxy CONFIG`: the jail is the user's home, and
privoxy reads its config (and every file it names) inside it, after the chroot.

The privoxy user's home is /etc/privoxy on Debian; each test gives it the test's jail as its
home through a copy of /etc/passwd bound over the host's in a private mount namespace (the
host's /etc is never written), where jailshim and privoxy both look the user up.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jailshim.daemons.privoxy import (
    VIEW_FAILED,
    argv_options,
    make_path,
    parse_config,
    split_listen,
)
from jailshim.errors import UsageError
from tests import pids
from tests.daemons import (
    daemon_pid,
    descendants,
    free_port,
    own_network,
    pristine_copy,
    status_field,
    stop,
)
from tests.stock import in_stock_layout, strategies
from tests.support import jailshim_argv, need, spawn

__all__ = ["own_network"]  # a fixture (tests/daemons.py) the fixtures here use

PRIVOXY = "/usr/sbin/privoxy"
PAGE = "served to privoxy's jail\n"


@pytest.fixture
def privoxy_bin(root: None, own_network: None) -> str:
    """Debian's privoxy, its stock /etc/privoxy, its user, and curl as the client."""
    need(os.access(PRIVOXY, os.X_OK), "needs privoxy (Debian package privoxy)")
    need(Path("/etc/privoxy/config").is_file(), "needs Debian's /etc/privoxy (privoxy)")
    need(shutil.which("curl") is not None, "needs curl")
    try:
        pwd.getpwnam("privoxy")
    except KeyError:
        need(False, "needs the user privoxy (made by Debian's privoxy package)")
    return PRIVOXY


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@contextlib.contextmanager
def web_server() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 (the test's own network namespace): its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def stock_jail(area: Path, port: int) -> Path:
    """A jail holding Debian's /etc/privoxy as shipped (pristine_copy) at the same path, its
    two listen-address lines moved to the test's port: the config privoxy reads after its
    chroot."""
    jail = area / "jail"
    (jail / "etc").mkdir(parents=True)
    copy = pristine_copy("privoxy", "/etc/privoxy", area)
    copy.rename(jail / "etc/privoxy")
    config = jail / "etc/privoxy/config"
    text = config.read_text()
    for old, new in (
        ("listen-address  127.0.0.1:8118\n", f"listen-address  127.0.0.1:{port}\n"),
        ("listen-address  [::1]:8118\n", f"listen-address  [::1]:{port}\n"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    config.write_text(text)
    for directory in (jail, jail / "etc"):
        directory.chmod(0o755)
    return jail


def passwd_with_home(area: Path, home: Path) -> Path:
    """A copy of the host's /etc/passwd in which privoxy's home is ``home``."""
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "privoxy":
            fields[5] = str(home)
        lines.append(":".join(fields))
    copy = area / "passwd"
    copy.write_text("\n".join(lines) + "\n")
    copy.chmod(0o644)
    return copy


def through_privoxy(port: int, url: str, proc: subprocess.Popen[str], timeout: float = 20) -> str:
    """The body curl gets for ``url`` through the proxy on 127.0.0.1:PORT, retried until it
    listens; fails if jailshim (and privoxy) exit first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            _, err = stop(proc)
            raise AssertionError(f"exited {proc.returncode}:\n{err}")
        got = subprocess.run(
            ["curl", "-sS", "--max-time", "5", "-x", f"http://127.0.0.1:{port}", url],
            capture_output=True,
            text=True,
            check=False,
        )
        if got.returncode == 0 or time.monotonic() > deadline:
            return got.stdout + got.stderr
        time.sleep(0.2)


def jailed_run(area: Path, jail: Path, args: list[str], *, userns: bool) -> list[str]:
    """`jailshim run -- privoxy ARGS` where privoxy's home is ``jail``."""
    passwd = passwd_with_home(area, jail)
    return in_stock_layout(
        {"/etc/passwd": passwd}, jailshim_argv("run", "--", *args), userns=userns
    )


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_stock_privoxy_proxies_a_name_it_resolves_in_its_jail(
    area: Path, privoxy_bin: str, where: str
) -> None:
    """Debian's config, changed only for listen-address, run with --chroot --user privoxy:
    jailshim finds the jail in privoxy's passwd entry and the config inside it, gives the jail
    the resolver's files; curl through privoxy gets http://localhost:PORT/ — a name privoxy
    resolves inside its jail (from the jail's etc/hosts) — from a privoxy whose root is the
    jail and whose user is privoxy."""
    port = free_port()
    jail = stock_jail(area, port)
    argv = [privoxy_bin, "--no-daemon", "--chroot", "--user", "privoxy", "/etc/privoxy/config"]
    proc = spawn(jailed_run(area, jail, argv, userns=where == "userns"))
    try:
        with web_server() as web:
            got = through_privoxy(port, f"http://localhost:{web}/", proc)
        assert got == PAGE, got
        pid = daemon_pid(proc, "privoxy")
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        uid = str(pwd.getpwnam("privoxy").pw_uid)
        assert status_field(pid, "Uid").split() == [uid] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    assert f'"files": ["{jail}/etc/privoxy/config"]' in stderr, stderr
    handover = [ln for ln in stderr.splitlines() if '"event": "handover"' in ln]
    assert handover and f'"chroot": "{jail}"' in handover[0], stderr
    assert (jail / "etc/hosts").read_bytes() == Path("/etc/hosts").read_bytes()
    assert strategies(stderr) == ({"bind"} if where == "userns" else {"mknod"}), stderr


def _forked_privoxy(proc: subprocess.Popen[str], jail: Path) -> tuple[int, int]:
    """(pid, pidfd) of the privoxy that privoxy's main() forked (its parent, which jailshim
    became, waits 1 s and exits): a privoxy whose parent is privoxy and whose root is the jail
    (not the checker, whose root is its private view), pinned while its parent lives."""

    def forked(pid: int) -> bool:
        return pids.exe_is("privoxy")(pids.parent(pid)) and os.readlink(f"/proc/{pid}/root") == str(
            jail
        )

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for child in descendants(proc.pid):
            pinned = pids.pin(child, pids.exe_is("privoxy"), forked)
            if pinned is not None:
                return child, pinned
        if proc.poll() is not None:
            _, err = stop(proc)
            raise AssertionError(f"exited {proc.returncode} and left no privoxy:\n{err}")
        time.sleep(0.01)
    raise AssertionError("privoxy did not fork")


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_debians_unit_arguments_log_inside_the_jail(
    area: Path, privoxy_bin: str, where: str
) -> None:
    """Debian's ExecStart (`--pidfile FILE --user privoxy CONFIG`, daemonizing) with --chroot:
    privoxy forks, writes its pid file on the host before the chroot, and appends to its
    logfile inside the jail (var/log/privoxy/logfile, as privoxy), which jailshim said; it
    proxies a name resolved in the jail."""
    port = free_port()
    jail = stock_jail(area, port)
    logs = jail / "var/log/privoxy"
    logs.mkdir(parents=True)
    user = pwd.getpwnam("privoxy")
    os.chown(logs, user.pw_uid, user.pw_gid)
    pidfile = area / "privoxy.pid"
    argv = [privoxy_bin, "--pidfile", str(pidfile), "--user", "privoxy", "--chroot"]
    argv.append("/etc/privoxy/config")
    proc = spawn(jailed_run(area, jail, argv, userns=where == "userns"))
    pid, pinned = _forked_privoxy(proc, jail)
    try:
        with web_server() as web:
            assert through_privoxy(port, f"http://localhost:{web}/", proc) == PAGE
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        assert int(pidfile.read_text()) == pid
        logfile = logs / "logfile"
        assert logfile.stat().st_uid == user.pw_uid  # created by privoxy, in the jail
        _, stderr = proc.communicate(timeout=30)  # the parent's exit after its 1 s wait
        assert proc.returncode == 0, stderr
    finally:
        pids.send(pinned, signal.SIGTERM)
        assert pids.ended(pinned, 10)
        pids.close([pinned])
        stop(proc)
    assert f"appends to its logfile /var/log/privoxy/logfile inside the jail ({logs}/" in stderr


def test_daemon_mode_without_a_log_directory_in_the_jail_is_refused(
    area: Path, privoxy_bin: str
) -> None:
    """Daemonizing, privoxy opens its logfile inside the jail and exits when it cannot:
    jailshim refuses first (78), nothing prepared."""
    jail = stock_jail(area, free_port())
    argv = [privoxy_bin, "--user", "privoxy", "--chroot", "/etc/privoxy/config"]
    result = subprocess.run(
        jailed_run(area, jail, argv, userns=False),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    assert "can't open logfile: '/var/log/privoxy/logfile'" in result.stderr, result.stderr
    assert f"{jail}/var/log/privoxy is no directory" in result.stderr
    assert not (jail / "dev").exists()


def test_a_home_that_is_root_is_no_jail(area: Path, privoxy_bin: str) -> None:
    """privoxy would chroot("/"): no jail at all; refused (78) before anything."""
    argv = [privoxy_bin, "--no-daemon", "--chroot", "--user", "privoxy", "/etc/privoxy/config"]
    result = subprocess.run(
        jailed_run(area, Path("/"), argv, userns=False),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    assert "privoxy's is /: no jail at all" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (
            "actionsfile nonexistent.action",
            "can't load actions file '/etc/privoxy/nonexistent.action': No such file",
        ),
        (
            "filterfile nonexistent.filter",
            "can't load re_filterfile '/etc/privoxy/nonexistent.filter': No such file",
        ),
    ],
)
def test_broken_config_in_the_jail_is_78_in_privoxys_words(
    area: Path, privoxy_bin: str, line: str, words: str
) -> None:
    """The jail's config (not the host's /etc/privoxy/config, which is sound) names a file
    the jail lacks: `privoxy --config-test`, run in the jail's view, says so; 78, and the
    jail is taken back."""
    jail = stock_jail(area, free_port())
    with (jail / "etc/privoxy/config").open("a") as f:
        f.write(f"{line}\n")
    argv = [privoxy_bin, "--no-daemon", "--chroot", "--user", "privoxy", "/etc/privoxy/config"]
    result = subprocess.run(
        jailed_run(area, jail, argv, userns=False),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    assert "privoxy rejected its configuration" in result.stderr
    assert words in result.stderr, result.stderr
    assert not (jail / "dev").exists(), "the jail was not taken back"


def test_checker_reads_the_jail_as_privoxys_user(area: Path, privoxy_bin: str) -> None:
    """An actions file only root may read: privoxy, which reads it as its user after the
    chroot, could not load it, and neither can the checker (it runs as privoxy's user)."""
    jail = stock_jail(area, free_port())
    (jail / "etc/privoxy/user.action").chmod(0o600)
    os.chown(jail / "etc/privoxy/user.action", 0, 0)
    argv = [privoxy_bin, "--no-daemon", "--chroot", "--user", "privoxy", "/etc/privoxy/config"]
    result = subprocess.run(
        jailed_run(area, jail, argv, userns=False),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    assert "'/etc/privoxy/user.action': error opening file: Permission denied" in result.stderr, (
        result.stderr
    )


def test_debians_home_is_refused_until_it_holds_the_config(area: Path, privoxy_bin: str) -> None:
    """Debian's privoxy user has /etc/privoxy as its home: with --chroot privoxy would look
    for /etc/privoxy/etc/privoxy/config. jailshim refuses (78) before preparing anything
    (checked on a copy of /etc/privoxy bound over it)."""
    copy = pristine_copy("privoxy", "/etc/privoxy", area)
    before = sorted(p.name for p in copy.iterdir())
    argv = in_stock_layout(
        {"/etc/privoxy": copy},
        jailshim_argv(
            "run", "--", privoxy_bin, "--chroot", "--user", "privoxy", "/etc/privoxy/config"
        ),
        userns=False,
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 78, result.stderr
    assert "can't check configuration file '/etc/privoxy/config'" in result.stderr
    assert "/etc/privoxy/etc/privoxy/config is not a readable file" in result.stderr
    assert sorted(p.name for p in copy.iterdir()) == before


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--chroot", "/etc/privoxy/config"], "Cannot chroot without --user argument."),
        (["--chroot", "--user", "no-such-user-jailshim", "x"], "User 'no-such-user-jailshim'"),
        (["--chroot", "--user", "privoxy.no-such-group-js", "x"], "Group 'no-such-group-js'"),
    ],
)
def test_privoxys_own_refusals_are_78_before_anything(
    area: Path, privoxy_bin: str, args: list[str], words: str
) -> None:
    result = subprocess.run(
        [*jailshim_argv("run", "--", privoxy_bin, *args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    assert words in result.stderr


def test_a_jail_others_can_write_is_refused(area: Path, privoxy_bin: str) -> None:
    """A home (jail) any user can write: jailshim's judgement refuses it (78) before the
    checker runs and before anything is prepared."""
    jail = stock_jail(area, free_port())
    jail.chmod(0o777)
    argv = [privoxy_bin, "--no-daemon", "--chroot", "--user", "privoxy", "/etc/privoxy/config"]
    result = subprocess.run(
        jailed_run(area, jail, argv, userns=False),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    assert "writable by a non-root user" in result.stderr
    assert not (jail / "dev").exists()
    assert not (jail / "etc/hosts").exists()


def test_argv_read_as_main_reads_it() -> None:
    args = argv_options(
        ["privoxy", "--pidfile", "/run/p", "--user", "px.web", "--no-daemon", "--chroot", "c"]
    )
    assert (args.pidfile, args.user, args.group) == ("/run/p", "px", "web")
    assert (args.daemon, args.chroot, args.config) == (False, True, "c")
    assert argv_options(["privoxy", "--user", "privoxy"]).config == "config"  # the value
    with pytest.raises(UsageError, match="'x' is no option it takes and not the last word"):
        argv_options(["privoxy", "x", "--no-daemon"])
    with pytest.raises(UsageError, match="--user needs a value"):
        argv_options(["privoxy", "--user"])


def test_config_read_as_load_config_reads_it() -> None:
    """Lines as edit_read_line makes them (comments, `\\#`, continuation, leading space,
    directive case), paths as make_path makes them (an actionsfile takes the confdir above
    it; a relative confdir is taken from basedir), logfile only when daemonizing."""
    text = (
        "# comment\n"
        "  actionsfile early.action\n"
        "CONFDIR conf   # trailing comment\n"
        "actionsfile /abs/a.action\n"
        "actionsfile b\\#c.action\n"
        "filterfile \\\n"
        "   user.filter\n"
        "logdir /var/log/privoxy\n"
        "logfile logfile\n"
        "listen-address\t:8000\n"
    )
    config = parse_config(text, daemon=True, basedir="/start")
    assert config.actions == ("early.action", "/abs/a.action", "/start/conf/b#c.action")
    assert config.filters == ("/start/conf/user.filter",)
    assert config.logfile == "/var/log/privoxy/logfile"
    assert config.templdir == "/start/conf/templates"
    assert config.listen == (":8000",)
    assert parse_config(text, daemon=False, basedir="").logfile == ""
    assert parse_config("", daemon=True, basedir="").listen == ("127.0.0.1:8118",)
    assert make_path("/etc/privoxy/", "x", "") == "/etc/privoxy/x"
    assert split_listen("[::1]:8118") == ("::1", 8118)
    assert split_listen(":8118") == ("", 8118)
    assert split_listen("::1:8118") is None  # privoxy: "invalid bind port spec"
    assert split_listen("127.0.0.1") is None


def test_a_view_that_cannot_be_built_is_said_as_jailshims_not_privoxys(tmp_path: Path) -> None:
    """The checker's helper exits 125 with one line of its own when it cannot build the view
    (here: the binary is gone), so the adapter does not report it as privoxy's verdict."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "jailshim.daemons.privoxy", str(tmp_path), "0:0:", "/"),
            *(str(tmp_path / "no-privoxy"), "privoxy", "--config-test"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == VIEW_FAILED, result.stderr
    assert result.stderr.startswith("jailshim-view: jailshim could not build the view")


def test_the_checkers_view_stays_its_own_where_mounts_propagate(
    area: Path, privoxy_bin: str
) -> None:
    """Under a shared / (systemd makes it so), a mount in a copied namespace propagates back
    unless made private first: after the checker ran, the namespace jailshim ran in shows none
    of the view's mounts (its tmpfs over the jail would hide the jail from the daemon)."""
    jail = stock_jail(area, free_port())
    with (jail / "etc/privoxy/config").open("a") as f:
        f.write("actionsfile nonexistent.action\n")  # the checker runs, then 78: quick
    passwd = passwd_with_home(area, jail)
    argv = [privoxy_bin, "--no-daemon", "--chroot", "--user", "privoxy", "/etc/privoxy/config"]
    script = (
        f'mount --bind {passwd} /etc/passwd; "$@"; echo code=$? >&2; '
        "echo view-mounts=$(grep -c jailshim-privoxy-check /proc/self/mountinfo) >&2"
    )
    wrap = ["unshare", "--mount", "--propagation", "shared", "sh", "-c", script, "sh"]
    result = subprocess.run(
        [*wrap, *jailshim_argv("run", "--", *argv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "code=78" in result.stderr, result.stderr
    assert "view-mounts=0" in result.stderr, result.stderr


def test_user_dot_group_is_that_group_alone() -> None:
    """`--user USER.GROUP`: setgid(GROUP), setgroups(1, [GROUP]) (jcc.c main); `--user USER`:
    initgroups, the memberships jailshim resolves."""
    from jailshim.daemons import DaemonPlan
    from jailshim.daemons.privoxy import ADAPTER
    from jailshim.spec import Identity

    resolved = Identity("privoxy", 113, 65534, (4, 65534))
    grouped = ADAPTER.identity(resolved, DaemonPlan((), group="nogroup"), group_given=True)
    assert grouped.groups == (65534,)
    assert ADAPTER.identity(resolved, DaemonPlan(()), group_given=False) == resolved
