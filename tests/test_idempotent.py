"""Prepare twice changes nothing; teardown undoes exactly what prepare made."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from jailshim.cli import main
from tests.support import mount_lines, mounts_below, need, run, snapshot


def test_hundred_prepares_leave_the_mount_table_unchanged(nodev_jail: Path) -> None:
    """Bind strategy (the one that mounts): run 2..101 add no mount and change no entry."""
    assert run("prepare", "--chroot", str(nodev_jail)).code == 0
    lines = mount_lines(nodev_jail)
    after_first = snapshot(nodev_jail)
    for _ in range(100):
        assert main(["prepare", "--chroot", str(nodev_jail), "--log-level", "error"]) == 0
    assert mount_lines(nodev_jail) == lines
    assert snapshot(nodev_jail) == after_first


def test_second_prepare_reports_everything_unchanged(jail: Path) -> None:
    """The second run creates nothing and says so."""
    assert run("prepare", "--chroot", str(jail)).code == 0
    second = run("prepare", "--chroot", str(jail))
    assert second.named("prepared")[0]["created"] == []
    assert not second.named("device")


def test_teardown_restores_the_jail_exactly(nodev_jail: Path) -> None:
    """prepare + teardown: same entries, same inodes, no mounts left, record gone."""
    (nodev_jail / "etc").mkdir()
    before = snapshot(nodev_jail)
    assert run("prepare", "--chroot", str(nodev_jail), "--device", "zero").code == 0
    assert run("teardown", "--chroot", str(nodev_jail)).code == 0
    assert snapshot(nodev_jail) == before
    assert mounts_below(nodev_jail) == [str(nodev_jail)]


def test_teardown_leaves_what_changed_since_prepare(jail: Path) -> None:
    """A node replaced after prepare is not ours any more: teardown leaves it and says so."""
    assert run("prepare", "--chroot", str(jail), "--device", "null").code == 0
    node = jail / "dev" / "null"
    node.unlink()
    node.write_text("operator's file")
    result = run("teardown", "--chroot", str(jail))
    assert result.code == 0
    assert node.read_text() == "operator's file"
    steps = {e.get("step"): e.get("outcome") for e in result.named("teardown")}
    assert "changed since prepare" in str(steps["remove dev/null"])


def test_teardown_without_prepare_does_nothing(jail: Path) -> None:
    """No record, no change."""
    before = snapshot(jail)
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert snapshot(jail) == before


def test_failure_half_way_rolls_back_everything(jail: Path, area: Path) -> None:
    """The second device fails after the first was bound: the bind, placeholder and dev/ go."""
    fake = area / "fake-random"
    fake.write_text("")
    script = f"""
        mount --bind {fake} /dev/random
        {sys.executable} -m jailshim prepare --chroot {jail} --strategy bind \
            --device urandom --device random --only-devices
        echo "rc=$?"
        echo "mounts=$(grep -c " {jail}" /proc/self/mountinfo)"
        echo "entries=$(ls -A {jail} | wc -l)"
    """
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "rc=78" in proc.stdout, proc.stderr
    assert "mounts=0" in proc.stdout and "entries=0" in proc.stdout
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [e["step"] for e in events if e["event"] == "rollback"] == [
        "unbind dev/urandom",
        "remove the placeholder dev/urandom",
        "rmdir dev",
    ]
    assert "not the random device 1:8" in events[-1]["error"]


def test_sigterm_during_prepare_leaves_nothing_half_made(jail: Path, area: Path) -> None:
    """A stop signal while prepare works: the undo stack runs, the jail is as before, 143."""
    need(shutil.which("strace") is not None, "needs strace")
    before = snapshot(jail)
    # A real SIGTERM from the kernel (strace's injection) at a fixed point: on entering the
    # open of the host's /dev/random, i.e. after urandom was bound, before random. -P counts
    # only the calls on that path, so when=1 is that open whatever Python opened before it.
    trace = area / "strace"
    inject = ["-P", "/dev/random", "-e", "trace=openat", "-e", "inject=openat:signal=TERM:when=1"]
    script = f"""
        strace -f -qq -o {trace} {" ".join(inject)} {sys.executable} -m jailshim prepare \
            --chroot {jail} --strategy bind --device urandom --device random --only-devices
        echo "rc=$?"
        echo "mounts=$(grep -c " {jail}" /proc/self/mountinfo)"
    """
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    # the signal came from the injection (SI_KERNEL), right at that open, in jailshim itself
    lines = trace.read_text().splitlines()
    opened = next(i for i, x in enumerate(lines) if '"/dev/random"' in x and "O_PATH" in x)
    pid = lines[opened].split()[0]
    assert not any("--- SIGTERM" in x for x in lines[:opened]), trace.read_text()
    injected = [x for x in lines[opened + 1 :] if x.startswith(pid) and "--- SIGTERM" in x]
    assert injected and "si_code=SI_KERNEL" in injected[0], trace.read_text()
    assert "rc=143" in proc.stdout, proc.stdout + proc.stderr
    assert "mounts=0" in proc.stdout
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    # Signals are held while a step and its record change together, so the TERM sent before
    # random's bind is delivered once apply has finished: the whole run is taken back.
    assert [e["step"] for e in events if e["event"] == "rollback"] == [
        "release the hold on dev",
        "unbind dev/random",
        "remove the placeholder dev/random",
        "unbind dev/urandom",
        "remove the placeholder dev/urandom",
        "rmdir dev",
    ]
    assert events[-1]["event"] == "interrupted" and events[-1]["signal"] == "SIGTERM"
    assert snapshot(jail) == before


def test_teardown_leaves_a_jail_a_process_is_still_chrooted_in(jail: Path) -> None:
    """A process still chrooted in the jail (ssh.service's stop keeps the sessions,
    KillMode=process, and its ExecStopPost= teardown emptied their jails: dev/urandom and
    dev/log gone under a live daemon, the original failure made by jailshim): teardown undoes
    nothing, exits 0 and names the PID; once it is gone, the same teardown restores the jail."""
    before = snapshot(jail)
    assert run("prepare", "--chroot", str(jail)).code == 0
    prepared = snapshot(jail)
    # a child chrooted in the jail, holding there until the test closes its pipe
    script = "import os, sys; os.chroot(sys.argv[1]); print('in', flush=True); sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(jail)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "in\n"
        held = run("teardown", "--chroot", str(jail))
        assert held.code == 0, held.stderr
        in_use = held.named("teardown.in_use")
        assert in_use and in_use[0]["pids"] == [child.pid], held.stderr
        assert snapshot(jail) == prepared
    finally:
        child.communicate("", timeout=30)
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert snapshot(jail) == before
