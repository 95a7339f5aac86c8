"""Edges a new user hits in prepare and teardown: systemd's /dev/log, dry runs, wording,
system directories."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import clean_env, mount_lines, mounts_below, run, snapshot

SYSTEMD_LAYOUT = textwrap.dedent(
    """
    import os, socket, subprocess, sys
    jail = sys.argv[1]
    # systemd's layout, rebuilt in this private mount namespace: journald's socket under /run,
    # and /dev/log a symlink to it on a /dev of copies of the usual nodes.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    os.makedirs("/run/systemd/journal")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("/run/systemd/journal/dev-log")
    os.chmod("/run/systemd/journal/dev-log", 0o666)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/tmp/devcopy"], check=True)
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        subprocess.run(["cp", "-a", "/dev/" + name, "/tmp/devcopy/" + name], check=True)
    subprocess.run(["mount", "--move", "/tmp/devcopy", "/dev"], check=True)
    os.symlink("/run/systemd/journal/dev-log", "/dev/log")
    proc = subprocess.run(
        [sys.executable, "-m", "jailshim", "prepare", "--chroot", jail, "--log-socket",
         "/dev/log", "--user", "nobody"], capture_output=True, text=True)
    print("prepare", proc.returncode, proc.stderr.replace("\\n", " | "))
    pid = os.fork()
    if pid == 0:  # as the daemon: chrooted, as nobody, logging to the jail's /dev/log
        os.chroot(jail); os.chdir("/"); os.setgroups([]); os.setgid(65534); os.setuid(65534)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        client.sendto(b"<134>hello from the jail", "/dev/log")
        os._exit(0)
    os.waitpid(pid, 0)
    server.settimeout(5)
    print("received", server.recv(100).decode())
    print("link", os.path.islink(jail + "/dev/log"))
    """
)


def test_systemd_dev_log_symlink_is_resolved_on_the_host(area: Path, jail: Path) -> None:
    """/dev/log -> /run/systemd/journal/dev-log: the socket it names is bound at the jail's
    /dev/log (a file, not the symlink), and a line sent there as nobody reaches journald."""
    (area / "devcopy").mkdir()
    script = SYSTEMD_LAYOUT.replace("/tmp/devcopy", str(area / "devcopy"))
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script,
         str(jail)],
        capture_output=True, text=True, timeout=60, check=False, env=clean_env(),
    )  # fmt: skip
    assert "prepare 0 " in proc.stdout, proc.stdout + proc.stderr
    assert "received <134>hello from the jail" in proc.stdout, proc.stdout + proc.stderr
    assert "link False" in proc.stdout
    assert "source" in proc.stdout and "/run/systemd/journal/dev-log" in proc.stdout


def test_teardown_dry_run_changes_nothing(nodev_jail: Path) -> None:
    """teardown --dry-run lists what it would undo; the jail and mount table stay as they are."""
    assert run("prepare", "--chroot", str(nodev_jail), "--no-verify").code == 0
    before, lines = snapshot(nodev_jail), mount_lines(nodev_jail)
    result = run("teardown", "--chroot", str(nodev_jail), "--dry-run")
    assert result.code == 0, result.stderr
    steps = [e["step"] for e in result.named("teardown")]
    assert "unbind dev/urandom" in steps and "rmdir dev" in steps
    assert snapshot(nodev_jail) == before and mount_lines(nodev_jail) == lines
    assert run("teardown", "--chroot", str(nodev_jail)).code == 0
    assert mounts_below(nodev_jail) == [str(nodev_jail)]


def test_teardown_names_directories_inside_the_jail(jail: Path) -> None:
    """teardown says 'rmdir dev' and 'removed', never a path that looks like the host's /dev/."""
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    result = run("teardown", "--chroot", str(jail))
    events = result.named("teardown")
    assert {"step": "rmdir dev", "outcome": "removed"}.items() <= next(
        e for e in events if e.get("step") == "rmdir dev"
    ).items()
    assert not [e for e in events if str(e.get("outcome", "")).startswith("removed /")]


def test_tmpfs_strategy_without_dev_says_what_is_wrong(jail: Path) -> None:
    """A writable jail without dev/ and --strategy tmpfs: the sentence does not say read-only."""
    result = run("prepare", "--chroot", str(jail), "--strategy", "tmpfs")
    assert result.code == 78
    assert "read-only" not in result.error and "has no dev/ directory" in result.error


def test_no_repair_says_which_mode_is_expected(jail: Path) -> None:
    """--no-repair on a 0600 node: the sentence names the mode jailshim needs (0666)."""
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    (jail / "dev" / "urandom").chmod(0o600)
    result = run("prepare", "--chroot", str(jail), "--no-repair")
    assert result.code == 78
    assert "mode 0600" in result.error and "mode 0666" in result.error


# The system directories a wrong --chroot names; /proc and /sys cannot be overlaid (procfs and
# sysfs refuse mkdir and mknod in their roots anyway), the others are copies in the test.
SYSTEM_DIRECTORIES = ["/dev", "/run", "/proc", "/sys", "/etc", "/dev/shm"]
OVERLAID = ("/dev", "/run", "/etc", "/dev/shm")


