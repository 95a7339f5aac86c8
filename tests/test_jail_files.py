"""Jail files (--file, --files time|resolver|services, --file-mode, --resolve): placed like
devices, proved from inside the jail as the daemon's user, undone exactly by teardown.

The host's files are changed only inside a private mount namespace the test makes (a zoneinfo
file bound over /etc/localtime, a test resolv.conf over /etc/resolv.conf); the resolver is a
real unbound on 127.0.0.2 in a network namespace the test makes, serving a test zone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jailshim.errors import ConfigError
from jailshim.files import FileAction, FileFacts, FileMode, HostFile, JailFile, decide_file
from jailshim.jail.safepath import Entry, EntryKind
from jailshim.verify.needs import Zone, judge_resolve, judge_time
from tests.support import Result, clean_env, need, run, snapshot

ZONE = "/usr/share/zoneinfo/Asia/Kolkata"  # +05:30 all year: never UTC, no DST surprise
MAIL_ADDRESS = "192.0.2.25"


class Namespace:
    """A holder process in new mount (and maybe network) namespaces; commands enter them."""

    def __init__(self, *, net: bool) -> None:
        flags = ["--mount", "--propagation", "private", *(["--net"] if net else [])]
        self.proc = subprocess.Popen(["unshare", *flags, "sleep", "600"])
        self.wrap = ["nsenter", "-t", str(self.proc.pid), "--mount", *(["--net"] if net else [])]
        deadline = time.monotonic() + 5
        mine = os.readlink("/proc/self/ns/mnt")
        while os.readlink(f"/proc/{self.proc.pid}/ns/mnt") == mine:  # unshare has not run yet
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.wrap, "sh", "-c", script],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    def writable_etc(self, area: Path) -> None:
        """/etc as an overlay (in this namespace only) whose entries the test may replace."""
        upper, work = area / "etc-upper", area / "etc-work"
        upper.mkdir()
        work.mkdir()
        self.sh(f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc")

    def js(self, *args: str) -> Result:
        return run(*args, wrap=self.wrap, env=clean_env())

    def close(self) -> None:
        self.proc.kill()  # the namespaces (and the mounts in them) go with their last process
        self.proc.wait()


@pytest.fixture
def ns(root: None) -> Iterator[Namespace]:
    need(shutil.which("nsenter") is not None, "needs nsenter(1) from util-linux")
    space = Namespace(net=False)
    try:
        yield space
    finally:
        space.close()


def _failing(result: Result) -> dict[str, str]:
    return {e["check"]: e["detail"] for e in result.named("check") if not e["ok"]}


def test_time_zone_is_copied_proved_and_restored(ns: Namespace, jail: Path) -> None:
    need(os.path.exists(ZONE), f"needs {ZONE} (Debian package tzdata)")
    ns.sh(f"mount --bind {ZONE} /etc/localtime")
    (jail / "etc").mkdir()
    (jail / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/UTC")  # the jail's own
    before = snapshot(jail)
    assert ns.js("prepare", "--chroot", str(jail), "--no-verify").code == 0  # devices only

    # Without --files time the mismatch is a warning; with it, a failure naming the zones.
    plain = ns.js("check", "--chroot", str(jail), "--user", "nobody")
    assert plain.code == 0, plain.stderr
    warned = [e for e in plain.named("check") if e["check"] == "time"]
    assert warned and warned[0]["level"] == "warning", plain.stderr
    strict = ns.js("check", "--chroot", str(jail), "--user", "nobody", "--files", "time")
    assert strict.code == 69, strict.stderr
    assert "IST (UTC+05:30)" in _failing(strict)["time"], strict.stderr

    prepared = ns.js("prepare", "--chroot", str(jail), "--user", "nobody", "--files", "time")
    assert prepared.code == 0, prepared.stderr
    assert (jail / "etc" / "localtime").read_bytes() == Path(ZONE).read_bytes()
    assert not (jail / "etc" / "localtime").is_symlink()
    passed = ns.js("check", "--chroot", str(jail), "--user", "nobody", "--files", "time")
    assert passed.code == 0, passed.stderr
    [time_check] = [e for e in passed.named("check") if e["check"] == "time"]
    assert "IST (UTC+05:30), as the host's" in time_check["detail"]

    assert ns.js("teardown", "--chroot", str(jail)).code == 0
    assert snapshot(jail) == before  # the jail's own symlink is back, the same inode


def test_a_stale_copy_is_refreshed_atomically(ns: Namespace, jail: Path, area: Path) -> None:
    host = area / "hosts"
    host.write_text("192.0.2.1 one.test\n")
    ns.sh(f"mount --bind {host} /etc/hosts")
    args = ("prepare", "--chroot", str(jail), "--no-verify", "--file", "/etc/hosts")
    assert ns.js(*args).code == 0
    host.write_text("192.0.2.2 two.test\n")  # in place: the bind over /etc/hosts shows it
    again = ns.js(*args)
    assert again.code == 0, again.stderr
    [placed] = again.named("jail_file")
    assert placed["outcome"] == "refreshed", again.stderr
    assert (jail / "etc" / "hosts").read_text() == "192.0.2.2 two.test\n"
    assert sorted(os.listdir(jail / "etc")) == ["hosts"]  # nothing left at a temporary name
    assert ns.js(*args).named("jail_file") == []  # right now: left alone
    assert ns.js("teardown", "--chroot", str(jail)).code == 0
    assert os.listdir(jail) == []


UNBOUND_CONF = """server:
    interface: 127.0.0.2
    port: 53
    do-ip6: no
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    do-daemonize: no
    access-control: 127.0.0.0/8 allow
    local-zone: "test." static
    local-data: "mail.test. IN A {address}"
