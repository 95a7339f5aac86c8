"""Real daemons for tests: a TLS-terminating haproxy in a jail, a TCP echo backend, a syslog.

Every daemon test runs in a network namespace of its own (the ``own_network`` fixture): the
test's thread, the daemons it starts and their clients share a loopback nobody else on the
machine can bind on, so a port the test picks stays the test's. Every process is stopped by
the fixture that started it, by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import pids
from tests.support import assert_ran

_CLONE_NEWNET = 0x40000000
# The network namespace pytest started in: shared with every other process on the machine.
SHARED_NETWORK = os.stat("/proc/thread-self/ns/net").st_ino


def _libc_call(name: str, *args: int) -> None:
    import ctypes  # only the daemon tests need it

    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


@pytest.fixture
def own_network(root: None) -> Iterator[None]:
    """This test's thread, and everything it starts, in a new network namespace with lo up.

    A port picked on the shared loopback (bind to 0, close, hand the number to a daemon) could
    be taken by any other process between the pick and the daemon's bind, and a fixed port
    (47913) could already be in use on a developer's machine; here nobody else can bind.
    The namespace goes when its last process does; the thread returns to the shared one."""
    shared = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _libc_call("unshare", _CLONE_NEWNET)  # this thread only: pytest's others stay
        try:
            up = ["ip", "link", "set", "lo", "up"]
            proc = subprocess.run(up, capture_output=True, check=False)
            assert_ran(proc)
            yield
        finally:
            _libc_call("setns", shared, _CLONE_NEWNET)
    finally:
        os.close(shared)


def in_own_network() -> bool:
    return os.stat("/proc/thread-self/ns/net").st_ino != SHARED_NETWORK


def free_port() -> int:
    """A TCP port free on 127.0.0.1 — only in a test's own network namespace (``own_network``),
    where nothing else can bind it between this check and the daemon's bind."""
    assert in_own_network(), "free_port() outside own_network: another process could take it"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EchoServer:
    """A TCP echo server on 127.0.0.1 in a thread (the backend haproxy forwards to)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                while data := conn.recv(4096):
                    conn.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class SyslogSocket:
    """A unix datagram socket standing in for /dev/log; collects what arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o666)  # haproxy sends as nobody

    def receive(self, timeout: float) -> list[str]:
        self.sock.settimeout(timeout)
        lines = []
        with contextlib.suppress(TimeoutError):
            while True:
                lines.append(self.sock.recv(65536).decode(errors="replace"))
                self.sock.settimeout(0.3)
        return lines

    def close(self) -> None:
        self.sock.close()


def make_certificate(directory: Path) -> Path:
    """A self-signed certificate and key in one PEM file, as haproxy's `crt` wants."""
    key, cert, pem = directory / "key.pem", directory / "cert.pem", directory / "haproxy.pem"
    proc = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ],
        check=False,
        capture_output=True,
    )
    assert_ran(proc)
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return pem


@dataclass
class HaproxySetup:
    config: Path
    jail: Path
    port: int
    log_socket: Path


def write_haproxy_config(
    directory: Path,
    jail: Path,
    backend_port: int,
    *,
    bind_address: str = "127.0.0.1",
    log_socket: Path | None = None,
    extra_global: str = "",
    port: int | None = None,
) -> HaproxySetup:
    """A TLS 1.3-only frontend with a self-signed certificate forwarding to the backend (on
    ``port``, or one free in the test's own network namespace)."""
    pem = make_certificate(directory)
    port = port if port is not None else free_port()
    log_socket = log_socket or directory / "log.sock"
    config = directory / "haproxy.cfg"
    host = f"[{bind_address}]" if ":" in bind_address else bind_address
    config.write_text(
        f"""global
    chroot {jail}
    user nobody
    group nogroup
    log {log_socket} local0
{extra_global}
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend tls_in
    bind {host}:{port} ssl crt {pem} ssl-min-ver TLSv1.3
    default_backend echo

backend echo
    server echo1 127.0.0.1:{backend_port}
"""
    )
    return HaproxySetup(config, jail, port, log_socket)


