"""Real daemons for tests: the daemons' binaries, a TLS-terminating haproxy in a jail, a TCP echo
backend, a syslog, DNS questions to unbound, nsd and named.

A pytest plugin (tests/conftest.py names it): its fixtures — ``own_network`` and one
``NAME_bin`` per daemon — are every test's without an import. Every daemon test runs in a
network namespace of its own: each ``NAME_bin`` fixture depends on ``own_network``, so the
test's thread, the daemons it starts and their clients share a loopback nobody else on the
machine can bind on, and a port the test picks stays the test's. Every process is stopped by
the fixture that started it, by PID.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest

from tests import pids
from tests.support import assert_ran, need

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


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts (it appends them); each is killed by its PID and reaped,
    whatever happens."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # a no-op once reaped: never another process's number
            proc.wait(10)


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


# --- the daemons' binaries -----------------------------------------------------------------
# Each skips (fails under CI=true) where its Debian package is missing, and puts the test in a
# network namespace of its own: every port the daemon binds is the test's.

POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
# postfix's own templates, never edited by an administrator (/etc/postfix's may be)
POSTFIX_PRISTINE = {
    "main.cf": "/usr/share/postfix/main.cf.debian",
    "master.cf": "/usr/share/postfix/master.cf.dist",
}


def _installed(command: str, package: str, *, also: tuple[str, ...] = (), user: str = "") -> str:
    """The path of ``command`` (from Debian's ``package``), after the commands in ``also`` and
    ``user`` (the daemon's own, which the package creates) are known to be there too."""
    path = shutil.which(command)
    need(path is not None, f"needs {command} (Debian package {package})")
    for tool in also:
        need(shutil.which(tool) is not None, f"needs {tool} ({_PACKAGE_OF.get(tool, package)})")
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            need(False, f"needs the user {user} (Debian package {package} creates it)")
    assert path is not None
    return path


_PACKAGE_OF = {"kdig": "Debian package knot-dnsutils", "named-checkconf": "bind9-utils"}


@pytest.fixture
def haproxy_bin(own_network: None) -> str:
    """Debian's haproxy 2.6."""
    return _installed("haproxy", "haproxy")


@pytest.fixture
def unbound_bin(own_network: None) -> str:
    """Debian's unbound, its unbound-checkconf, its `unbound` user, and kdig to ask it."""
    return _installed("unbound", "unbound", also=("unbound-checkconf", "kdig"), user="unbound")


@pytest.fixture
def nsd_bin(own_network: None) -> str:
    """Debian's nsd, its nsd-checkconf, its `nsd` user, and kdig to ask it."""
    return _installed("nsd", "nsd", also=("nsd-checkconf", "kdig"), user="nsd")


@pytest.fixture
def named_bin(own_network: None) -> str:
    """Debian's named, named-checkconf, its /etc/bind, the `bind` user, and kdig to ask it."""
    path = _installed("named", "bind9", also=("named-checkconf", "kdig"), user="bind")
    need(Path("/etc/bind/named.conf.options").exists(), "needs Debian's /etc/bind (bind9)")
    return path


@pytest.fixture
def stunnel_bin(own_network: None) -> str:
    """Debian's stunnel4 and its `stunnel4` user."""
    return _installed("stunnel4", "stunnel4", user="stunnel4")


@pytest.fixture
def postfix_bin(own_network: None) -> str:
    """Debian's postfix, postconf, its master, its pristine templates and the user postfix."""
    path = _installed("postfix", "postfix", also=("postconf",), user="postfix")
    need(os.access(POSTFIX_MASTER, os.X_OK), f"needs {POSTFIX_MASTER} (Debian package postfix)")
    for source in POSTFIX_PRISTINE.values():
        need(Path(source).exists(), f"needs {source} (Debian package postfix)")
    return path


def daemon_pid(proc: subprocess.Popen[str], name: str) -> int:
    """The process whose executable is ``name``: the Popen itself (jailshim exec'd into the
    daemon) or, under a wrapper (nsrun, an init), the first such process below it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in [proc.pid, *descendants(proc.pid)]:
            with contextlib.suppress(OSError):  # gone, or not yet exec'd
                if Path(f"/proc/{pid}/exe").resolve().name == name:
                    return pid
        time.sleep(0.05)
    raise AssertionError(f"no {name} process from {proc.args!r}")


# --- DNS: the daemons' configs and their answers ---------------------------------------------

DNS_NAME = "answer.jailshim.test"
UNBOUND_ANSWER = "192.0.2.53"  # write_unbound_config's address for DNS_NAME


def write_unbound_config(
    directory: Path,
    port: int,
    *,
    address: str = "127.0.0.1",
    records: Mapping[str, str] = MappingProxyType({DNS_NAME: UNBOUND_ANSWER}),
    chroot: bool = True,
    refuse_the_rest: bool = False,
    extra: str = "",
) -> Path:
    """directory/unbound.conf: unbound answering ``records`` (name -> IPv4 address, in zone
    jailshim.test) on ``address``:``port``; chrooted at ``directory`` (the file inside it, as
    unbound wants) as user unbound, or (``chroot`` False) neither; with ``refuse_the_rest`` a
    fast NXDOMAIN for every other name (nothing here reaches the Internet); ``extra`` lines
    end the server section."""
    jail, user = (str(directory), "unbound") if chroot else ("", "")
    lines = [
        "server:",
        f'    chroot: "{jail}"',
        f'    directory: "{directory}"',
        f'    username: "{user}"',
        f"    interface: {address}@{port}",
        f"    port: {port}",
        "    do-ip6: no",
        "    do-daemonize: no",
        "    use-syslog: no",
        '    pidfile: ""',
        '    module-config: "iterator"',
        "    access-control: 127.0.0.0/8 allow",
        *(['    local-zone: "." static'] if refuse_the_rest else []),
        '    local-zone: "jailshim.test." static',
        *(f'    local-data: "{name}. 60 IN A {ip}"' for name, ip in records.items()),
    ]
    config = directory / "unbound.conf"
    config.write_text("\n".join(lines) + f"\n{extra}remote-control:\n    control-enable: no\n")
    return config


def dns_answer(port: int, name: str = DNS_NAME) -> str:
    """kdig's short answer for ``name`` A from 127.0.0.1:``port`` (in the test's network
    namespace)."""
    query = ["+short", "+time=1", "+retry=0", name, "A"]
    proc = subprocess.run(
        ["kdig", "@127.0.0.1", "-p", str(port), *query],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout.strip()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_for_dns(
    port: int,
    proc: subprocess.Popen[str],
    answer: str,
    *,
    name: str = DNS_NAME,
    timeout: float = 30,
) -> None:
    """Until 127.0.0.1:``port`` answers ``name`` with ``answer``; fails if ``proc`` (jailshim
    and the daemon it started) exits first, with its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{proc.args!r} exited {proc.returncode}:\n{err}\n{out}")
        if not _listening(port):  # kdig's first try at a closed port waits out +time=1
            time.sleep(0.05)
            continue
        if dns_answer(port, name) == answer:
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing answered {name} on 127.0.0.1:{port} within {timeout}s")


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


def process_state(pid: int) -> str:
    """The one-letter state /proc/PID/stat gives (R, S, D, T, Z, …), or "gone"."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return data[data.rfind(")") + 2 :].split()[0]  # after comm, which may hold ") "


def wait_until(predicate: Callable[[], object], timeout: float = 20) -> bool:
    """True as soon as ``predicate()`` is; False if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


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