def _upper(area: Path, path: str) -> Path:
    return area / ("upper" + path.replace("/", "-"))


def in_copies(area: Path, system: str) -> list[str]:
    """A private mount namespace in which ``system`` and /run (jailshim's own cache and locks)
    are overlays of the host's whose writes land in the test's ``area``: a refusal that did
    not refuse writes into copies, never into the host's /etc, /run or /dev, and the mounts
    it makes go with the namespace."""
    steps = ["set -e"]
    for path in dict.fromkeys(["/run", system]):
        if path not in OVERLAID:
            continue
        upper, work = _upper(area, path), area / ("work" + path.replace("/", "-"))
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        options = f"lowerdir={path},upperdir={upper},workdir={work}"
        steps.append(f"mount -t overlay overlay -o {options} {path}")
    steps.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "; ".join(steps), "sh"]


def _written(area: Path, path: str) -> set[str]:
    """What was written into the copy of ``path`` (its overlay's upper layer), apart from
    jailshim's own /run/jailshim (its cache and locks)."""
    upper = _upper(area, path)
    found = {str(p.relative_to(upper)) for p in upper.rglob("*")} if upper.exists() else set()
    return {p for p in found if p != "jailshim" and not p.startswith("jailshim/")}


@pytest.mark.parametrize("system", SYSTEM_DIRECTORIES)
def test_system_directories_are_not_jails(area: Path, system: str) -> None:
    """--chroot /dev (or /run, /proc, /sys, ...): 78 with a sentence; nothing is created there
    — run in copies (in_copies), so a refusal that fails to refuse shows up as entries in the
    copy and the host's own directory is never written."""
    before = sorted(p.name for p in Path(system).iterdir()) if system != "/proc" else []
    for command in ("prepare", "teardown", "check"):
        result = run(command, "--chroot", system, wrap=in_copies(area, system))
        assert result.code == 78, result.stderr
        assert "system directory" in result.error
    assert _written(area, system) == set()
    if system != "/proc":
        assert sorted(p.name for p in Path(system).iterdir()) == before


def test_dry_run_after_a_killed_run_changes_nothing(jail: Path) -> None:
    """A record a killed run left unfinished: --dry-run says it would undo it first, and does
    not; the next real prepare does."""
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    state = jail / "dev" / ".jailshim-state.json"
    data = json.loads(state.read_text())
    data["records"][-2]["done"] = False  # as if killed right after the last node's rename
    state.write_text(json.dumps(data))
    before = snapshot(jail)
    dry = run("prepare", "--chroot", str(jail), "--dry-run")
    assert dry.code == 0 and "first undo what a killed run left" in dry.stdout, dry.stdout
    assert snapshot(jail) == before
    real = run("prepare", "--chroot", str(jail), "--no-verify")
    assert real.code == 0 and real.named("reconcile"), real.stderr
    assert (jail / "dev" / "null").is_char_device()


def _as_systemd_exec(*args: str) -> subprocess.CompletedProcess[str]:
    """jailshim started the way systemd starts an Exec* command of a unit with namespacing
    options: INVOCATION_ID set, in a mount namespace other than PID 1's."""
    inner = " ".join(f"'{a}'" for a in [sys.executable, "-m", "jailshim", *args])
    return subprocess.run(
        ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "sh", "-c",
         f"unshare --mount --propagation private {inner}; echo rc=$?"],
        capture_output=True, text=True, timeout=60, check=False,
        env=clean_env(INVOCATION_ID="0123456789abcdef"),
    )  # fmt: skip


def test_execstartpre_that_needs_binds_fails_at_start(nodev_jail: Path, jail: Path) -> None:
    """Under systemd in a namespace of its own, a plan that needs binds is refused (77) with
    the fix, before anything changes, dry run included; a mknod-only plan goes on."""
    before = snapshot(nodev_jail)
    for extra in ([], ["--dry-run"]):
        proc = _as_systemd_exec("prepare", "--chroot", str(nodev_jail), *extra)
        assert "rc=77" in proc.stdout, proc.stdout + proc.stderr
        assert "ExecStart=jailshim run" in proc.stderr
        assert snapshot(nodev_jail) == before
    assert "refused: systemd started" in proc.stdout
    plain = _as_systemd_exec("prepare", "--chroot", str(jail), "--no-verify")
    assert "rc=0" in plain.stdout, plain.stderr
    assert (jail / "dev" / "urandom").is_char_device()


def test_a_group_root_may_write_dev_for_prepare_and_teardown_alike(jail: Path) -> None:
    """dev/ 0775 root:root passes prepare's ownership rule, so teardown trusts its record too."""
    (jail / "dev").mkdir()
    (jail / "dev").chmod(0o775)
    before = snapshot(jail)
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    result = run("teardown", "--chroot", str(jail))
    assert result.code == 0, result.stderr
    assert snapshot(jail) == before


