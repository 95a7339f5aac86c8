"""Real daemons for tests: a TLS-terminating haproxy in a jail, a TCP echo backend, a syslog.

Everything listens on 127.0.0.1 only, on ports the kernel picks, and every process is stopped
by the fixture that started it, by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import assert_ran


def free_port() -> int:
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
) -> HaproxySetup:
    """A TLS 1.3-only frontend with a self-signed certificate forwarding to the backend."""
    pem = make_certificate(directory)
    port = free_port()
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
    family = descendants(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *family]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=15)
    for pid in family:  # anything left of what this process started
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
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
