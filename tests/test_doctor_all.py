"""`jailshim doctor --all` (issue 29): every chrooted daemon found, grouped and judged as
`doctor --pid` judges it; its Prometheus textfile checked by promtool and served by Debian's
node_exporter; its Nagios line and exit code.

The daemons are real: Debian's haproxy chrooted into an empty jail under a seccomp filter
that answers getrandom() ENOSYS, in an IPC namespace without OpenSSL's marker (it will fail at
its next reseed); haproxy in a jail jailshim prepared (safe); unbound chrooted by `jailshim
run` (safe); a "container" (a mount namespace whose root was pivoted) whose init is not
chrooted and whose worker chroots. Each runs in a network namespace of its own and is killed
by PID at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from jailshim.fleet import Daemon, Judged, Parent, Proc, Scan, group, write_atomically
from jailshim.fleet_formats import label_value, nagios, prometheus, table
from tests.daemons import stop, write_unbound_config
from tests.support import TESTS, jailshim_argv, need, run, spawn
from tests.test_containers import (  # noqa: F401  (session fixtures: the suite's image, built once)
    image,
    podman,
    shared,
)

SYSTEM_PYTHON = "/usr/bin/python3"
SECCOMP_RUN = str(TESTS / "seccomp_run.py")
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
# exec keeps the PID: the daemon's own, under the wrappers
# every daemon here runs in a network namespace of its own: any port is free there
PORT = 8443
OWN_NETNS = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]

# A "container": a mount namespace pivoted onto a bind of the host's / (its init's root is its
# namespace's root: not chrooted), and in it a worker that chroots into JAIL.
CONTAINER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 4096, 16384, 1 << 18, 2
newroot, jail = sys.argv[1], sys.argv[2]
assert libc.unshare(0x00020000) == 0  # CLONE_NEWNS
assert libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0
assert libc.mount(b"/", newroot.encode(), None, MS_BIND | MS_REC, None) == 0
os.chdir(newroot)
assert libc.syscall(155, b".", b".") == 0  # pivot_root(".", "."): the old root on top
assert libc.umount2(b".", MNT_DETACH) == 0
os.chdir("/")
worker = os.fork()
if worker == 0:
    os.chroot(jail)
    os.chdir("/")
    time.sleep(300)
    os._exit(0)
print(worker, flush=True)
time.sleep(300)
"""


def _haproxy_config(area: Path, jail: Path) -> Path:
    cfg = area / f"{jail.name}.cfg"
    cfg.write_text(
        f"global\n    chroot {jail}\n    user nobody\n    group nogroup\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        f"    timeout server 1s\nfrontend f\n    bind 127.0.0.1:{PORT}\n"
        "    default_backend b\nbackend b\n    server s 127.0.0.1:9\n"
    )
    return cfg


def _chrooted(proc: subprocess.Popen[str], pid: int | None = None) -> int:
    """Wait until ``pid`` (default: the Popen's) has chrooted; its PID."""
    pid = proc.pid if pid is None else pid
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.communicate()}")
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/root") != "/":
                return pid
        time.sleep(0.05)
    raise AssertionError(f"PID {pid} never chrooted")


# A daemon whose OpenSSL 3 (mapped, not yet seeded) will fail at its first reseed: getrandom()
# denied, no marker in its IPC namespace, so OpenSSL never turns to the devices.
WILL_FAIL = """
import ctypes, os, sys, time
with open("/proc/self/comm", "w") as f:
    f.write("openssl-worker")
ctypes.CDLL("libcrypto.so.3")
os.chroot(sys.argv[1])
os.chdir("/")
os.setgid(65534)
os.setuid(65534)
time.sleep(300)
"""