def test_a_gone_namespace_is_provable_from_inside_a_pid_namespace(root: None) -> None:
    """Inside a PID namespace (a container with systemd as PID 1) a mount namespace made by a
    process of this PID namespace is provably gone when none of its processes is in it; one made
    in a PID namespace that cannot be seen is assumed alive."""
    code = (
        "import os; from jailshim.jail.namespaces import namespace_alive, pid_namespace; "
        "me, mine = os.stat('/proc/self/ns/mnt').st_ino, pid_namespace(); "
        "gone = 1 << 40; "  # no namespace has this inode
        "print(namespace_alive(me, mine), namespace_alive(gone, mine), "
        "namespace_alive(gone, mine + 1), namespace_alive(gone, 0))"
    )
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, check=False, env=clean_env(),
    )  # fmt: skip
    assert proc.stdout.split() == ["True", "False", "True", "True"], proc.stderr


def _fresh_socket(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    return server


def test_a_log_socket_the_host_replaced_is_bound_again(area: Path, jail: Path) -> None:
    """A restarted syslog makes a new /dev/log: the jail's bind still shows the old, dead socket.
    The next prepare binds the new one (it failed with EBUSY, moving the mount point aside), a
    line sent in the jail reaches the new server, and teardown leaves no mount."""
    log_path = area / "log"
    first = _fresh_socket(log_path)
    try:
        assert run("prepare", "--chroot", str(jail), "--log-socket", str(log_path),
                   "--no-verify").code == 0  # fmt: skip
    finally:
        first.close()
    second = _fresh_socket(log_path)
    try:
        again = run("prepare", "--chroot", str(jail), "--log-socket", str(log_path), "--no-verify")
        assert again.code == 0, again.stderr
        assert [e["outcome"] for e in again.named("rebind")] == ["unmounted"]
        in_jail = jail / str(log_path).lstrip("/")
        assert in_jail.stat().st_ino == log_path.stat().st_ino
        assert mounts_below(jail).count(str(in_jail)) == 1  # not stacked on the old one
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        cwd = os.getcwd()
        os.chdir(in_jail.parent)  # the full path is longer than sun_path holds
        try:
            client.sendto(b"after the restart", in_jail.name)
        finally:
            os.chdir(cwd)
            client.close()
        second.settimeout(5)
        assert second.recv(100) == b"after the restart"
    finally:
        second.close()
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert not mounts_below(jail)


def test_a_bound_file_the_host_replaced_by_rename_is_bound_again(area: Path, jail: Path) -> None:
    """systemd-resolved writes resolv.conf by rename: a --file-mode bind of it keeps the old
    inode. The next prepare unbinds the stale one and binds the new content (it was refused as
    'a mount point jailshim did not make')."""
    host = area / "resolv.conf"
    host.write_text("nameserver 127.0.0.1\n")
    args = ("--chroot", str(jail), "--file", str(host), "--file-mode", "bind", "--no-verify")
    assert run("prepare", *args).code == 0
    (area / "resolv.new").write_text("nameserver 127.0.0.2\n")
    (area / "resolv.new").rename(host)
    again = run("prepare", *args)
    assert again.code == 0, again.stderr
    assert [e["outcome"] for e in again.named("rebind")] == ["unmounted"]
    assert (jail / str(host).lstrip("/")).read_text() == "nameserver 127.0.0.2\n"
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert not mounts_below(jail)


def test_a_dev_the_daemons_user_renamed_is_found_and_taken_back(area: Path) -> None:
    """The daemon's user owns the jail root, so it can rename jailshim's dev/ (the binds go
    along). teardown said "nothing to undo" and exited 0 with the mounts left; now it renames
    jailshim's dev/ back and undoes it. A directory the user made, even holding a copy of the
    record file, is not taken for jailshim's."""
    jail = area / "jail"
    jail.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "nodev,mode=0755", "tmpfs", str(jail)], check=True
    )
    try:
        os.chown(jail, 65534, 65534)
        assert run("prepare", "--chroot", str(jail), "--user", "nobody", "--no-verify").code == 0
        decoy = jail / "a-decoy"  # the user's own, with a copy of the record: never trusted
        decoy.mkdir()
        state = (jail / "dev" / ".jailshim-state.json").read_bytes()
        (decoy / ".jailshim-state.json").write_bytes(state)
        os.chown(decoy, 65534, 65534)
        (jail / "dev").rename(jail / "moved")
        assert len(mounts_below(jail / "moved")) == 3
        again = run("prepare", "--chroot", str(jail), "--user", "nobody", "--no-verify")
        assert again.code == 0, again.stderr
        assert [e["found"] for e in again.named("dev.moved")] == ["moved"]
        assert again.named("prepared")[0]["created"] == []  # the same dev/, not a second one
        (jail / "dev").rename(jail / "moved")
        result = run("teardown", "--chroot", str(jail))
        assert result.code == 0, result.stderr
        assert [e["outcome"] for e in result.named("dev.moved")] == ["renamed back to dev/"]
        assert mounts_below(jail) == [str(jail)]
        assert sorted(p.name for p in jail.iterdir()) == ["a-decoy"]
    finally:
        subprocess.run(["umount", "-R", str(jail)], check=False)
