"""The README's demo and the example units, run as an operator would."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemons import free_port, stop
from tests.stock import copy_of, host_state, in_stock_layout
from tests.support import TESTS, clean_env, need, spawn

REPO = TESTS.parent
SYSTEMD = REPO / "examples" / "systemd"


@pytest.mark.slow
def test_demo_smoke_makes_a_real_dot_query(root: None) -> None:
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
    [("nsd.service", "nsd.service"), ("stunnel@.service", "stunnel@x.service")],
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

# example -> (the stock directories its commands write to, its ports, the daemon it needs)
DAEMON_EXAMPLES = {
    "unbound": (("/etc/unbound", "/var/lib/unbound"), ("10053",), "unbound"),
    "nsd": (("/etc/nsd", "/var/lib/nsd"), ("10054",), "nsd"),
    "stunnel": (("/etc/stunnel", "/var/lib/stunnel4"), ("10443", "10080"), "stunnel4"),
}


def _readme_commands(example: str) -> list[tuple[str, str]]:
    """The first ```sh block of examples/EXAMPLE/README.md: (command, its `# …` comment)."""
    text = (REPO / "examples" / example / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = []
    for line in block.splitlines():
        command, _, comment = line.partition("  #")
        if command.strip():
            lines.append((command.strip(), comment.strip().lstrip("# ").strip()))
    return lines


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


@pytest.mark.parametrize("example", sorted(DAEMON_EXAMPLES))
def test_daemon_example_works_as_its_readme_says(area: Path, example: str) -> None:
    """examples/EXAMPLE/README.md's commands, run as written on Debian's stock layout (copies of
    the daemon's directories at their real paths in a private mount namespace, tests/stock.py)
    with the example's ports moved to free ones: the daemon answers the README's own client
    line with the answer its comment promises, and the host's directories are left as they
    were. `systemctl` lines are for a real host and are passed over."""
    stock, ports, daemon = DAEMON_EXAMPLES[example]
    need(shutil.which(daemon) is not None, f"needs {daemon} (scripts/bootstrap.sh installs it)")
    need(all(Path(p).is_dir() for p in stock), f"needs Debian's {', '.join(stock)}")
    for tool in ("kdig", "openssl"):
        need(shutil.which(tool) is not None, f"needs {tool}")
    moved = {port: str(free_port()) for port in ports}

    def moved_ports(text: str) -> str:
        for old, new in moved.items():
            text = text.replace(old, new)
        return text

    copy = area / example
    copy.mkdir(mode=0o755)
    for source in (REPO / "examples" / example).iterdir():
        (copy / source.name).write_text(moved_ports(source.read_text()))
    setup, start, backends, clients = [], "", [], []
    for written, comment in _readme_commands(example):
        command = moved_ports(written)
        if command.startswith("systemctl "):
            continue
        if command.startswith("jailshim run "):
            start = command
        elif command.endswith("&"):
            backends.append(command.rstrip("&").strip())
        elif "in another shell:" in comment:
            clients.append((command, comment.split("in another shell:", 1)[1].strip()))
        else:
            setup.append(command)
    assert start and clients, _readme_commands(example)
    host_before = host_state(stock)
    binds = {path: copy_of(path, area) for path in stock}
    bin_dir = os.path.dirname(sys.executable)  # this tree's `jailshim`
    script = f"cd {copy}; set -e; {'; '.join(setup)}; exec {start}"
    env = {**clean_env(), "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
    started = [subprocess.Popen(shlex.split(b), cwd=area) for b in backends]
    proc = spawn(in_stock_layout(binds, ["sh", "-c", script], userns=False), env)
    try:
        for port in moved.values():  # listening (kdig's first try would wait out 5 s)
            _listening(int(port), proc)
        for command, expected in clients:
            _poll(["sh", "-c", f"timeout 10 {command}"], expected, proc)
    finally:
        _, stderr = stop(proc)
        for backend in started:
            backend.terminate()
            backend.wait(timeout=10)
    assert "Traceback" not in stderr
    read = [json.loads(ln) for ln in stderr.splitlines() if '.config"' in ln]
    assert read and read[0]["chroot"] == stock[1], stderr
    assert host_state(stock) == host_before