class Fleet(NamedTuple):
    will_fail: int
    fragile: int  # haproxy, empty jail, getrandom() denied (the marker lets it start)
    failing_jail: Path
    will_fail_jail: Path
    safe: int  # haproxy in a prepared jail
    safe_jail: Path
    unbound: int
    unbound_jail: Path
    container_init: int
    container_worker: int
    container_jail: str  # as the container sees it


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    need(os.geteuid() == 0, "needs root: chroot, namespaces")
    haproxy, unbound = shutil.which("haproxy"), shutil.which("unbound")
    need(haproxy is not None and unbound is not None, "needs Debian's haproxy and unbound")
    seccomp = subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], check=False)
    need(seccomp.returncode == 0, "needs Debian's python3-seccomp")
    assert haproxy is not None and unbound is not None
    area = tmp_path_factory.mktemp("fleet")
    area.chmod(0o755)
    procs: list[subprocess.Popen[str]] = []
    try:
        failing_jail, safe_jail, unbound_jail = area / "bad", area / "good", area / "unbound"
        for jail in (failing_jail, safe_jail, unbound_jail):
            jail.mkdir(mode=0o755)
        assert run("prepare", "--chroot", str(safe_jail), "--no-verify").code == 0
        deny = [SYSTEM_PYTHON, SECCOMP_RUN, "deny", "ENOSYS", "--shm-marker", "--"]
        cfg = _haproxy_config(area, failing_jail)
        procs.append(spawn([*OWN_NETNS, "unshare", "--ipc", *deny, haproxy, "-f", str(cfg), "-db"]))
        fragile = _chrooted(procs[-1])
        bare = area / "bare"
        bare.mkdir(mode=0o755)
        deny_all = [SYSTEM_PYTHON, SECCOMP_RUN, "deny", "ENOSYS", "--"]
        openssl_worker = [SYSTEM_PYTHON, "-c", WILL_FAIL, str(bare)]
        procs.append(spawn([*OWN_NETNS, "unshare", "--ipc", *deny_all, *openssl_worker]))
        will_fail = _chrooted(procs[-1])
        procs.append(
            spawn([*OWN_NETNS, haproxy, "-f", str(_haproxy_config(area, safe_jail)), "-db"])
        )
        safe = _chrooted(procs[-1])
        config = write_unbound_config(unbound_jail, 5353)
        procs.append(
            spawn([*OWN_NETNS, *jailshim_argv("run", "--", unbound, "-d", "-c", str(config))])
        )
        unbound_pid = _chrooted(procs[-1])
        newroot = area / "newroot"
        newroot.mkdir()
        inner = area / "cjail"
        inner.mkdir(mode=0o755)
        procs.append(spawn([SYSTEM_PYTHON, "-c", CONTAINER, str(newroot), str(inner)]))
        assert procs[-1].stdout is not None
        worker = int(procs[-1].stdout.readline())
        _chrooted(procs[-1], worker)
        yield Fleet(
            will_fail,
            fragile,
            failing_jail,
            bare,
            safe,
            safe_jail,
            unbound_pid,
            unbound_jail,
            procs[-1].pid,
            worker,
            str(inner),
        )
    finally:
        for proc in reversed(procs):
            stop(proc)


def _daemons(result_stdout: str) -> dict[int, dict[str, object]]:
    lines = [json.loads(line) for line in result_stdout.splitlines()]
    return {int(d["pid"]): d for d in lines if d["kind"] == "daemon"}