def tls_echo(port: int, payload: bytes = b"ping", host: str = "127.0.0.1") -> tuple[str, bytes]:
    """One TLS 1.3 handshake through haproxy and an echo; returns (version, echoed bytes)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as raw:
        raw.settimeout(5)
        raw.connect((host, port))
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(payload)
            data = tls.recv(len(payload))
            return str(tls.version()), data


def wait_for_tls(
    port: int,
    proc: subprocess.Popen[str] | None = None,
    timeout: float = 20,
    host: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            _, err = stop(proc)
            raise AssertionError(f"daemon exited with {proc.returncode}: {err}")
        try:
            tls_echo(port, host=host)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answered TLS on {host}:{port} within {timeout}s")


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    """Stop a process this test started (and what it started), by PID; return its output.

    Never blocks for ever on a pipe: a descendant that outlives its parent would hold stdout
    and stderr open, so every descendant is killed if the process does not end in time.
    """
    # pinned while proc is unreaped (its tree is its own): after communicate() reaps it, a
    # recorded number may be anyone's, a pidfd stays this process's (issue 32)
    family = pids.pin_descendants(proc.pid) if proc.poll() is None else []
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            for fd in family:
                pids.send(fd, signal.SIGKILL)
            proc.kill()
            out, err = proc.communicate(timeout=15)
    finally:
        pids.kill(family)  # anything left of what this process started; closes the pidfds
    return out or "", err or ""


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def status_field(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(field)


@contextlib.contextmanager
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


# Where scripts/bootstrap.sh keeps the .deb of each package whose shipped configuration a test
# needs; apt's own cache is looked in too (it may have been cleaned).
DEB_CACHES = (Path("/var/cache/jailshim-tests/debs"), Path("/var/cache/apt/archives"))


def _conffiles(package: str) -> dict[str, str]:
    """dpkg's record of ``package``'s conffiles: path -> MD5 of the file as shipped."""
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Conffiles}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    assert_ran(proc)
    found = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and "obsolete" not in fields[2:]:
            found[fields[0]] = fields[1]
    return found


def _package_deb(package: str) -> Path | None:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version} ${Architecture}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    assert_ran(proc)
    version, arch = proc.stdout.split()
    name = f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
    return next((d / name for d in DEB_CACHES if (d / name).is_file()), None)


def _md5(path: Path) -> str:
    import hashlib  # only the stock-config tests need it

    # dpkg's own checksum of a conffile (an identity check, not security)
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def owners(directory: str) -> list[str]:
    """The packages dpkg says ship ``directory`` (none for one a package's script made)."""
    proc = subprocess.run(
        ["dpkg-query", "-S", directory], capture_output=True, text=True, check=False
    )
    line = proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else ""
    names = line.rpartition(": ")[0].split(",") if line else []
    return [name.strip().split(":")[0] for name in names]


def pristine_copy(package: str | None, directory: str, area: Path) -> Path:
    """A copy of the host's ``directory`` in ``area`` whose conffiles of ``package`` (None:
    of every package that ships ``directory``) are as the package shipped them: a test of
    "Debian's config" must not depend on an administrator's edits of /etc (a changed
    named.conf.options failed the named example's test). Files dpkg says are unchanged come
    from the host; edited ones from the package's .deb (scripts/bootstrap.sh caches it)."""
    copy = area / directory.strip("/").replace("/", "-")
    subprocess.run(["cp", "-a", directory, str(copy)], check=True, timeout=30)
    for name in [package] if package is not None else owners(directory):
        _restore_conffiles(name, directory, copy, area)
    return copy


def _restore_conffiles(package: str, directory: str, copy: Path, area: Path) -> None:
    prefix = directory.rstrip("/") + "/"
    edited = [
        path
        for path, md5 in _conffiles(package).items()
        if path.startswith(prefix) and (not os.path.isfile(path) or _md5(Path(path)) != md5)
    ]
    if not edited:
        return
    deb = _package_deb(package)
    assert deb is not None, (
        f"{', '.join(edited)} differ from what {package} shipped and no {package} .deb is in "
        f"{' or '.join(map(str, DEB_CACHES))}: run scripts/bootstrap.sh (it downloads one)"
    )
    shipped = area / f"{package}-shipped"
    if not shipped.exists():
        shipped.mkdir()
        subprocess.run(["dpkg-deb", "-x", str(deb), str(shipped)], check=True, timeout=60)
    for path in edited:
        shutil.copyfile(shipped / path.lstrip("/"), copy / path[len(prefix) :])
