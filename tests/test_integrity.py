"""Crash, race and forgery: prepare and teardown converge from any kill, serialise, and act on
nothing a forged record names.

Kill points are real: strace injects SIGKILL at the N-th call of each mutating syscall
(mknodat, mkdirat, renameat, renameat2, unlinkat, mount, umount2), for every call the run
makes, counted from an uninjected run first. After each kill a prepare must give a jail that
passes `check` as nobody, and a teardown must restore the jail's original snapshot (names,
types, modes, owners, inodes of what was there, content) and mount table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import NSRUN, clean_env, jailshim_argv, need, read_in_jail, run, snapshot

MUTATING = ("mknodat", "mkdirat", "renameat", "renameat2", "unlinkat", "mount", "umount2")
_CALL = re.compile(r"^(?:\[pid\s+)?\d*\]?\s*(\w+)\(")

pytestmark = pytest.mark.slow


@pytest.fixture
def strace(root: None) -> str:
    path = shutil.which("strace")
    need(path is not None, "needs strace (scripts/bootstrap.sh installs it)")
    assert path is not None
    return path


def _shell(script: str, wrap: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*wrap, "sh", "-c", script],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _js(*args: str) -> str:
    return " ".join(f"'{a}'" for a in jailshim_argv(*args))


class Kind:
    """One kind of jail: how to run commands in its namespace, and the flags it needs."""

    def __init__(self, jail: Path, wrap: list[str], extra: tuple[str, ...] = ()) -> None:
        self.jail = jail
        self.wrap = wrap
        self.extra = extra

    def mounts_script(self) -> str:
        return f"echo \"mounts=$(grep -c ' {self.jail}[ /]' /proc/self/mountinfo)\""


def _sequence(strace: str, kind: Kind, args: str, before: str = "") -> list[tuple[str, int]]:
    """Every mutating syscall the command makes (after ``before``, in the same namespace),
    as (name, n-th call of that name)."""
    return _calls(_trace(strace, kind, args, before))


def _trace(strace: str, kind: Kind, args: str, before: str = "") -> list[str]:
    """strace's lines for the mutating syscalls of the command (arguments included)."""
    log = kind.jail.parent / "strace.log"
    script = f"{before}{strace} -f -qq -o {log} -e trace={','.join(MUTATING)} {args}"
    proc = _shell(script, kind.wrap)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    log.unlink()
    return lines


def _calls(lines: list[str]) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    calls = []
    for line in lines:
        found = _CALL.match(line)
        if found and found.group(1) in MUTATING:
            counts[found.group(1)] += 1
            calls.append((found.group(1), counts[found.group(1)]))
    return calls


def _kill(strace: str, call: tuple[str, int], args: str) -> str:
    name, n = call
    return f"{strace} -f -qq -o /dev/null -e inject={name}:signal=KILL:when={n} {args}"


def _converges(strace: str, kind: Kind, *, kill_teardown: bool) -> tuple[int, list[str]]:
    """Kill at every point; returns (points exercised, inconsistencies found)."""
    jail = str(kind.jail)
    before = snapshot(kind.jail)
    base = _shell(kind.mounts_script(), kind.wrap).stdout.strip()
    prepare = _js("prepare", "--chroot", jail, "--no-verify", "--log-level", "error", *kind.extra)
    verified = _js(
        "prepare", "--chroot", jail, "--user", "nobody", "--log-level", "error", *kind.extra
    )
    teardown = _js("teardown", "--chroot", jail, "--log-level", "error")
    if kill_teardown:  # prepared in the same namespace, so that its mounts are there
        calls = _sequence(strace, kind, teardown, before=f"{prepare} && ")
    else:
        calls = _sequence(strace, kind, prepare)
        assert _shell(teardown, kind.wrap).returncode == 0
    assert calls, "no mutating syscall seen: the kill points would prove nothing"
    problems = []
    for call in calls:
        first = f"{prepare} >/dev/null 2>&1; " if kill_teardown else ""
        killed = _kill(strace, call, teardown if kill_teardown else prepare)
        script = (
            f"{first}{killed} 2>/dev/null; echo killed=$?; "
            f"{verified}; echo prepare=$?; {teardown}; echo teardown=$?; {kind.mounts_script()}"
        )
        proc = _shell(script, kind.wrap)
        out = proc.stdout
        if "killed=137" not in out:
            problems.append(f"{call}: not killed ({out.strip()})")
        if "prepare=0" not in out or "teardown=0" not in out or base not in out:
            problems.append(f"{call}: {out.strip()} {proc.stderr[-600:]}")
        elif snapshot(kind.jail) != before:
            problems.append(f"{call}: the jail differs after teardown")
        if problems and problems[-1].startswith(str(call)):
            # reset for the next point, so one failure is not counted again and again
            _shell(f"{teardown}; {teardown}", kind.wrap)
    return len(calls), problems