def test_doctor_all_names_each_daemon_with_its_verdict(fleet: Fleet) -> None:
    """JSON lines (no TTY): each daemon once, with doctor --pid's verdict; the container's init
    is not chrooted (its root is its namespace's), its worker is, seen as in the container."""
    result = run("doctor", "--all", "--read-filter")
    assert result.code == 69, result.stderr  # a will-fail daemon: action needed
    found = _daemons(result.stdout)
    bad = found[fleet.fragile]
    assert bad["name"] == "haproxy" and bad["jail"] == str(fleet.failing_jail)
    assert bad["verdict"] == "safe now, fragile", bad
    assert "OpenSSL 3" in str(bad["libraries"]) and bad["user"] == "nobody"
    assert found[fleet.will_fail]["name"] == "openssl-worker"
    assert found[fleet.will_fail]["verdict"] == "will fail", found[fleet.will_fail]
    assert found[fleet.safe]["verdict"] == "safe", found[fleet.safe]
    assert found[fleet.unbound]["name"] == "unbound"
    assert found[fleet.unbound]["verdict"] == "safe", found[fleet.unbound]
    assert fleet.container_init not in found
    worker = found[fleet.container_worker]
    assert worker["container"] is True and worker["jail"] == fleet.container_jail
    assert not found[fleet.safe]["container"]
    # the same verdicts doctor --pid gives
    for pid in (fleet.fragile, fleet.will_fail):
        alone = run("doctor", "--pid", str(pid), "--read-filter")
        assert alone.code == 69 and str(found[pid]["detail"]) in alone.error
    # --name filters; without --read-filter the filtered daemon is "cannot tell" (75)
    named = run("doctor", "--all", "--name", "unbound")
    assert named.code == 0, named.stderr
    assert fleet.unbound in _daemons(named.stdout)
    assert all(d["name"] == "unbound" for d in _daemons(named.stdout).values())


def test_nagios_exits_critical_with_a_will_fail_daemon(fleet: Fleet) -> None:
    result = run("doctor", "--all", "--read-filter", "--format", "nagios")
    assert result.code == 2, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("JAILSHIM CRITICAL - "), first
    assert f"PID {fleet.will_fail}" in first
    _, perf = first.split(" | ")
    assert "will_fail=" in perf and "scan_time=" in perf and perf.count("|") == 0
    safe_only = run("doctor", "--all", "--name", "unbound", "--format", "nagios")
    assert safe_only.code == 0 and safe_only.stdout.startswith("JAILSHIM OK - ")
    bad = run("doctor", "--all", "--format", "nagios", "--output", "/tmp/x.prom")
    assert bad.code == 3 and bad.stdout.startswith("JAILSHIM UNKNOWN - ")


