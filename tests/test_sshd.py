"""`jailshim run -- sshd -D -f FILE`: the sftp jails of its Match blocks, read by `sshd -T`.

Each daemon test runs in a private mount namespace of its own (also a user namespace for
"userns") where the test's user exists in copies of /etc/passwd, shadow and group bound over the
host's, the jails live under /srv (a directory of the test's, bound there: sshd wants every
component of a jail's path root-owned, and pytest's /tmp is 1777), /run is a tmpfs with sshd's
/run/sshd, and /dev is a tmpfs holding binds of the host's nodes and the test's syslog socket
as /dev/log. The host's /etc, /srv, /run and /dev are never written; all of it goes with sshd.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jailshim.daemons.sshd import (
    expand_chroot,
    literal_users,
    match_lines,
    refusal,
    unenterable,
)
from jailshim.errors import ConfigError
from tests import pids
from tests.daemons import SyslogSocket, descendants, free_port, own_network, stop
from tests.support import NSRUN, jailshim_argv, need, spawn

__all__ = ["own_network"]  # a fixture (tests/daemons.py) the fixtures here use

SSHD = "/usr/sbin/sshd"
STOCK = Path("/usr/share/openssh/sshd_config")  # Debian's pristine sshd_config
USER, UID = "jsftp", 64200  # the test's user: only in the namespace's passwd copy
_NODES = ("null", "zero", "full", "random", "urandom", "tty")


@pytest.fixture
def sshd_bin(root: None, own_network: None) -> str:
    need(os.access(SSHD, os.X_OK), "needs sshd (Debian package openssh-server)")
    need(STOCK.is_file(), f"needs Debian's {STOCK} (package openssh-server)")
    need(shutil.which("sftp") is not None, "needs sftp (Debian package openssh-client)")
    return SSHD


class Site:
    """The test's /srv (each user's jail /srv/jail/USER and home), passwd, shadow and group
    copies with its users, the client's key, sshd's config and the syslog socket."""

    def __init__(self, area: Path, port: int, match: str, users: tuple[str, ...] = (USER,)) -> None:
        self.area, self.port = area, port
        self.srv = area / "srv"
        self.key = area / "client_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        passwd, shadow, group = [], [], []
        for uid, user in enumerate(users, UID):
            jail = self.srv / "jail" / user  # ChrootDirectory /srv/jail/%u
            (jail / "pub").mkdir(parents=True, mode=0o755)
            (jail / "pub/hello.txt").write_text(f"hello {user}, from the jail\n")
            ssh = self.srv / "home" / user / ".ssh"
            ssh.mkdir(parents=True, mode=0o755)
            for d in (self.srv, self.srv / "jail", self.srv / "home", ssh.parent, jail):
                d.chmod(0o755)
            (ssh / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
            passwd.append(f"{user}:x:{uid}:{uid}::/srv/home/{user}:/usr/sbin/nologin\n")
            # pam_unix's account check wants a shadow line ("*": no password, not locked)
            shadow.append(f"{user}:*:19000:0:99999:7:::\n")
            group.append(f"{user}:x:{uid}:\n")
        self.jail = self.srv / "jail" / users[0]
        self.copies = {}
        for name, lines in (("passwd", passwd), ("shadow", shadow), ("group", group)):
            copy = area / name
            shutil.copy2(f"/etc/{name}", copy)
            with copy.open("a") as f:
                f.writelines(lines)
            self.copies[f"/etc/{name}"] = copy
        self.config = area / "sshd_config"
        stock = STOCK.read_text()
        assert "#Port 22\n" in stock, "Debian's sshd_config changed"
        self.config.write_text(stock.replace("#Port 22\n", f"Port {port}\n") + match)
        self.log = SyslogSocket(area / "log")
        # a datagram socket queues only net.unix.max_dgram_qlen (10) messages, then syslog()
        # blocks the sender: sshd stalled mid-session until a thread kept reading
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        (area / "hostdev").mkdir()

    def _drain(self) -> None:
        while True:
            try:
                self.lines.append(self.log.sock.recv(65536).decode(errors="replace"))
            except OSError:  # closed
                return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.log.sock.shutdown(socket.SHUT_RDWR)
        self.log.close()
        self.reader.join(5)

    def wrap(
        self, argv: list[str], *, userns: bool, before: tuple[list[str], ...] = ()
    ) -> list[str]:
        """``argv`` in the private namespace described in the module's docstring, after each
        command of ``before`` (a unit's ExecStartPre=) has exited 0."""
        q = shlex.quote
        steps = [
            "set -e",
            f"mount --bind {q(str(self.srv))} /srv",
            *(f"mount --bind {q(str(c))} {p}" for p, c in self.copies.items()),
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            "mkdir -m 0755 /run/sshd",
            f"mount --rbind /dev {q(str(self.area / 'hostdev'))}",
            "mount -t tmpfs -o mode=0755 tmpfs /dev",
            *(
                f"touch /dev/{n}; mount --bind {q(str(self.area / 'hostdev' / n))} /dev/{n}"
                for n in _NODES
            ),
            f"touch /dev/log; mount --bind {q(str(self.log.path))} /dev/log",
            *(shlex.join(cmd) for cmd in before),
            'exec "$@"',
        ]
        ns = (
            [sys.executable, NSRUN, "--mount", "--"]
            if userns
            else ["unshare", "--mount", "--propagation", "private"]
        )
        return [*ns, "sh", "-c", "; ".join(steps), "sh", *argv]

    def sftp(self, batch: str, user: str = USER) -> subprocess.CompletedProcess[str]:
        """An sftp session with the client's key, retried until sshd listens."""
        (self.area / "batch").write_text(batch)
        argv = [
            "sftp",
            "-b",
            str(self.area / "batch"),
            "-i",
            str(self.key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            f"UserKnownHostsFile={self.area / 'known_hosts'}",
            "-o",
            "BatchMode=yes",
            "-P",
            str(self.port),
            f"{user}@127.0.0.1",
        ]
        deadline = time.monotonic() + 20
        while True:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            if done.returncode == 0 or time.monotonic() > deadline:
                return done
            if "Connection refused" not in done.stderr:
                return done
            time.sleep(0.2)


_MATCH = (
    f"\nMatch User {USER}\n\tChrootDirectory /srv/jail/%u\n\tForceCommand internal-sftp -l INFO\n"
)


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_sftp_session_is_served_from_the_jail_of_its_match_block(
    area: Path, sshd_bin: str, where: str
) -> None:
    """Debian's stock sshd_config, its port moved and a Match block added: no --chroot, the
    jail is /srv/jail/%u for the user the Match line names (sshd -T -C user=…); an sftp
    session lists and gets the jail's file, and internal-sftp's INFO lines (logged after its
    chroot) reach the test's syslog socket through the jail's dev/log."""
    site = Site(area, free_port(), _MATCH)
    try:
        argv = jailshim_argv("run", "--", sshd_bin, "-D", "-f", str(site.config))
        proc = spawn(site.wrap(argv, userns=where == "userns"))
        try:
            got = area / "got.txt"
            done = site.sftp(f"ls pub\nget pub/hello.txt {got}\n")
            assert done.returncode == 0, (done.stderr, site.lines)
            assert "pub/hello.txt" in done.stdout
            assert got.read_text() == f"hello {USER}, from the jail\n"
            time.sleep(0.5)  # the session's last lines
            lines = list(site.lines)
        finally:
            _, stderr = stop(proc)
    finally:
        site.close()
    assert "Traceback" not in stderr
    handover = [ln for ln in stderr.splitlines() if '"event": "handover"' in ln]
    assert handover and '"chroot": "/srv/jail/jsftp"' in handover[0], stderr
    assert '"log_sockets": ["/dev/log"]' in stderr, stderr
    sftp_lines = [ln for ln in lines if "internal-sftp" in ln]
    assert any(f"session opened for local user {USER}" in ln for ln in sftp_lines), lines
    assert any('open "/pub/hello.txt"' in ln for ln in sftp_lines), lines  # path in the jail
    assert (site.jail / "dev/log").exists() or where == "userns"


def test_several_jails_run_prepares_the_first_and_prepare_the_rest(
    area: Path, sshd_bin: str
) -> None:
    """`Match User jsftp,jother` with ChrootDirectory /srv/jail/%u: two jails. run prepares
    the first (config order) and names the other with the `jailshim prepare` line that
    prepares it; run as an ExecStartPre= before run, that line makes the second user's
    session work too, its INFO lines reaching the syslog socket through its own jail."""
    other = "jother"
    match = _MATCH.replace(f"Match User {USER}", f"Match User {USER},{other}")
    site = Site(area, free_port(), match, users=(USER, other))
    second = site.srv / "jail" / other
    try:
        argv = jailshim_argv("run", "--", sshd_bin, "-D", "-f", str(site.config))
        prepare = jailshim_argv(
            "prepare", "--chroot", f"/srv/jail/{other}", "--log-socket", "/dev/log"
        )
        proc = spawn(site.wrap(argv, userns=False, before=(prepare,)))
        try:
            for user in (USER, other):
                got = area / f"{user}.txt"
                done = site.sftp(f"get pub/hello.txt {got}\n", user)
                assert done.returncode == 0, (done.stderr, site.lines)
                assert got.read_text() == f"hello {user}, from the jail\n"
            time.sleep(0.5)
            lines = list(site.lines)
        finally:
            _, stderr = stop(proc)
    finally:
        site.close()
    assert "Traceback" not in stderr
    handover = [ln for ln in stderr.splitlines() if '"event": "handover"' in ln]
    assert handover and '"chroot": "/srv/jail/jsftp"' in handover[-1], stderr
    note = (
        f"the jail /srv/jail/{other} (for {other}) is not prepared by this run (it prepares "
        f"one: /srv/jail/{USER}); prepare it with `jailshim prepare --chroot /srv/jail/{other} "
        "--log-socket /dev/log`"
    )
    assert note in stderr, stderr
    for user in (USER, other):
        opened = f"session opened for local user {user}"
        assert any("internal-sftp" in ln and opened in ln for ln in lines), lines
    assert (second / "dev/log").exists() and (site.jail / "dev/log").exists()


def _error(stderr: str) -> str:
    """The sentence of jailshim's "failed" event."""
    failed = [json.loads(ln) for ln in stderr.splitlines() if '"event": "failed"' in ln]
    assert failed, stderr
    return str(failed[-1]["error"])


def test_a_jail_with_bad_ownership_is_a_warning_in_sshds_words_and_sshd_still_starts(
    area: Path, sshd_bin: str
) -> None:
    """The user's jail owned by the user: sshd ends that user's sessions after login, and
    only theirs. jailshim says so in sshd's words before it starts, prepares nothing there,
    and still starts sshd (refusing the start, 78, locked every other user out too, admins
    on Debian's ssh.service included); the session then fails with the words jailshim said."""
    site = Site(area, free_port(), _MATCH)
    try:
        os.chown(site.jail, UID, UID)
        argv = jailshim_argv("run", "--", sshd_bin, "-D", "-f", str(site.config))
        proc = spawn(site.wrap(argv, userns=False))
        try:
            done = site.sftp("ls pub\n")
            assert done.returncode != 0, done.stdout
            time.sleep(0.5)  # sshd's last lines of that session
            lines = list(site.lines)
        finally:
            _, stderr = stop(proc)
    finally:
        site.close()
    words = 'bad ownership or modes for chroot directory "/srv/jail/jsftp"'
    events = [json.loads(ln) for ln in stderr.splitlines() if ln.startswith("{")]
    notes = [str(e.get("note")) for e in events if e["level"] == "warning"]
    assert any(words in n and "not prepared" in n for n in notes), stderr
    assert '"event": "handover"' in stderr, stderr
    assert any(words in ln for ln in lines), lines  # what sshd itself said: the same
    assert not (site.jail / "dev").exists(), "a jail sshd refuses was prepared"


def test_a_jail_its_user_cannot_search_is_a_warning_and_sshd_still_starts(
    area: Path, sshd_bin: str
) -> None:
    """The user's jail 0700 root's: sshd's rule takes it, but the session, as the user, sees
    nothing after its chroot (and its dev/log lines are lost); jailshim's checks, as root,
    had passed. Run under Debian's ssh.service, the example's session said "Can't ls".
    jailshim now says so before it starts, prepares nothing there, and still starts sshd."""
    site = Site(area, free_port(), _MATCH)
    try:
        site.jail.chmod(0o700)
        argv = jailshim_argv("run", "--", sshd_bin, "-D", "-f", str(site.config))
        proc = spawn(site.wrap(argv, userns=False))
        try:
            done = site.sftp("ls pub\n")
            assert done.returncode != 0, done.stdout
        finally:
            _, stderr = stop(proc)
    finally:
        site.close()
    assert "not found" in done.stderr, done.stderr  # sftp: Can't ls: "/pub" not found
    events = [json.loads(ln) for ln in stderr.splitlines() if ln.startswith("{")]
    notes = [str(e.get("note")) for e in events if e["level"] == "warning"]
    words = f"{USER} cannot enter the jail /srv/jail/{USER} (mode 0700"
    assert any(words in n and "not prepared" in n for n in notes), stderr
    assert '"event": "handover"' in stderr, stderr
    assert not (site.jail / "dev").exists(), "a jail its user cannot enter was prepared"


def test_unenterable_reads_the_mode_as_the_kernel_would(tmp_path: Path) -> None:
    """Search permission on the jail itself for the user: owner root, so group bits for its
    groups, other bits else; root always."""
    tmp_path.chmod(0o750)
    gid = tmp_path.stat().st_gid
    assert unenterable(str(tmp_path), "u", 1000, [gid]) == ""
    assert "cannot enter" in unenterable(str(tmp_path), "u", 1000, [gid + 1])
    assert unenterable(str(tmp_path), "root", 0, []) == ""
    tmp_path.chmod(0o711)
    assert unenterable(str(tmp_path), "u", 1000, [gid + 1]) == ""


@pytest.mark.parametrize("added", [_MATCH + "\tNoSuchOption yes\n", "\nNoSuchOption yes\n"])
def test_a_broken_config_is_78_in_sshds_words(area: Path, sshd_bin: str, added: str) -> None:
    """In a Match block (every `sshd -T -C user=…` refuses too) or with no Match block at all
    (only the first `sshd -T` reads it): 78 in sshd's words, nothing prepared."""
    site = Site(area, free_port(), added)
    try:
        argv = jailshim_argv("run", "--", sshd_bin, "-D", "-f", str(site.config))
        done = subprocess.run(
            site.wrap(argv, userns=False), capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        site.close()
    assert done.returncode == 78, done.stderr
    assert "Bad configuration option: NoSuchOption" in _error(done.stderr), done.stderr
    assert not (site.jail / "dev").exists()


def test_a_missing_privilege_separation_directory_is_78_in_sshds_words(
    area: Path, sshd_bin: str
) -> None:
    """No /run/sshd (a container whose /run is empty, no unit's RuntimeDirectory=): sshd -T
    (sshd's checker: the same code as -t) refuses; 78 in sshd's words, nothing prepared."""
    site = Site(area, free_port(), _MATCH)
    try:
        argv = jailshim_argv("run", "--", sshd_bin, "-D", "-f", str(site.config))
        wrapped = site.wrap(argv, userns=False)
        script = wrapped.index("sh") + 2
        wrapped[script] = wrapped[script].replace("mkdir -m 0755 /run/sshd", "true")
        done = subprocess.run(wrapped, capture_output=True, text=True, timeout=60, check=False)
    finally:
        site.close()
    assert done.returncode == 78, done.stderr
    assert "Missing privilege separation directory: /run/sshd" in _error(done.stderr)
    assert not (site.jail / "dev").exists()


def test_match_lines_and_tokens_are_read_as_sshd_does(tmp_path: Path) -> None:
    debug = (
        "debug3: checking syntax for 'Match User alice,bob Address 10.0.0.0/8'\n"
        "debug3: checking syntax for 'Match User carol'\n"
        "debug3: checking match for 'User carol' user (null) host (null)\n"
    )
    assert match_lines(debug) == ["User alice,bob Address 10.0.0.0/8", "User carol"]
    assert literal_users("User alice,bob Address 10.0.0.0/8") == (["alice", "bob"], False)
    assert literal_users("User carol") == (["carol"], True)
    assert literal_users("user dan,sftp-*,!eve") == (["dan"], False)
    assert literal_users("Group sftp") == ([], False)
    assert expand_chroot("/srv/%u/%U/%%", "ann", 7, "/home/ann") == "/srv/ann/7/%"
    assert expand_chroot("%h", "ann", 7, "/home/ann") == "/home/ann"
    assert expand_chroot("~/jail", "ann", 7, "/home/ann") == "/home/ann/jail"
    with pytest.raises(ConfigError, match="unknown key %x"):
        expand_chroot("/srv/%x", "ann", 7, "/home/ann")
    # safely_chroot: each prefix up to a "/", then the whole path
    assert refusal("relative") == "chroot path does not begin at root"
    assert refusal("/") == ""
    assert refusal(str(tmp_path)) == 'bad ownership or modes for chroot directory component "/tmp/"'
    assert refusal("/nonexistent-jailshim") == (
        'safely_chroot: stat("/nonexistent-jailshim"): No such file or directory'
    )
    assert refusal("/etc/passwd") == 'chroot path "/etc/passwd" is not a directory'


def test_example_works_as_its_readme_says(area: Path, sshd_bin: str) -> None:
    """examples/sshd-sftp/README.md's commands as written, in the test's namespace (its user
    made in the passwd copies, as the README's useradd line would; /etc/ssh a copy): the
    README's sftp line lists the file through sshd on 10022 from the jail jailshim prepared;
    Ctrl-C stops sshd; the README's teardown exits 0 and takes dev/ back; /etc/ssh is the
    host's as it was."""
    from tests.stock import copy_of, host_state
    from tests.test_examples import REPO, _parse_readme

    known = area / "known_hosts"  # never root's own ~/.ssh/known_hosts

    def edit(command: str) -> str:
        return command.replace("sftp -b ", f"sftp -o UserKnownHostsFile={known} -b ")

    setup, start, _, clients, after = _parse_readme("sshd-sftp", edit)
    assert all(str(known) in c for c, _ in clients), clients
    useradd = [c for c in setup if c.startswith("useradd ")]
    assert useradd and useradd[0].split()[-1] == "sftpdemo", setup
    setup = [c for c in setup if not c.startswith("useradd ")]
    work = area / "example"
    work.mkdir(mode=0o755)
    for source in (REPO / "examples" / "sshd-sftp").iterdir():
        (work / source.name).write_text(source.read_text())
    site = Site(area, 10022, "", users=("sftpdemo",))
    shutil.rmtree(site.srv / "jail")  # the README makes its own /srv/sftp
    host_before = host_state(("/etc/ssh",))
    site.copies["/etc/ssh"] = copy_of("/etc/ssh", area)
    pidfile = area / "sshd.pid"
    script = "; ".join(
        [
            f"cd {shlex.quote(str(work))}",
            *setup,
            f"{start} & echo $! > {pidfile}",
            "status=0; wait $! || status=$?",
            'echo "example-daemon-exit=$status" >&2',
            *after,
        ]
    )
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = spawn(site.wrap(["sh", "-c", script], userns=False), env)
    jail = site.srv / "sftp" / "sftpdemo"
    try:
        assert clients, clients
        for command, expected in clients:
            deadline = time.monotonic() + 30
            seen = ""
            while expected not in seen and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()
                done = subprocess.run(
                    ["sh", "-c", f"timeout 10 {command}"],
                    cwd=work,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                seen = done.stdout
                time.sleep(0.2)
            assert expected in seen, (command, done.stderr, site.lines)
        assert (jail / "dev/log").exists()
        pid = int(pidfile.read_text())
        pinned = pids.pin(pid)  # pinned first, then proven ours: the signal reaches only it
        assert pinned is not None
        try:
            assert pid in descendants(proc.pid)
            assert os.readlink(f"/proc/{pid}/exe") == sshd_bin  # jailshim became sshd
            pids.send(pinned, signal.SIGINT)  # Ctrl-C, as the README says
        finally:
            pids.close([pinned])
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            stop(proc)
        site.close()
    assert "Traceback" not in stderr
    assert proc.returncode == 0, stderr  # the teardown after the stop exited 0
    assert not (jail / "dev").exists(), list(jail.iterdir())
    assert sorted(p.name for p in jail.iterdir()) == ["files"]
    assert any("session opened for local user sftpdemo" in ln for ln in site.lines)
    assert host_state(("/etc/ssh",)) == host_before


@pytest.mark.parametrize(
    ("added", "chroot", "note"),
    [
        # a global jail without tokens is every user's: run prepares it
        ("\nChrootDirectory /srv/jail\n", "/srv/jail", ""),
        # a global jail with a token is one per user: only Match User names them
        ("\nChrootDirectory /srv/jail/%u\n", None, "has a jail per user"),
        # a pattern names nobody: its jails are the operator's to prepare
        (
            "\nMatch User js*\n\tChrootDirectory /srv/jail/%u\n",
            None,
            "Match User js*: not resolved for users it does not name literally",
        ),
        # Group: not resolved, but a user named elsewhere is asked about (sshd applies it)
        (
            f"\nMatch User {USER}\n\tForceCommand internal-sftp\n"
            "Match Group jsftp\n\tChrootDirectory /srv/jail/%u\n",
            f"/srv/jail/{USER}",
            "Match Group jsftp: not resolved",
        ),
    ],
)
def test_what_run_resolves_from_sshd_t(
    area: Path, sshd_bin: str, added: str, chroot: str | None, note: str
) -> None:
    """--dry-run: the jail read (the sshd.config event) and the note for what is not."""
    site = Site(area, free_port(), added)
    try:
        argv = jailshim_argv("run", "--dry-run", "--", sshd_bin, "-D", "-f", str(site.config))
        done = subprocess.run(
            site.wrap(argv, userns=False), capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        site.close()
    assert done.returncode == 0, done.stderr
    read = [json.loads(ln) for ln in done.stderr.splitlines() if '"sshd.config"' in ln]
    facts = [event for event in read if "files" in event]
    assert facts and facts[0]["chroot"] == chroot, done.stderr
    notes = [str(event.get("note", "")) for event in read]
    assert (not note and not any(notes)) or any(note in n for n in notes), done.stderr