@pytest.fixture
def log_socket(area: Path) -> Iterator[str]:
    """A unix datagram socket standing in for the host's /dev/log, in a fresh directory."""
    path = area / "log" / "dev-log"
    path.parent.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield str(path)
    finally:
        sock.close()


def _kinds(name: str, area: Path, log_socket: str) -> Kind:
    if name == "plain":
        jail = area / "jail"
        (jail / "dev").mkdir(parents=True)
        (jail / "dev" / "urandom").write_text("a wrong file, to be moved aside and restored")
        (jail / "etc").mkdir()
        (jail / "etc" / "keep").write_text("keep")
        jail.chmod(0o755)
        return Kind(jail, ["unshare", "--mount", "--propagation", "private"])
    if name == "nodev+socket":
        jail = area / "nodev"
        jail.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "nodev,mode=0755", "tmpfs", str(jail)], check=True
        )
        return Kind(
            jail,
            ["unshare", "--mount", "--propagation", "private"],
            ("--log-socket", log_socket),
        )
    if name == "read-only":
        jail = area / "ro"
        (jail / "dev").mkdir(parents=True)
        jail.chmod(0o755)
        subprocess.run(["mount", "--bind", str(jail), str(jail)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(jail)], check=True)
        return Kind(jail, ["unshare", "--mount", "--propagation", "private"])
    if name.startswith("files"):
        # Jail files only (dev/null is right already): a new copy, a displaced wrong file, or
        # (files-bind) a read-only bind over a placeholder in place of the displaced file.
        jail = area / "files"
        (jail / "dev").mkdir(parents=True)
        os.mknod(jail / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(jail / "dev" / "null", 0o666)  # noqa: S103 (the right mode of dev/null)
        (jail / "etc").mkdir()
        (jail / "etc" / "hosts").write_text("the jail's own hosts, to be moved aside\n")
        jail.chmod(0o755)
        files: tuple[str, ...] = ("--file", "/etc/hosts")
        if name == "files":
            files += ("--file", "/etc/localtime")
        else:
            files += ("--file-mode", "bind")
        return Kind(
            jail,
            ["unshare", "--mount", "--propagation", "private"],
            ("--only-devices", "--device", "null", *files),
        )
    jail = area / "userns"
    jail.mkdir(mode=0o755)
    return Kind(jail, [sys.executable, NSRUN, "--mount", "--"])


KINDS = ["plain", "nodev+socket", "read-only", "userns", "files", "files-bind"]


@pytest.mark.parametrize("kind_name", KINDS)
@pytest.mark.parametrize("phase", ["prepare", "teardown"])
def test_sigkill_at_every_mutating_syscall_converges(
    strace: str,
    area: Path,
    log_socket: str,
    kind_name: str,
    phase: str,
) -> None:
    """SIGKILL at each mutating syscall: the next prepare verifies, teardown restores exactly."""
    kind = _kinds(kind_name, area, log_socket)
    points, problems = _converges(strace, kind, kill_teardown=phase == "teardown")
    # The closing note quotes these lines: per jail kind, kill points and inconsistencies.
    print(f"kill points {kind_name}/{phase}: {points}, inconsistencies: {len(problems)}")
    assert not problems, "\n".join(problems[:10])


# -- races ----------------------------------------------------------------------------------


def test_sigkill_while_refreshing_a_stale_copy_converges(strace: str, area: Path) -> None:
    """A copy whose host file changed is replaced by exchange: killed at each step, the next
    prepare leaves the new content (a whole file, never a mix) and teardown the original."""
    kind = _kinds("files", area, "")
    jail = str(kind.jail)
    old, new = area / "hosts-old", area / "hosts-new"
    old.write_text("192.0.2.1 old.test\n")
    new.write_text("192.0.2.2 new.test\n" * 50)
    before = snapshot(kind.jail)
    flags = ("--chroot", jail, "--log-level", "error", "--only-devices", "--device", "null")
    prepare = _js("prepare", *flags, "--no-verify", "--file", "/etc/hosts")
    verified = _js("prepare", *flags, "--user", "nobody", "--file", "/etc/hosts")
    teardown = _js("teardown", "--chroot", jail, "--log-level", "error")
    stale = f"mount --bind {old} /etc/hosts && {prepare} && umount /etc/hosts && "
    stale += f"mount --bind {new} /etc/hosts && "
    lines = _trace(strace, kind, prepare, before=stale)
    calls = _calls(lines)
    assert _shell(teardown, kind.wrap).returncode == 0
    # The refresh must be the exchange (old or new whole at every instant), not unlink+rename.
    assert any("RENAME_EXCHANGE" in line for line in lines), "\n".join(lines)
    problems = []
    for call in calls:
        script = (
            f"{stale}{_kill(strace, call, prepare)} 2>/dev/null; echo killed=$?; "
            f"cmp -s {jail}/etc/hosts {old} || cmp -s {jail}/etc/hosts {new} && echo whole; "
            f"{verified}; echo prepare=$?; cmp -s {jail}/etc/hosts {new} && echo fresh; "
            f"{teardown}; echo teardown=$?"
        )
        out = _shell(script, kind.wrap).stdout
        wanted = ("killed=137", "whole", "prepare=0", "fresh", "teardown=0")
        if not all(w in out for w in wanted) or snapshot(kind.jail) != before:
            problems.append(f"{call}: {out.strip()}")
            _shell(f"{teardown}; {teardown}", kind.wrap)
    print(f"kill points files/refresh: {len(calls)}, inconsistencies: {len(problems)}")
    assert not problems, "\n".join(problems[:10])


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        jailshim_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _all(procs: list[subprocess.Popen[str]]) -> tuple[list[int], list[str]]:
    """Wait for every process (reading its pipes, so none blocks); exit codes and stderrs."""
    errors = [p.communicate(timeout=120)[1] for p in procs]
    return [p.returncode for p in procs], errors


def _mounts_below(jail: Path) -> list[str]:
    points = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.startswith(f"{jail}/")]