def test_prometheus_textfile_passes_promtool_and_node_exporter_serves_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    need(promtool is not None, "needs promtool (Debian package prometheus)")
    need(os.path.exists(NODE_EXPORTER), "needs Debian's prometheus-node-exporter")
    assert promtool is not None
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    out = textfiles / "jailshim.prom"
    result = run("doctor", "--all", "--read-filter", "--format", "prometheus", "--output", str(out))
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in textfiles.iterdir()) == ["jailshim.prom"]  # no temporary left
    text = out.read_text()
    check = subprocess.run(
        [promtool, "check", "metrics"], check=False, input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    bad = f'jailshim_daemon_verdict{{daemon="openssl-worker",jail="{fleet.will_fail_jail}",'
    assert any(line.startswith(bad) and line.endswith(" 2") for line in text.splitlines()), text
    fragile = f'jailshim_daemon_verdict{{daemon="haproxy",jail="{fleet.failing_jail}",'
    assert any(line.startswith(fragile) and line.endswith(" 1") for line in text.splitlines())
    port = 9100  # node_exporter's own port: free in the network namespace it gets
    exporter = spawn(
        [
            *OWN_NETNS,
            NODE_EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textfiles}",
        ]
    )
    try:
        fetch = (
            "import sys, time, urllib.request\n"
            "for _ in range(100):\n"
            "    try:\n"
            f"        sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{port}/metrics')"
            ".read().decode()); break\n"
            "    except OSError: time.sleep(0.1)\n"
        )
        time.sleep(0.2)
        served = subprocess.run(
            ["nsenter", f"--net=/proc/{exporter.pid}/ns/net", sys.executable, "-c", fetch],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        stop(exporter)
    assert any(line.startswith(bad) for line in served.stdout.splitlines()), served
    assert "node_textfile_scrape_error 0" in served.stdout
    assert "jailshim_doctor_last_run_timestamp_seconds" in served.stdout


# --- pure parts ------------------------------------------------------------------------------

NS, HOST_ROOT, JAIL, OTHER_NS = (1, 10), (2, 20), (2, 30), (1, 11)


def _proc(pid: int, ppid: int, name: str = "haproxy", root_id: tuple[int, int] = JAIL) -> Proc:
    return Proc(pid, ppid, name, "/var/lib/haproxy", NS, root_id, pid)


def test_grouping_masters_and_workers() -> None:
    """haproxy -W: two workers (old and new after a reload) of an unchrooted master named as
    they are: one daemon, the newest worker judged. A chrooted master with chrooted workers:
    one daemon, the master judged. Another daemon in the same jail with another parent:
    another daemon. The same jail path in another namespace: another daemon."""
    procs = [
        _proc(11, 10),
        _proc(12, 10),  # haproxy -W's workers; master 10 outside the jail
        _proc(21, 1, "nginx"),
        _proc(22, 21, "nginx"),
        _proc(23, 21, "nginx"),
        _proc(31, 1),  # a second haproxy (no master) in the same jail
        _proc(41, 40)._replace(namespace=OTHER_NS),
    ]
    parents = {
        10: Parent("haproxy", False),
        1: Parent("systemd", False),
        40: Parent("conmon", False),
    }
    daemons = {d.pids[0]: d for d in group(procs, parents)}
    assert set(daemons) == {12, 21, 31, 41}
    assert daemons[12].master == 10 and daemons[12].pids == (12, 11)
    assert daemons[21].master is None and daemons[21].pids == (21, 22, 23)
    assert daemons[31].pids == (31,) and daemons[41].namespace == OTHER_NS


def _scan(*judged: Judged, unreadable: int = 0) -> Scan:
    return Scan(tuple(judged), (), 100, unreadable, 0.25, 1_800_000_000.0)


def _judged(pid: int, verdict: str, jail: str = "/j", name: str = "haproxy") -> Judged:
    daemon = Daemon(name, jail, (pid,), 0, None, NS)
    return Judged(daemon, verdict, f"{verdict}: because", "nobody", ("OpenSSL 3.0.17",))


def test_prometheus_escapes_labels_and_merges_duplicates() -> None:
    """A jail path with a quote, a backslash and a line feed is escaped; two daemons with the
    same labels (one haproxy in each of two containers) are one series, the worse verdict."""
    assert label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert label_value("x\udcff") == "x\\\\xff"  # a stray byte: \\xff, read back as \xff
    text = prometheus(_scan(_judged(1, "safe"), _judged(2, "will fail"), _judged(3, "safe", 'q"')))
    series = [line for line in text.splitlines() if line.startswith("jailshim_daemon_verdict{")]
    assert series == [
        'jailshim_daemon_verdict{daemon="haproxy",jail="/j",library="OpenSSL 3.0.17"} 2',
        'jailshim_daemon_verdict{daemon="haproxy",jail="q\\"",library="OpenSSL 3.0.17"} 0',
    ]
    assert "jailshim_doctor_last_run_timestamp_seconds 1800000000\n" in text
    assert text.endswith("\n") and text.count("# TYPE jailshim_daemon_verdict gauge") == 1


def test_nagios_states_combine_critical_first_then_warning_then_unknown() -> None:
    assert nagios(_scan())[1] == 0
    assert nagios(_scan(_judged(1, "safe"), _judged(2, "cannot tell")))[1] == 3
    assert nagios(_scan(_judged(1, "cannot tell"), _judged(2, "safe now, fragile")))[1] == 1
    line, code = nagios(_scan(_judged(1, "safe now, fragile"), _judged(2, "will fail")))
    assert code == 2 and line.startswith("JAILSHIM CRITICAL - 1 of 2 chrooted daemons will fail")
    assert nagios(_scan(_judged(1, "safe"), unreadable=2))[1] == 3
    assert "will_fail=1;;0;0" in line.splitlines()[0]
    assert "VERDICT" in table(_scan(_judged(1, "safe")))


def test_write_atomically_leaves_the_old_file_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "jailshim.prom"
    write_atomically(str(out), "a 1\n")
    assert out.read_text() == "a 1\n" and os.listdir(tmp_path) == ["jailshim.prom"]
    write_atomically(str(out), "a 2\n")
    assert out.read_text() == "a 2\n" and os.listdir(tmp_path) == ["jailshim.prom"]
    blocker = tmp_path / f".jailshim.prom.{os.getpid()}.tmp"
    blocker.write_text("")  # the temporary name taken: O_EXCL refuses, the old file stays
    with pytest.raises(Exception, match="--output"):
        write_atomically(str(out), "a 3\n")
    assert out.read_text() == "a 2\n"


def test_bad_usage_is_one_sentence() -> None:
    result = run("doctor", "--format", "prometheus")
    assert result.code == 64 and "--format goes with --all" in result.error
    result = run("doctor", "--all", "--pid", "1")
    assert result.code == 64 and "drop --pid" in result.error
    result = run("doctor", "--all", "--format", "prometheus", "--output", "/tmp/x.txt")
    assert result.code == 64 and ".prom" in result.error


# --- deployment examples ---------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_alert_rules_pass_promtool_test_rules() -> None:
    """A daemon that will fail (after 10 minutes of it), a textfile not rewritten for 15."""
    promtool = shutil.which("promtool")
    need(promtool is not None, "needs promtool (Debian package prometheus)")
    assert promtool is not None
    result = subprocess.run(
        [promtool, "test", "rules", "jailshim.rules.test.yml"],
        cwd=EXAMPLES / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_timer_and_service_verify_cleanly() -> None:
    """systemd-analyze verify, in a private mount namespace where /usr/local/bin/jailshim is a
    stub: no error, nothing on stderr."""
    need(os.geteuid() == 0 and shutil.which("systemd-analyze") is not None, "needs root, systemd")
    units = [EXAMPLES / "systemd" / f"jailshim-doctor.{kind}" for kind in ("service", "timer")]
    script = (
        "set -e; mount -t tmpfs tmpfs /usr/local/bin; "
        "printf '#!/bin/sh\\n' > /usr/local/bin/jailshim; chmod 755 /usr/local/bin/jailshim; "
        f"systemd-analyze verify {' '.join(map(str, units))}"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_daemonset_validates_offline() -> None:
    validate = Path(sys.executable).parent / "kubernetes-validate"
    need(validate.exists(), "needs kubernetes-validate (pip install -e '.[test]')")
    manifest = EXAMPLES / "kubernetes" / "jailshim-doctor-daemonset.yaml"
    result = subprocess.run(
        [str(validate), "--strict", str(manifest)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = manifest.read_text()
    assert "hostPID: true" in text and "readOnlyRootFilesystem: true" in text
    assert '"SYS_PTRACE", "CHECKPOINT_RESTORE", "SYS_CHROOT", "SETUID", "SETGID"' in text


def test_a_library_is_read_once_per_file_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libfind identifies a mapped library once per (device, inode, size, mtime): the second
    daemon mapping it costs no read; a file changed since is read again."""
    from jailshim.verify import libfind

    lib = tmp_path / "libcrypto.so.3"
    lib.write_bytes(b"\0" * 64 + b"OpenSSL 3.0.1  1 Jan 2022\0")

    def what() -> tuple[str, str, str]:
        handle = os.open(lib, os.O_PATH)
        try:
            return libfind._what_file(handle, os.fstat(handle), "OpenSSL", lib.name)
        finally:
            os.close(handle)

    assert what()[2].startswith("OpenSSL 3.0.1")

    def no_read(data: bytes) -> str:
        raise AssertionError("read again")

    with monkeypatch.context() as patch:
        patch.setattr(libfind, "version_in", no_read)
        assert what()[2].startswith("OpenSSL 3.0.1")  # from the cache
    lib.write_bytes(b"\0" * 80 + b"OpenSSL 3.0.17  1 Jul 2025\0")
    assert what()[2].startswith("OpenSSL 3.0.17")


# --- the DaemonSet's container, as podman runs it ----------------------------------------------

DAEMONSET_CAPS = "SYS_PTRACE,CHECKPOINT_RESTORE,SYS_CHROOT,SETUID,SETGID"
IN_CONTAINER_HAPROXY = (
    "global\n    chroot /var/lib/haproxy\n    user nobody\n    group nogroup\n"
    "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n"
    "frontend f\n    bind 127.0.0.1:8443\n    default_backend b\n"
    "backend b\n    server s 127.0.0.1:9\n"
)


def _podman(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(TESTS / "podman" / "containers.conf")}
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _verdicts(prom: str) -> dict[tuple[str, str], int]:
    """{(daemon, jail): value} of jailshim_daemon_verdict."""
    import re

    found = {}
    for line in prom.splitlines():
        m = re.fullmatch(
            r'jailshim_daemon_verdict\{daemon="([^"]*)",jail="([^"]*)",.*\} (\d)', line
        )
        if m:
            found[(m[1], m[2])] = int(m[3])
    return found


def test_the_daemonset_container_finds_host_and_container_daemons(
    fleet: Fleet,
    tmp_path: Path,
    image: str,  # noqa: F811
) -> None:
    """examples/kubernetes' DaemonSet as podman runs it (`podman run --pid=host`, read-only root,
    its capabilities only, the textfile directory mounted; this worktree's jailshim over the
    image's): it finds the host's chrooted daemons and a haproxy that chroots inside another
    container. With the DaemonSet's least capabilities a daemon under a seccomp filter is
    "cannot tell" (reading the filter needs CAP_SYS_ADMIN): the will-fail worker is 3, the
    container's haproxy (podman's default filter) too; with SYS_ADMIN and --read-filter they
    get doctor's full verdicts."""
    # `image`: the container suite's image, built once per run (a fresh machine has none)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(IN_CONTAINER_HAPROXY)
    cfg.chmod(0o644)
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    name = f"jailshim-test-{os.getpid()}-{os.urandom(4).hex()}"
    code = Path(__file__).resolve().parent.parent / "jailshim"
    started = _podman(
        *("run", "-d", "--network=none", "--name", name, "--entrypoint", "/usr/sbin/haproxy"),
        *("-v", f"{cfg}:/etc/haproxy/test.cfg:ro", image, "-f", "/etc/haproxy/test.cfg", "-db"),
    )
    try:
        assert started.returncode == 0, started.stderr
        inspect = _podman("inspect", "--format", "{{.State.Pid}}", name)
        in_container = int(inspect.stdout.strip())
        deadline = time.monotonic() + 20
        while os.readlink(f"/proc/{in_container}/root") == "/" and time.monotonic() < deadline:
            time.sleep(0.1)

        def daemonset(*extra: str, caps: str = DAEMONSET_CAPS) -> dict[tuple[str, str], int]:
            # the kernel answers PTRACE_SECCOMP_GET_FILTER EACCES to a tracer under seccomp
            unconfined = ["--security-opt=seccomp=unconfined"] if "--read-filter" in extra else []
            ran = _podman(
                *("run", "--rm", "--pid=host", "--network=none", "--read-only", *unconfined),
                *("--cap-drop=ALL", f"--cap-add={caps}", "--security-opt=no-new-privileges"),
                *("-v", f"{textfiles}:/var/lib/prometheus/node-exporter"),
                *("-v", f"{code}:/usr/lib/python3/dist-packages/jailshim:ro"),
                *("--entrypoint", "jailshim", image, "doctor", "--all", *extra),
                *("--format", "prometheus"),
                *("--output", "/var/lib/prometheus/node-exporter/jailshim.prom"),
            )
            assert ran.returncode == 0, ran.stdout + ran.stderr
            return _verdicts((textfiles / "jailshim.prom").read_text())

        least = daemonset()
        assert least[("haproxy", str(fleet.safe_jail))] == 0, least
        assert least[("unbound", str(fleet.unbound_jail))] == 0, least
        assert least[("openssl-worker", str(fleet.will_fail_jail))] == 3, least
        assert least[("haproxy", "/var/lib/haproxy")] == 3, least  # podman's seccomp filter
        full = daemonset("--read-filter", caps=f"{DAEMONSET_CAPS},SYS_ADMIN")
        assert full[("openssl-worker", str(fleet.will_fail_jail))] == 2, full
        assert full[("haproxy", str(fleet.failing_jail))] == 1, full
        assert full[("haproxy", "/var/lib/haproxy")] == 0, full  # as doctor --pid on the host
    finally:
        _podman("rm", "-f", "-t", "0", name)


def test_without_sys_ptrace_the_unreadable_chrooted_daemons_make_it_cannot_tell(
    fleet: Fleet,
) -> None:
    """root without CAP_SYS_PTRACE (a DaemonSet that forgot it) cannot read the root of the
    daemons that dropped to nobody/unbound: they are counted, said, and the answer is "cannot
    tell" (75), never "all safe"; unchrooted processes it cannot read (their mountinfo is an
    unchrooted one's) are not counted."""
    need(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    wrap = ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace"]
    result = run("doctor", "--all", "--format", "json", wrap=wrap)
    assert result.code == 75, result.stdout + result.stderr
    notes = [json.loads(line) for line in result.stdout.splitlines()]
    said = [
        n["detail"] for n in notes if n["kind"] == "skipped" and "may be chrooted" in n["detail"]
    ]
    assert said, result.stdout
    count = int(said[0].split()[0])
    assert count >= 4, said  # the fleet's two haproxy, its worker, unbound (and others' tests)
    found = {n["pid"] for n in notes if n["kind"] == "daemon"}
    assert fleet.fragile not in found and fleet.will_fail not in found


def test_a_daemon_whose_judgement_hangs_is_cannot_tell_and_the_scan_goes_on() -> None:
    """judge_bounded: the second daemon's judgement blocks (a /proc read or a library on a
    hard NFS mount that stopped answering): after the deadline it is "cannot tell", its child
    killed, and the third is still judged; a child that dies is said too. Real forks."""
    from jailshim.fleet import judge_bounded

    daemons = [Daemon(f"d{i}", "/j", (100 + i,), 0, None, NS) for i in range(4)]

    def one(daemon: Daemon) -> Judged | str:
        if daemon.name == "d1":
            time.sleep(30)
        if daemon.name == "d2":
            os._exit(9)
        return _judged(daemon.pids[0], "safe")._replace(daemon=daemon)

    start = time.monotonic()
    results = judge_bounded(daemons, one, deadline=1.0)
    assert time.monotonic() - start < 10
    assert [r.daemon.name for r in results if isinstance(r, Judged)] == ["d0", "d1", "d2", "d3"]
    verdicts = [r.verdict for r in results if isinstance(r, Judged)]
    assert verdicts == ["safe", "cannot tell", "cannot tell", "safe"]
    words = [r.words for r in results if isinstance(r, Judged)]
    assert "did not finish within 1 s" in words[1] and "died" in words[2]


def test_on_a_terminal_a_table_and_no_repeated_events(fleet: Fleet) -> None:
    """On a TTY (script(1) gives one): the table, worst first, each unsafe daemon's verdict
    under it, and no doctor.all log line repeating the rows (issue 26's rule for doctor)."""
    need(shutil.which("script") is not None, "needs script (util-linux)")
    argv = " ".join(jailshim_argv("doctor", "--all", "--read-filter"))
    shown = subprocess.run(
        ["script", "-qec", argv, "/dev/null"], capture_output=True, text=True, check=False
    )
    assert shown.returncode == 69, shown.stdout
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["VERDICT", "DAEMON", "PIDS", "JAIL", "USER", "LIBRARY"]
    assert lines[1].startswith("will fail") and "openssl-worker" in lines[1]
    assert f"PID {fleet.will_fail} openssl-worker: will fail" in shown.stdout
    assert "doctor.all" not in shown.stdout