remote-control:
    control-enable: no
"""


@pytest.fixture
def resolver(root: None, area: Path) -> Iterator[tuple[Namespace, Path]]:
    """A mount and network namespace with unbound on 127.0.0.2:53 serving test., and a
    resolv.conf naming it bound over /etc/resolv.conf (through a symlink, as systemd-resolved
    has it): yields the namespace and the real resolv.conf file."""
    unbound = shutil.which("unbound")
    need(unbound is not None, "needs unbound (Debian package unbound)")
    need(shutil.which("nsenter") is not None, "needs nsenter(1) from util-linux")
    assert unbound is not None
    conf = area / "unbound.conf"
    conf.write_text(UNBOUND_CONF.format(dir=area, address=MAIL_ADDRESS))
    real = area / "run-resolve" / "stub-resolv.conf"
    real.parent.mkdir()
    real.write_text("nameserver 127.0.0.2\noptions timeout:1 attempts:1\n")
    space = Namespace(net=True)
    daemon: subprocess.Popen[str] | None = None
    try:
        space.sh("ip link set lo up")
        # /etc/resolv.conf becomes a symlink to the real file: prepare must follow it
        space.writable_etc(area)
        space.sh(f"rm /etc/resolv.conf && ln -s {real} /etc/resolv.conf")
        daemon = subprocess.Popen(
            [*space.wrap, unbound, "-d", "-c", str(conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 10
        while True:
            probe = subprocess.run(
                [*space.wrap, "getent", "hosts", "mail.test."],
                check=False,
                capture_output=True,
                text=True,
            )
            if MAIL_ADDRESS in probe.stdout:
                break
            assert daemon.poll() is None and time.monotonic() < deadline, probe
            time.sleep(0.05)
        yield space, real
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)  # by PID: only the unbound this test started
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        space.close()


def test_resolver_files_make_getaddrinfo_work_as_the_daemon(
    resolver: tuple[Namespace, Path], jail: Path
) -> None:
    space, real = resolver
    before = snapshot(jail)
    assert space.js("prepare", "--chroot", str(jail), "--no-verify").code == 0
    ask = ("--chroot", str(jail), "--user", "nobody", "--resolve", "mail.test.", "--timeout", "3")
    empty = space.js("check", *ask)
    assert empty.code == 69, empty.stderr
    assert "etc/resolv.conf is missing" in _failing(empty)["resolve mail.test."], empty.stderr
    assert "resolv.conf" in empty.error

    prepared = space.js("prepare", *ask, "--files", "resolver")
    assert prepared.code == 0, prepared.stderr
    placed = {e["path"]: e for e in prepared.named("jail_file")}
    assert placed["/etc/resolv.conf"]["source"] == str(real)  # the symlink followed on the host
    assert (jail / "etc" / "resolv.conf").read_text() == real.read_text()
    assert not (jail / "etc" / "resolv.conf").is_symlink()
    [answer] = [e for e in prepared.named("check") if e["check"] == "resolve mail.test."]
    assert MAIL_ADDRESS in answer["detail"]

    assert space.js("teardown", "--chroot", str(jail)).code == 0
    assert snapshot(jail) == before


def test_bind_mode_sees_a_host_change_at_once(resolver: tuple[Namespace, Path], jail: Path) -> None:
    space, real = resolver
    args = ("--chroot", str(jail), "--user", "nobody", "--timeout", "3")
    bound = space.js("prepare", *args, "--file", "/etc/resolv.conf", "--file-mode", "bind")
    assert bound.code == 0, bound.stderr
    inside = jail / "etc" / "resolv.conf"
    real.write_text("nameserver 127.0.0.9\n")  # in place, as a DHCP client rewrites it
    assert space.sh(f"cat {inside}").stdout == "nameserver 127.0.0.9\n"
    wrote = subprocess.run(
        [*space.wrap, "sh", "-c", f"echo x > {inside}"], check=False, capture_output=True
    )
    assert wrote.returncode != 0  # read-only in the jail
    real.write_text("nameserver 127.0.0.2\noptions timeout:1 attempts:1\n")
    ok = space.js("check", *args, "--resolve", "mail.test.")
    assert ok.code == 0, ok.stderr
    assert space.js("teardown", "--chroot", str(jail)).code == 0
    assert os.listdir(jail) == []
    assert not space.sh(f"grep -c ' {jail}/' /proc/self/mountinfo || true").stdout.strip("0\n")


def test_services_are_proved_when_asked_for(ns: Namespace, jail: Path) -> None:
    args = ("--chroot", str(jail), "--user", "nobody", "--files", "services")
    assert ns.js("prepare", "--chroot", str(jail), "--no-verify").code == 0
    missing = ns.js("check", *args)
    assert missing.code == 69
    assert "etc/services is missing" in _failing(missing)["services"], missing.stderr
    prepared = ns.js("prepare", *args)
    assert prepared.code == 0, prepared.stderr
    [found] = [e for e in prepared.named("check") if e["check"] == "services"]
    assert "port 25" in found["detail"]
    assert ns.js("teardown", "--chroot", str(jail)).code == 0


def test_a_file_the_host_lacks_is_a_warning_saying_what_the_daemon_will_do(
    ns: Namespace, jail: Path, area: Path
) -> None:
    ns.writable_etc(area)
    ns.sh("rm /etc/localtime && ln -s /nonexistent /etc/localtime")
    result = ns.js("prepare", "--chroot", str(jail), "--no-verify", "--files", "time")
    assert result.code == 0, result.stderr
    [warning] = result.named("jail_file")
    assert warning["level"] == "warning"
    assert "UTC" in warning["detail"] and "/etc/localtime" in warning["detail"]
    assert not (jail / "etc").exists()
    assert ns.js("teardown", "--chroot", str(jail)).code == 0


# -- hostile jails: never written through, refused or displaced -----------------------------


def test_a_jail_etc_that_is_a_symlink_out_is_refused(jail: Path, outside: Path) -> None:
    (jail / "etc").symlink_to(outside)
    before = snapshot(outside)
    result = run("prepare", "--chroot", str(jail), "--no-verify", "--files", "resolver")
    assert result.code == 78, result.stderr
    assert "symlink" in result.error and "etc" in result.error
    assert snapshot(outside) == before
    assert sorted(os.listdir(jail)) == ["etc"]  # nothing made: refused before any step


@pytest.mark.parametrize("shape", ["fifo", "directory", "device"])
def test_a_resolv_conf_that_is_no_file_is_refused_untouched(jail: Path, shape: str) -> None:
    target = jail / "etc" / "resolv.conf"
    target.parent.mkdir()
    if shape == "fifo":
        os.mkfifo(target)
    elif shape == "directory":
        target.mkdir()
        (target / "keep").write_text("data\n")
    else:
        os.mknod(target, 0o600 | 0o020000, os.makedev(1, 3))
    before = snapshot(jail)
    result = run("prepare", "--chroot", str(jail), "--no-verify", "--files", "resolver")
    assert result.code == 78, result.stderr
    assert "etc/resolv.conf" in result.error and "remove it" in result.error
    assert snapshot(jail) == before  # no dev/ either: the plan refused before any step


def test_a_resolv_conf_symlink_out_is_displaced_never_followed(jail: Path, outside: Path) -> None:
    (jail / "etc").mkdir()
    (jail / "etc" / "resolv.conf").symlink_to(outside / "secret")
    before, kept = snapshot(jail), snapshot(outside)
    result = run("prepare", "--chroot", str(jail), "--no-verify", "--files", "resolver")
    assert result.code == 0, result.stderr
    assert snapshot(outside) == kept  # the host's file behind the link was never written
    assert not (jail / "etc" / "resolv.conf").is_symlink()
    assert [e["found"] for e in result.named("jail_file.displaced")] == [
        f"a symlink to {outside / 'secret'}"
    ]
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert snapshot(jail) == before


# -- pure: the step per file and the verdicts, no jail ---------------------------------------


def _facts(
    entry: Entry, *, content: bytes | None = None, ours: bool = False, root_kept: bool = True
) -> FileFacts:
    host = HostFile("/etc/hosts", "/etc/hosts", "", b"host\n", 0o644, (1, 2))
    return FileFacts(
        JailFile("/etc/hosts"), host, (), entry, (3, 4), content, ours, root_kept=root_kept
    )


@pytest.mark.parametrize(
    ("entry", "content", "ours", "action", "displaces"),
    [
        (Entry("hosts", EntryKind.ABSENT), None, False, FileAction.COPY, False),
        (Entry("hosts", EntryKind.REGULAR, size=5), b"host\n", False, FileAction.NOTHING, False),
        (Entry("hosts", EntryKind.REGULAR, size=4), b"old\n", False, FileAction.COPY, True),
        (Entry("hosts", EntryKind.REGULAR, size=4), b"old\n", True, FileAction.REFRESH, False),
        (Entry("hosts", EntryKind.SYMLINK, link_target="/"), None, False, FileAction.COPY, True),
    ],
)
def test_the_step_for_each_entry(
    entry: Entry, content: bytes | None, ours: bool, action: FileAction, displaces: bool
) -> None:
    step = decide_file(_facts(entry, content=content, ours=ours), FileMode.COPY, "/j")
    assert (step.action, step.displaces) == (action, displaces)


@pytest.mark.parametrize("content", [b"host\n", b"guess\n"])
def test_a_file_root_does_not_keep_is_replaced_whatever_it_holds(content: bytes) -> None:
    """review1 R1b: equal content is "already right" only in root's file; another user's is
    moved aside and copied either way, so its content (a guess) changes nothing seen."""
    entry = Entry("hosts", EntryKind.REGULAR, size=len(content))
    step = decide_file(_facts(entry, content=content, root_kept=False), FileMode.COPY, "/j")
    assert (step.action, step.displaces) == (FileAction.COPY, True)
    readonly = _facts(entry, content=content, root_kept=False)._replace(readonly=True)
    with pytest.raises(ConfigError, match="read-only"):
        decide_file(readonly, FileMode.COPY, "/j")


@pytest.mark.parametrize("kind", [EntryKind.FIFO, EntryKind.DIRECTORY, EntryKind.SOCKET])
def test_entries_never_replaced(kind: EntryKind) -> None:
    for mode in FileMode:
        with pytest.raises(ConfigError, match=r"/j/etc/hosts is .* remove it"):
            decide_file(_facts(Entry("hosts", kind)), mode, "/j")


def test_time_verdicts() -> None:
    ist, utc = Zone("IST", 19800), Zone("UTC", 0)
    assert judge_time(ist, ist, False, strict=True).ok
    loose = judge_time(ist, utc, True, strict=False)
    assert loose.ok and loose.warning and "missing" in loose.detail
    strict = judge_time(ist, utc, True, strict=True)
    assert not strict.ok and "UTC+05:30" in strict.detail and "--files time" in strict.remedy


def test_resolve_verdicts() -> None:
    missing = judge_resolve("mail.test.", [], "no answer", ["/etc/resolv.conf"])
    assert not missing.ok and not missing.transient and "resolv.conf" in missing.detail
    waiting = judge_resolve("mail.test.", [], "no answer", [])
    assert not waiting.ok and waiting.transient
    assert judge_resolve("mail.test.", ["192.0.2.25"], "", []).ok