@pytest.mark.parametrize("kind_name", ["plain", "nodev", "read-only"])
def test_eight_concurrent_prepares_and_races_with_teardown(
    area: Path, nodev_jail: Path, readonly_jail: Path, kind_name: str
) -> None:
    """8 prepares at once, 20 rounds: all exit 0 with a right jail, no stacked mount; then
    prepare racing teardown: each run exits 0 and the jail ends right or as it began."""
    jail = {"plain": area / "plain", "nodev": nodev_jail, "read-only": readonly_jail}[kind_name]
    jail.mkdir(exist_ok=True, mode=0o755)
    before, expected_mounts = snapshot(jail), {"plain": 0, "nodev": 3, "read-only": 4}[kind_name]
    args = ("--chroot", str(jail), "--log-level", "error")
    for round_ in range(20):
        codes, errors = _all([_spawn("prepare", *args, "--user", "nobody") for _ in range(8)])
        assert codes == [0] * 8, (round_, codes, errors)
        assert len(_mounts_below(jail)) == expected_mounts, (round_, _mounts_below(jail))
        assert read_in_jail(jail, "urandom")["chr"]
        assert run("teardown", *args).code == 0
        assert snapshot(jail) == before and not _mounts_below(jail)
    for round_ in range(20):
        assert run("prepare", *args, "--no-verify").code == 0
        codes, errors = _all(
            [_spawn("prepare", *args, "--user", "nobody"), _spawn("teardown", *args)]
        )
        assert codes == [0, 0], (round_, codes, errors)
        if _mounts_below(jail) or (jail / "dev" / ".jailshim-state.json").exists():
            assert len(_mounts_below(jail)) == expected_mounts, round_
            assert read_in_jail(jail, "urandom")["chr"], round_
            assert run("teardown", *args).code == 0
        assert snapshot(jail) == before and not _mounts_below(jail), round_


# -- two mount namespaces on one jail --------------------------------------------------------


