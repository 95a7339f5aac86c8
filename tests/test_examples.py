"""The README's demo and the example units, run as an operator would."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemons import free_port
from tests.support import TESTS, need

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
    unit: str = "haproxy",
) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify inside a private mount namespace where /usr/local/bin/jailshim
    exists (a stub) and /etc/systemd/system is a scratch tmpfs holding ``drop_in`` for
    ``unit``.service: nothing leaks to the host."""
    need(shutil.which("systemd-analyze") is not None, "needs systemd-analyze")
    prelude = (
        "set -e; mount -t tmpfs tmpfs /usr/local/bin; "
        "printf '#!/bin/sh\\n' > /usr/local/bin/jailshim; chmod 755 /usr/local/bin/jailshim; "
        f"mount -t tmpfs tmpfs /etc/systemd/system; mkdir /etc/systemd/system/{unit}.service.d; "
        f"cp {drop_in} /etc/systemd/system/{unit}.service.d/jailshim.conf; "
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
    result = _verify("systemd-analyze verify named.service", drop_in, unit="named")
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_verify_would_catch_a_bad_drop_in(root: None) -> None:
    """Control: the same set-up reports an unknown key in a drop-in, so the check can fail."""
    need(Path("/lib/systemd/system/haproxy.service").exists(), "needs Debian's haproxy.service")
    result = _verify(
        "printf '[Service]\\nBogusKey=1\\n' > /etc/systemd/system/haproxy.service.d/zz.conf; "
        "systemd-analyze verify haproxy.service"
    )
    assert "Unknown key 'BogusKey'" in result.stderr
