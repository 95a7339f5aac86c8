"""The README's demo and the example units, run as an operator would."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import pids
from tests.daemons import SHARED_NETWORK, descendants, free_port, stop
from tests.stock import copy_of, host_state, in_stock_layout
from tests.support import TESTS, clean_env, need, spawn

REPO = TESTS.parent
SYSTEMD = REPO / "examples" / "systemd"


@pytest.mark.slow
def test_demo_smoke_makes_a_real_dot_query(root: None, own_network: None) -> None:
    """`bash scripts/demo.sh --smoke`: haproxy (jailed by jailshim) + unbound answer a real
    kdig +tls query with the demo record, then everything is cleaned up."""
    for tool in ("haproxy", "unbound", "kdig"):
        need(shutil.which(tool) is not None, f"needs {tool} (scripts/bootstrap.sh installs it)")
    env = {**os.environ, "DEMO_PORT": str(free_port()), "DEMO_DNS_PORT": str(free_port())}
    before = sorted(p.name for p in Path("/tmp").glob("jailshim-demo.*"))
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh"), "--smoke"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smoke: OK (TLS 1.3, hello.demo.jailshim A 192.0.2.53)" in proc.stdout
    assert "(TLS1.3)" in proc.stdout and "192.0.2.53" in proc.stdout
    assert sorted(p.name for p in Path("/tmp").glob("jailshim-demo.*")) == before
    assert "jailshim-demo" not in Path("/proc/self/mountinfo").read_text()


def _verify(
    script: str,
    drop_in: Path = SYSTEMD / "haproxy.service.d" / "jailshim.conf",
    unit: str = "haproxy.service",
) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify inside a private mount namespace where /usr/local/bin/jailshim
    exists (a stub) and /etc/systemd/system is a scratch tmpfs holding ``drop_in`` for
    ``unit``.service: nothing leaks to the host."""
    need(shutil.which("systemd-analyze") is not None, "needs systemd-analyze")
    prelude = (
        "set -e; mount -t tmpfs tmpfs /usr/local/bin; "
        "printf '#!/bin/sh\\n' > /usr/local/bin/jailshim; chmod 755 /usr/local/bin/jailshim; "
        f"mount -t tmpfs tmpfs /etc/systemd/system; mkdir '/etc/systemd/system/{unit}.d'; "
        f"cp {drop_in} '/etc/systemd/system/{unit}.d/jailshim.conf'; "
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", prelude + script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "drop_in",
    [SYSTEMD / "haproxy.service.d" / "jailshim.conf", SYSTEMD / "jailshim-prepare.conf"],
    ids=["execstart-run", "execstartpre-prepare"],
)
def test_example_units_verify_cleanly(root: None, drop_in: Path) -> None:
    """The unit and Debian's haproxy.service with each drop-in: no error, nothing on stderr
    (tests/test_systemd.py runs them under a real systemd)."""
    need(Path("/lib/systemd/system/haproxy.service").exists(), "needs Debian's haproxy.service")
    result = _verify(
        f"systemd-analyze verify {SYSTEMD}/jailshim-unbound.service haproxy.service", drop_in
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_named_drop_in_verifies_cleanly(root: None) -> None:
    """examples/systemd/named.service.d with Debian's named.service: no error, nothing on
    stderr (tests/test_named.py runs examples/named's jail and config with real named)."""
    need(Path("/lib/systemd/system/named.service").exists(), "needs Debian's named.service")
    drop_in = SYSTEMD / "named.service.d" / "jailshim.conf"
    result = _verify("systemd-analyze verify named.service", drop_in, unit="named.service")
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize(
    ("unit", "instance"),
    [
        ("nsd.service", "nsd.service"),
        ("stunnel@.service", "stunnel@x.service"),
        ("lighttpd.service", "lighttpd.service"),
        ("ntpsec.service", "ntpsec.service"),
        ("pdns-recursor.service", "pdns-recursor.service"),
        ("pdns.service", "pdns.service"),
        ("radvd.service", "radvd.service"),
        ("ssh.service", "ssh.service"),
        ("vsftpd.service", "vsftpd.service"),
        ("openvpn-server@.service", "openvpn-server@x.service"),
        ("privoxy.service", "privoxy.service"),
    ],
)
def test_daemon_drop_ins_verify_cleanly(root: None, unit: str, instance: str) -> None:
    """The nsd and stunnel drop-ins on Debian's own units: no error, nothing on stderr (they
    were run under systemd 252 by hand; examples/nsd and examples/stunnel say how)."""
    need(Path(f"/lib/systemd/system/{unit}").exists(), f"needs Debian's {unit}")
    result = _verify(
        f"systemd-analyze verify '{instance}'", SYSTEMD / f"{unit}.d" / "jailshim.conf", unit
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_verify_would_catch_a_bad_drop_in(root: None) -> None:
    """Control: the same set-up reports an unknown key in a drop-in, so the check can fail."""
    need(Path("/lib/systemd/system/haproxy.service").exists(), "needs Debian's haproxy.service")
    result = _verify(
        "printf '[Service]\\nBogusKey=1\\n' > /etc/systemd/system/haproxy.service.d/zz.conf; "
        "systemd-analyze verify haproxy.service"
    )
    assert "Unknown key 'BogusKey'" in result.stderr


# -- the daemon examples, run as their READMEs say ---------------------------------------------

# example -> (the stock directories its commands write to, its ports, the daemon it needs,
# what the daemon itself leaves in its jail once stopped and torn down: its README names each)
DAEMON_EXAMPLES = {
    "unbound": (("/etc/unbound", "/var/lib/unbound"), ("10053",), "unbound", ()),
    "nsd": (
        ("/etc/nsd", "/var/lib/nsd"),
        ("10054",),
        "nsd",
        ("nsd.db", "xfrd.state"),
    ),
    "stunnel": (("/etc/stunnel", "/var/lib/stunnel4"), ("10443", "10080"), "stunnel4", ()),
    "lighttpd": (("/etc/lighttpd", "/var/www"), ("10443",), "lighttpd", ("html/jailshim.html",)),
    "pdns-recursor": (
        ("/etc/powerdns", "/var/spool/powerdns"),
        ("10055",),
        "pdns_recursor",
        ("pdns_recursor.controlsocket",),
    ),
    "pdns-server": (
        ("/etc/powerdns", "/var/spool/powerdns"),
        ("10056",),
        "pdns_server",
        ("pdns.controlsocket",),
    ),
    "vsftpd": (("/srv/ftp", "/var/run/vsftpd/empty"), ("10021",), "vsftpd", ()),
    "privoxy": (
        ("/var/log/privoxy", "/etc/privoxy"),
        ("10118",),
        "privoxy",
        ("etc", "etc/privoxy", "jailshim.config"),
    ),
}
# a daemon that exits with the signal's number when Ctrl-C stops it (privoxy: exit(SIGINT))
SIGINT_EXITS = {"privoxy": "2"}
STOP_MARKER = "to stop:"  # a comment line: Ctrl-C ends the daemon; the commands below follow


def _readme_commands(example: str) -> list[tuple[str, str]]:
    """The first ```sh block of examples/EXAMPLE/README.md: (command, its `# …` comment); a
    comment line alone is ("", the comment)."""
    text = (REPO / "examples" / example / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = []
    for line in block.splitlines():
        if line.lstrip().startswith("#"):
            lines.append(("", line.strip().lstrip("# ").strip()))
            continue
        command, _, comment = line.partition("  #")
        if command.strip():
            lines.append((command.strip(), comment.strip().lstrip("# ").strip()))
    return lines


def _parse_readme(
    example: str, edit: Callable[[str], str] = str
) -> tuple[list[str], str, list[str], list[tuple[str, str]], list[str]]:
    """The README's commands as the test runs them: setup (before the start), the start
    (`jailshim run`), backends (`&`), clients (`# in another shell: EXPECTED`) and, after a
    `# to stop:` comment line (Ctrl-C then stops the daemon), the commands run once it has
    stopped (teardown). `systemctl` lines are for a real host and are passed over."""
    setup: list[str] = []
    start = ""
    backends: list[str] = []
    clients: list[tuple[str, str]] = []
    after: list[str] = []
    stopping = False
    for written, comment in _readme_commands(example):
        command = edit(written)
        if not command:
            stopping = stopping or comment.startswith(STOP_MARKER)
        elif command.startswith("systemctl ") or command.startswith("command -v systemctl"):
            continue
        elif stopping:
            after.append(command)
        elif command.startswith("jailshim run "):
            start = command
        elif command.endswith("&"):
            backends.append(command.rstrip("&").strip())
        elif "in another shell:" in comment:
            clients.append((command, comment.split("in another shell:", 1)[1].strip()))
        else:
            setup.append(command)
    return setup, start, backends, clients, after


def test_readme_parser_reads_the_stop_section() -> None:
    """The parser's convention on a block written for it: `# to stop:` starts what runs after
    the daemon has stopped; a `# in another shell:` client before it stays a client."""
    setup, start, backends, clients, after = _parse_readme("unbound")
    assert setup and start.startswith("jailshim run ") and not backends
    assert clients and after == ["jailshim teardown --chroot /var/lib/unbound"]


def _listening(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _poll(argv: list[str], expected: str, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 30
    seen = ""
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        seen = done.stdout
        if expected in seen:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{argv} never gave {expected!r}: {seen!r}")


def _entries(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


@pytest.mark.parametrize("example", sorted(DAEMON_EXAMPLES))
def test_daemon_example_works_as_its_readme_says(
    own_network: None, area: Path, example: str
) -> None:
    """examples/EXAMPLE/README.md's commands, run as written on Debian's stock layout (copies of
    the daemon's directories at their real paths in a private mount namespace, tests/stock.py)
    on the example's own ports, free in the test's own network namespace: the daemon answers
    the README's own client line with the answer its comment promises; Ctrl-C (SIGINT, as the
    README's `# to stop:` says) ends it, the README's commands after that (teardown) exit 0 in
    the same namespace, the jail's dev/ is gone and what stays in the jail is what the README
    names; the host's directories are left as they were."""
    stock, ports, daemon, leaves = DAEMON_EXAMPLES[example]
    need(shutil.which(daemon) is not None, f"needs {daemon} (scripts/bootstrap.sh installs it)")
    need(all(Path(p).is_dir() for p in stock), f"needs Debian's {', '.join(stock)}")
    for tool in ("kdig", "openssl"):
        need(shutil.which(tool) is not None, f"needs {tool}")
    copy = area / example
    copy.mkdir(mode=0o755)
    for source in (REPO / "examples" / example).iterdir():
        (copy / source.name).write_text(source.read_text())
    setup, start, backends, clients, after = _parse_readme(example)
    assert start and clients and after, _readme_commands(example)
    readme = (REPO / "examples" / example / "README.md").read_text()
    assert all(name in readme for name in leaves), leaves
    host_before = host_state(stock)
    binds = {path: copy_of(path, area) for path in stock}
    jail = binds[stock[1]]
    jail_before = _entries(jail)
    bin_dir = os.path.dirname(sys.executable)  # this tree's `jailshim`
    pidfile = area / "daemon.pid"
    # the start in the background of the namespace's shell, so that what follows the stop
    # runs in the same namespace (teardown must find the mounts jailshim made there)
    steps = [
        f"cd {copy}",
        "set -e",
        *setup,
        f"{start} & echo $! > {pidfile}",
        "status=0; wait $! || status=$?",
        'echo "example-daemon-exit=$status" >&2',
        *after,
    ]
    env = {**clean_env(), "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
    # A backend (stunnel's `python3 -m http.server`) serves its working directory: an empty one
    # of its own, not the test's area, which holds the copies of /etc/stunnel (its key once the
    # README's openssl line has run); and it listens in the test's own network namespace,
    # which no other local user's process can connect into.
    served = area / "served"
    served.mkdir(mode=0o700)
    started = [subprocess.Popen(shlex.split(b), cwd=served) for b in backends]
    proc = spawn(in_stock_layout(binds, ["sh", "-c", "; ".join(steps)], userns=False), env)
    stderr = ""
    try:
        for port in ports:  # listening (kdig's first try would wait out 5 s)
            _listening(int(port), proc)
        for command, expected in clients:
            _poll(["sh", "-c", f"timeout 10 {command}"], expected, proc)
        for backend in started:  # it served only its own directory, in the test's namespace
            assert os.readlink(f"/proc/{backend.pid}/cwd") == str(served)
            assert os.stat(f"/proc/{backend.pid}/ns/net").st_ino != SHARED_NETWORK
        pid = int(pidfile.read_text())
        pinned = pids.pin(pid)  # pinned first, then proven ours: the signal reaches only it
        assert pinned is not None
        assert pid in descendants(proc.pid)  # ours: the daemon, by the PID its shell gave
        try:
            pids.send(pinned, signal.SIGINT)  # Ctrl-C, as the README says
        finally:
            pids.close([pinned])
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None or not stderr:
            _, stderr = stop(proc)
        for backend in started:
            backend.terminate()
            backend.wait(timeout=10)
    assert "Traceback" not in stderr
    assert proc.returncode == 0, stderr  # each command after the stop exited 0 (set -e)
    exits = [ln.split("=", 1)[1] for ln in stderr.splitlines() if "example-daemon-exit=" in ln]
    stopped = ("0", "130", SIGINT_EXITS.get(example, "0"))
    assert exits and exits[0] in stopped, stderr  # stopped by the SIGINT, not killed
    read = [json.loads(ln) for ln in stderr.splitlines() if '.config"' in ln]
    assert read and read[0]["chroot"] == stock[1], stderr
    assert not (jail / "dev").exists(), _entries(jail)
    # the README's own files copied into the jail (nsd's zone) are the reader's, not left over
    copied = {
        Path(c.split()[1]).name for c in setup if c.startswith("cp ") and stock[1] in c.split()[-1]
    }
    assert _entries(jail) - jail_before - copied == set(leaves), stderr
    assert host_state(stock) == host_before