def test_two_mount_namespaces_share_a_jail(nodev_jail: Path) -> None:
    """A second namespace binds over the first one's placeholders instead of moving them; its
    teardown leaves them: the first daemon's dev/urandom stays readable throughout."""
    jail = str(nodev_jail)
    holder = subprocess.Popen(
        [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"{_js('prepare', '--chroot', jail, '--no-verify')} 2>/dev/null && echo ready "
            "&& exec sleep 60",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        first = ["nsenter", "-t", str(holder.pid), "-m", "--"]
        # nsenter's target is unshare's child: find the sleeping shell in that namespace
        children = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()
        if children:
            first = ["nsenter", "-t", children[0], "-m", "--"]
        assert read_in_jail(nodev_jail, "urandom", wrap=first).get("read"), "first prepare"
        second = _shell(
            f"{_js('prepare', '--chroot', jail, '--user', 'nobody')} && "
            f"{sys.executable} {Path(__file__).parent / 'jail_reader.py'} {jail} urandom "
            "65534 65534 && "
            f"{_js('teardown', '--chroot', jail)}",
            ["unshare", "--mount", "--propagation", "private"],
        )
        assert second.returncode == 0, second.stderr
        assert '"read"' in second.stdout, second.stdout
        events = [json.loads(line) for line in second.stderr.splitlines() if line.strip()]
        assert not [e for e in events if e["event"] == "device.displaced"]
        assert [e for e in events if e["event"] == "teardown.shared"]
        assert read_in_jail(nodev_jail, "urandom", wrap=first).get("read"), "after the second"
        final = _shell(_js("teardown", "--chroot", jail), first)
        assert final.returncode == 0, final.stderr
        assert not (nodev_jail / "dev").exists()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()


# -- forged and hostile state ----------------------------------------------------------------


def _write_state(jail: Path, records: Any, *, raw: bytes | None = None) -> Path:
    state = jail / "dev" / ".jailshim-state.json"
    state.parent.mkdir(exist_ok=True)
    state.write_bytes(raw if raw is not None else json.dumps(records).encode())
    return state


def _record(**fields: Any) -> dict[str, Any]:
    record = {"kind": "mknod", "name": "urandom", "where": "dev", "ino": 1, "rdev": 265}
    record.update(tmp=".jailshim-new-urandom", aside="", ns=0, done=True)
    return {**record, **fields}


HOSTILE = {
    "climbing name": {"version": 2, "records": [_record(name="../../outside/secret")]},
    "climbing where": {"version": 2, "records": [_record(where="dev/../../outside")]},
    "symlink inside": {"version": 2, "records": [_record(where="link", name="secret")]},
    "foreign temp name": {"version": 2, "records": [_record(tmp="../secret")]},
    "wrong types": {"version": 2, "records": [_record(ino="12", done=1)]},
    "unknown kind": {"version": 2, "records": [_record(kind="chmod")]},
    "not a list": {"version": 2, "records": "rm -rf /"},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_forged_records_change_nothing(jail: Path, outside: Path, case: str) -> None:
    """Each forged record: teardown and prepare exit 78 and change nothing, in or out."""
    (jail / "link").symlink_to(outside)
    (jail / "dev").mkdir()
    (jail / "dev" / "urandom").write_text("not a node")
    _write_state(jail, HOSTILE[case])
    before, outside_before = snapshot(jail), snapshot(outside)
    for command in ("teardown", "prepare"):
        result = run(command, "--chroot", str(jail))
        assert result.code == 78, result.stderr
        assert ".jailshim-state.json" in result.error
        assert snapshot(jail) == before and snapshot(outside) == outside_before


@pytest.mark.parametrize("shape", ["fifo", "huge", "owned by nobody", "dev owned by nobody"])
def test_untrusted_state_files_are_refused_without_hanging(jail: Path, shape: str) -> None:
    """A FIFO (would block), a huge file, or one a non-root user could write: 78 at once."""
    dev = jail / "dev"
    dev.mkdir()
    state = dev / ".jailshim-state.json"
    if shape == "fifo":
        os.mkfifo(state)
    elif shape == "huge":
        state.write_bytes(b" " * (1 << 20))
    else:
        _write_state(jail, {"version": 2, "records": [_record()]})
        os.chown(state if shape == "owned by nobody" else dev, 65534, 65534)
        if shape == "dev owned by nobody":
            dev.chmod(0o755)
    before = snapshot(jail)
    start = time.monotonic()
    result = run("teardown", "--chroot", str(jail))
    assert time.monotonic() - start < 10
    assert result.code == 78, result.stderr
    assert snapshot(jail) == before


def test_daemon_user_cannot_forge_roots_teardown(area: Path, outside: Path) -> None:
    """A jail the daemon's user can write (--allow-writable-jail): that user swaps in a dev/ of
    its own with records naming a root-only file; root's teardown refuses and deletes nothing."""
    jail = area / "jail"
    jail.mkdir()
    os.chown(jail, 65534, 65534)
    secret = outside / "secret"
    secret.chmod(0o600)
    assert run("prepare", "--chroot", str(jail), "--allow-writable-jail", "--no-verify").code == 0
    forged = json.dumps(
        {"version": 2, "records": [_record(kind="mknod", where="dev", name="urandom")]}
    )
    # The attacker holds the jail open (as the daemon, chrooted there, would) and works
    # relative to it: pytest's 0700 tree above the jail is not its way in.
    attack = (
        f"import os; j = os.open({str(jail)!r}, os.O_PATH); "
        "os.setgroups([]); os.setgid(65534); os.setuid(65534); "
        "os.rename('dev', 'old', src_dir_fd=j, dst_dir_fd=j); os.mkdir('dev', 0o755, dir_fd=j); "
        "d = os.open('dev', os.O_PATH, dir_fd=j); "
        "f = os.open('.jailshim-state.json', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=d); "
        f"os.write(f, {forged.encode()!r}); "
        f"os.symlink({str(outside)!r}, 'urandom', dir_fd=d)"
    )
    subprocess.run([sys.executable, "-c", attack], check=True)
    outside_before = snapshot(outside)
    result = run("teardown", "--chroot", str(jail))
    assert result.code == 78, result.stderr
    assert snapshot(outside) == outside_before and secret.exists()


# -- devices that act when opened ---------------------------------------------------------------


def test_a_foreign_device_at_a_device_name_is_never_opened(strace: str, jail: Path) -> None:
    """A char node with other numbers (a stand-in for a 10:130 watchdog) at dev/urandom: the
    survey, the dry run, prepare and check never open it (strace sees no open of it)."""
    dev = jail / "dev"
    dev.mkdir()
    os.mknod(dev / "urandom", 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # /dev/full
    log = jail.parent / "opens.log"
    for args in (["check", "--timeout", "0.2"], ["prepare", "--dry-run"]):
        subprocess.run(
            [strace, "-f", "-qq", "-o", str(log), "-e", "trace=open,openat,openat2",
             *jailshim_argv(*args, "--chroot", str(jail), "--user", "nobody")],
            capture_output=True, check=False, env=clean_env(),
        )  # fmt: skip
        lines = log.read_text().splitlines()
        assert any("openat(" in line for line in lines), "strace saw no open at all"
        # Any path naming urandom: "/dev/urandom" (the probe runs chrooted, so that is the
        # jail's node), an absolute jail path, or openat(fd, "dev/urandom") / (fd, "urandom").
        opens = [
            line for line in lines if re.search(r'"[^"]*urandom"', line) and "O_PATH" not in line
        ]
        assert not opens, (args, opens)
    log.unlink()


# -- stop signals before hand-over ---------------------------------------------------------------


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_stop_signal_during_the_address_wait_undoes_the_prepare(
    nodev_jail: Path, signame: str
) -> None:
    """run prepared the jail and waits for an address: a stop signal then takes back every
    bind and file this run made, and exits 128+n."""
    before = snapshot(nodev_jail)
    proc = subprocess.Popen(
        jailshim_argv(
            "run", "--chroot", str(nodev_jail), "--wait-addr", "192.0.2.77", "--timeout", "60",
            "--", "true",
        ),
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if json.loads(line)["event"] == "check.attempt":  # prepared, now waiting
                break
        assert _mounts_below(nodev_jail), "nothing was bound before the signal"
        proc.send_signal(getattr(signal, signame))
        code = proc.wait(timeout=30)
        rest = proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert code == 128 + getattr(signal, signame), rest
    assert '"rollback"' in rest
    assert not _mounts_below(nodev_jail)
    assert snapshot(nodev_jail) == before


def test_a_users_lock_on_the_jail_does_not_stop_the_start(jail: Path) -> None:
    """Any user who can read the jail can flock it: that hold is ignored (with a warning), so
    no user can keep the daemon from starting or its teardown from running."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import fcntl, os, sys, time; fd = os.open({str(jail)!r}, os.O_RDONLY); "
         "os.setgroups([]); os.setgid(65534); os.setuid(65534); fcntl.flock(fd, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for command in ("prepare", "teardown"):
            result = run(command, "--chroot", str(jail), "--timeout", "2")
            assert result.code == 0, result.stderr
            assert f"process {holder.pid} (uid 65534)" in result.named("lock.ignored")[0]["holder"]
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()


def test_doctor_never_blocks_on_a_path_from_a_daemons_maps(area: Path) -> None:
    """A process maps a file named like libcrypto in its own mount namespace, where the host
    has a FIFO at that path: doctor reads only regular files, non-blocking, and finishes."""
    libs = area / "libs"
    libs.mkdir()
    os.mkfifo(libs / "libcrypto.so.3")
    script = (
        f"mount -t tmpfs tmpfs {libs} && head -c 4096 /dev/zero > {libs}/libcrypto.so.3 && "
        f'exec {sys.executable} -c "import mmap, os, time; '
        f"f = open('{libs}/libcrypto.so.3', 'rb'); m = mmap.mmap(f.fileno(), 4096, "
        "prot=mmap.PROT_READ); print('mapped', flush=True); time.sleep(60)\""
    )
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "mapped"
        start = time.monotonic()
        result = run("doctor", "--pid", str(proc.pid))
        assert time.monotonic() - start < 20
        # It finished, and through the daemon's own view: it found the mapped libcrypto (a
        # regular file there), so its verdict is the one for this process, safe (exit 0).
        assert result.code == 0, result.stderr
        (daemon,) = result.named("doctor.daemon")
        assert daemon["pid"] == proc.pid, daemon
        assert "libcrypto.so.3 (OpenSSL)" in daemon["libraries"], daemon
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


# -- jails the daemon's user owns ------------------------------------------------------------


def test_a_jail_the_daemons_user_owns_is_accepted_anothers_is_not(jail: Path) -> None:
    """Stock packages give the daemon's user its jail (Debian's /var/lib/unbound): accepted
    with an info event; owned by another user, still 78."""
    os.chown(jail, 65534, 65534)
    result = run("prepare", "--chroot", str(jail), "--user", "nobody")
    assert result.code == 0, result.stderr
    note = result.named("jail.writable")[0]
    assert note["level"] == "info" and "daemon's own user" in note["detail"]
    assert (jail / "dev").stat().st_uid == 0  # jailshim's own entries stay root's
    assert run("teardown", "--chroot", str(jail)).code == 0
    os.chown(jail, 12345, 12345)
    other = run("prepare", "--chroot", str(jail), "--user", "nobody")
    assert other.code == 78 and "writable by a non-root user" in other.error


def test_the_daemons_user_moving_dev_about_gets_nothing_made_outside(
    area: Path, outside: Path
) -> None:
    """The daemon's user renames dev/ in a loop while root prepares (binds, nodev jail) and
    tears down: every run exits 0 or 78, nothing outside the jail changes, no mount lands
    outside it, and after the user stops a teardown leaves no mount in the jail either."""
    jail = area / "jail"
    jail.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "nodev,mode=0755", "tmpfs", str(jail)], check=True
    )
    os.chown(jail, 65534, 65534)
    outside_before = snapshot(outside)
    mover = subprocess.Popen(
        [sys.executable, "-c",
         f"import os, time; j = os.open({str(jail)!r}, os.O_PATH); "
         "os.setgroups([]); os.setgid(65534); os.setuid(65534); end = time.monotonic() + 60\n"
         "while time.monotonic() < end:\n"
         "    for a, b in (('dev', 'moved'), ('moved', 'dev')):\n"
         "        try: os.rename(a, b, src_dir_fd=j, dst_dir_fd=j)\n"
         "        except OSError: pass\n"],
    )  # fmt: skip
    codes: Counter[int] = Counter()
    odd: list[str] = []
    try:
        for _ in range(30):
            for command in ("prepare", "teardown"):
                extra = ["--user", "nobody", "--no-verify"] if command == "prepare" else []
                result = run(command, "--chroot", str(jail), *extra)
                codes[result.code] += 1
                if result.code not in (0, 78):
                    odd.append(f"{command}: {result.stderr[-800:]}")
    finally:
        mover.kill()
        mover.wait()
    assert set(codes) <= {0, 78}, (codes, odd)
    assert snapshot(outside) == outside_before
    mount_points = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert not [p for p in mount_points if p.startswith(f"{area}/") and not p.startswith(f"{jail}")]
    for _ in range(2):
        run("teardown", "--chroot", str(jail))
    print(f"dev/ mover: exit codes {dict(codes)}")
    assert _mounts_below(jail) == [], _mounts_below(jail)
