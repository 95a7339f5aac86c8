"""examples/kubernetes and examples/compose.yaml in real engines: `podman kube play` of each Pod
(its securityContext as written) and podman-compose, with a DoT query inside; the manifests
validated offline against the Kubernetes schemas (kubernetes-validate).

The pods run with --network none (no registry, no network here): the manifests' ports need a
network, so the test copies drop them and query on the pod's own loopback. The other changes
in the copies: the locally built image, the DNS backend on 127.0.0.1:5300, and names carrying
this pytest's PID (pods, the compose project) so that a later run can clear what a
killed one left. Everything played is taken down afterwards, also on failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import test_containers as tc
from tests.daemons import make_certificate
from tests.support import TESTS, need

pytestmark = pytest.mark.slow

MANIFEST = tc.REPO / "examples" / "kubernetes" / "haproxy-dot.yaml"
COMPOSE = tc.REPO / "examples" / "compose.yaml"
ANSWER = "TLSv1.3 hello.demo.jailshim A 192.0.2.53"
TAGGED = re.compile(r"(?:pod_)?jailshim-test-(\d+)-[0-9a-f]{8}")  # pod_: podman-compose


@dataclass(frozen=True)
class Env:
    podman: tc.Podman
    directory: Path  # 0755: containers.conf, the certificate, the test copies
    certificate: Path


def _tool(name: str) -> str:
    """A console script of the test venv (pyproject's test extras), else one on PATH."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    need(found is not None, f"needs {name} (pip install -e '.[test]')")
    assert found is not None
    return found


def _clear_stale(podman: tc.Podman, *, ours: bool) -> None:
    """Pods named for a test run that is gone (with ``ours``: this one), and their containers."""
    for name in podman("pod", "ps", "--format", "{{.Name}}", timeout=60).stdout.decode().split():
        match = TAGGED.fullmatch(name)
        if match and ((int(match[1]) == tc.RUN_ID and ours) or not tc._live_run(int(match[1]))):
            podman("pod", "rm", "-f", "-t", "0", name, check=False, timeout=120)


@pytest.fixture(scope="session")
def env() -> Iterator[Env]:
    """The jailshim image (built once, as tests/test_containers.py builds it) and a 0755
    directory for what podman reads."""
    need(os.geteuid() == 0, "needs root")
    for tool in ("podman", "runc", "debootstrap", "catatonit"):
        need(shutil.which(tool) is not None, f"needs {tool} (scripts/bootstrap.sh installs it)")
    directory = tc._scratch_dir(tc.SHARED_PREFIX)
    try:
        shutil.copyfile(TESTS / "podman" / "containers.conf", directory / "containers.conf")
        pem = make_certificate(directory)
        for path in directory.iterdir():
            path.chmod(0o644)
        podman = tc.Podman(directory / "containers.conf")
        _clear_stale(podman, ours=False)
        # `podman kube play` makes its default network on first use: leave none behind
        kube_net = "podman-default-kube-network"
        had_net = podman("network", "exists", kube_net, check=False).returncode == 0
        try:
            if podman("image", "exists", tc.BASE, check=False).returncode != 0:
                tc._import_base(podman)
            podman(
                *("build", "-q", "--build-arg", f"BASE={tc.BASE}", "-t", tc.IMAGE),
                *("-f", str(tc.REPO / "Containerfile"), str(tc.REPO)),
                timeout=900,
            )
            yield Env(podman, directory, pem)
        finally:
            _clear_stale(podman, ours=True)
            if not had_net:
                podman("network", "rm", "-f", kube_net, check=False)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _sub(text: str, old: str, new: str) -> str:
    """Replace ``old`` (which must be there: a changed example fails here, not later)."""
    assert old in text, f"{old!r} is no longer in the example"
    return text.replace(old, new)


def _dns_tool() -> str:
    return (TESTS / "podman" / "dns_tool.py").read_text()


def _query(podman: tc.Podman, container: str) -> str:
    """Start the DNS backend in ``container`` and send one DoT query; the tool's source goes
    on the command line (a read-only root takes no copy)."""
    podman("exec", "-d", container, "python3", "-c", _dns_tool(), "serve", "5300")
    answer = podman(
        *("exec", container, "python3", "-c", _dns_tool(), "query", "853", "hello.demo.jailshim"),
        check=False,
        timeout=60,
    )
    return answer.stdout.decode().strip()


def _logs(podman: tc.Podman, container: str) -> str:
    logs = podman("logs", container, check=False)
    return (logs.stdout + logs.stderr).decode()


def test_manifests_are_valid_kubernetes() -> None:
    """kubernetes-validate --strict: both Pods pass against the Kubernetes schemas, offline."""
    validate = _tool("kubernetes-validate")
    result = subprocess.run(
        [validate, "--strict", str(MANIFEST)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource pod/") == 2, result.stdout


def test_validation_would_catch_a_bad_manifest(tmp_path: Path) -> None:
    """Control: a misspelt securityContext key fails the same validation."""
    validate = _tool("kubernetes-validate")
    bad = tmp_path / "bad.yaml"
    bad.write_text(_sub(MANIFEST.read_text(), "readOnlyRootFilesystem", "readOnlyRootFilesytem"))
    result = subprocess.run(
        [validate, "--strict", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "readOnlyRootFilesytem" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("document", "strategy"),
    [(0, '"strategy": "mknod", "outcome": "created"'), (1, '"event": "dev.tmpfs"')],
    ids=["mknod", "read-only-sys-admin"],
)
def test_kube_play_pod_answers_dot(env: Env, document: int, strategy: str) -> None:
    """`podman kube play` of each Pod as written (capabilities, read-only root): it runs,
    jailshim takes the expected path, haproxy answers DoT in the pod, kube down removes it."""
    pod = f"jailshim-test-{tc.RUN_ID}-{uuid.uuid4().hex[:8]}"
    certs = env.directory / f"{pod}-certs"
    original = ("haproxy-dot", "haproxy-dot-nomknod")[document]
    text = MANIFEST.read_text().split("\n---\n")[document]
    text = _sub(text, "localhost/jailshim-haproxy:latest", tc.IMAGE)
    text = _sub(text, f"name: {original}\n", f"name: {pod}\n")
    # podman 4.3 writes a Secret's data into the volume still base64-encoded (and ignores
    # stringData): the certificate comes from a directory instead, at the same mount point.
    text = _sub(
        text,
        "secret: {secretName: haproxy-dot-cert, optional: false}",
        f"hostPath: {{path: {certs}, type: Directory}}",
    )
    text = re.sub(r'value: "10\.96\.0\.10:53"', 'value: "127.0.0.1:5300"', text)
    assert "127.0.0.1:5300" in text
    text = "\n".join(
        line for line in text.splitlines() if "ports:" not in line and "Port" not in line
    )
    certs.mkdir(mode=0o755)
    shutil.copyfile(env.certificate, certs / "dot.pem")
    (certs / "dot.pem").chmod(0o644)
    play = env.directory / f"{pod}.yaml"
    play.write_text(text + "\n")
    try:
        env.podman("kube", "play", "--network", "none", str(play), timeout=300)
        container = f"{pod}-haproxy"
        answer = _query(env.podman, container)
        logs = _logs(env.podman, container)
        assert answer == ANSWER, logs
        assert strategy in logs and '"event": "handover"' in logs, logs
        env.podman("kube", "down", str(play), timeout=300)
        assert env.podman("pod", "exists", pod, check=False).returncode == 1
    finally:
        env.podman("kube", "down", str(play), check=False, timeout=300)
        env.podman("pod", "rm", "-f", "-t", "0", pod, check=False, timeout=120)
        play.unlink(missing_ok=True)
        shutil.rmtree(certs, ignore_errors=True)


def test_compose_up_answers_dot_and_down_removes_it(env: Env) -> None:
    """podman-compose up -d of examples/compose.yaml (cap_add MKNOD, SIGUSR1 stop): jailshim
    creates the nodes, haproxy answers DoT, down removes the container and the pod."""
    compose = _tool("podman-compose")
    project = f"jailshim-test-{tc.RUN_ID}-{uuid.uuid4().hex[:8]}"
    work = env.directory / project
    text = COMPOSE.read_text()
    text = _sub(text, "localhost/jailshim-haproxy:latest", tc.IMAGE)
    text = re.sub(r'"\$\{DNS_UPSTREAM:\?[^}]*\}"', '"127.0.0.1:5300"', text)
    assert '"127.0.0.1:5300"' in text
    text = _sub(text, '    ports:\n      - "853:853"\n', "    network_mode: none\n")
    text = _sub(text, "./haproxy-dot/dot.pem", str(env.certificate))
    work.mkdir(mode=0o755)
    (work / "compose.yaml").write_text(text)
    command = [compose, "-f", str(work / "compose.yaml"), "-p", project]
    podman_env = {**os.environ, "CONTAINERS_CONF": str(env.podman.conf)}
    try:
        tc._run([*command, "up", "-d"], timeout=300, env=podman_env)
        container = f"{project}_haproxy-dot_1"
        answer = _query(env.podman, container)
        logs = _logs(env.podman, container)
        assert answer == ANSWER, logs
        assert '"strategy": "mknod", "outcome": "created"' in logs, logs
        tc._run([*command, "down"], timeout=300, env=podman_env)
        assert env.podman("container", "exists", container, check=False).returncode == 1
        assert env.podman("pod", "exists", f"pod_{project}", check=False).returncode == 1
    finally:
        tc._run([*command, "down"], timeout=300, env=podman_env, check=False)
        env.podman("pod", "rm", "-f", "-t", "0", f"pod_{project}", check=False, timeout=120)
        shutil.rmtree(work, ignore_errors=True)
