"""The systemd examples under a real systemd as PID 1: Debian's haproxy.service with jailshim's
drop-ins, in a podman container (--systemd=always --network=none), a fresh one per case.

The image (tests/podman/Containerfile.systemd) is built once per session from the debootstrap
base the container tests use; its package layer stays in podman's cache between runs. Debian's
unit has BindReadOnlyPaths=, so systemd gives each Exec* command its own mount namespace: the
case this module exists for (a bind made in ExecStartPre= is gone before ExecStart=).
Containers carry this pytest's PID in their names, like those of tests/test_containers.py, and
are removed afterwards, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import test_containers as tc
from tests.daemons import make_certificate
from tests.support import TESTS, need

pytestmark = pytest.mark.slow

SYSTEMD_IMAGE = "localhost/jailshim-systemd:test"
EXAMPLES = tc.REPO / "examples" / "systemd"
RUN_DROP_IN = EXAMPLES / "haproxy.service.d" / "jailshim.conf"
PREPARE_DROP_IN = EXAMPLES / "jailshim-prepare.conf"
NODEV = "--tmpfs=/var/lib/haproxy:rw,nosuid,nodev,mode=0755"
ANSWER = "TLSv1.3 hello.demo.jailshim A 192.0.2.53"
# What systemd itself leaves in the jail: the mount point of BindReadOnlyPaths=/dev/log.
SYSTEMD_MADE = {"dev": "d 755 0", "dev/log": "f 644 0"}


@dataclass(frozen=True)
class Env:
    podman: tc.Podman
    directory: Path  # 0755, mounted at /t: the drop-ins and the DNS tool
    certificate: Path


@pytest.fixture(scope="session")
def env() -> Iterator[Env]:
    """The systemd image (built once) and a 0755 directory with what containers mount."""
    need(os.geteuid() == 0, "needs root")
    for tool in ("podman", "runc", "debootstrap"):
        need(shutil.which(tool) is not None, f"needs {tool} (scripts/bootstrap.sh installs it)")
    directory = tc._scratch_dir(tc.SHARED_PREFIX)
    try:
        for source in (
            TESTS / "podman" / "containers.conf",
            TESTS / "podman" / "dns_tool.py",
        ):
            shutil.copyfile(source, directory / source.name)
        shutil.copytree(tc.REPO / "examples", directory / "examples")
        shutil.copyfile(RUN_DROP_IN, directory / "run.conf")
        shutil.copyfile(PREPARE_DROP_IN, directory / "prepare.conf")
        pem = make_certificate(directory)
        for path in directory.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        podman = tc.Podman(directory / "containers.conf")
        tc._remove_containers(podman, ours=False)
        try:
            if podman("image", "exists", tc.BASE, check=False).returncode != 0:
                tc._import_base(podman)
            podman(
                *("build", "-q", "--build-arg", f"BASE={tc.BASE}", "-t", SYSTEMD_IMAGE),
                *("-f", str(TESTS / "podman" / "Containerfile.systemd"), str(tc.REPO)),
                timeout=900,
            )
            yield Env(podman, directory, pem)
        finally:
            tc._remove_containers(podman, ours=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _systemd(env: Env, *extra: str) -> Iterator[str]:
    """A fresh container with systemd as PID 1, booted; removed afterwards whatever happens."""
    name = tc._container_name()
    try:
        env.podman(
            *("run", "-d", "--systemd=always", "--network=none", "--name", name),
            # SYS_ADMIN: haproxy.service's BindReadOnlyPaths= (else 226/NAMESPACE);
            # SYS_PTRACE: reading /proc/PID/root of the unit's processes from podman exec.
            *("--cap-add=SYS_ADMIN", "--cap-add=SYS_PTRACE", *extra),
            *(
                "-v",
                f"{env.directory}:/t:ro",
                "-v",
                f"{env.certificate}:/etc/haproxy/certs/dot.pem:ro",
            ),
            SYSTEMD_IMAGE,
        )
        deadline = time.monotonic() + 120  # until systemd listens, systemctl cannot ask it
        while (state := _sh(env, name, "systemctl is-system-running --wait", check=False)) in (
            "",
            "offline\n",
        ):
            assert time.monotonic() < deadline, "systemd did not come up"
            time.sleep(0.2)
        assert state.strip() in {"running", "degraded"}, state
        yield name
    finally:
        env.podman("rm", "-f", "-t", "0", name, check=False, timeout=120)


def _sh(env: Env, name: str, script: str, *, check: bool = True, timeout: float = 120) -> str:
    result = env.podman("exec", name, "sh", "-c", script, check=check, timeout=timeout)
    return result.stdout.decode()


def _install(env: Env, name: str, drop_in: str) -> None:
    _sh(
        env,
        name,
        f"cp /t/{drop_in} /etc/systemd/system/haproxy.service.d/jailshim.conf"
        " && systemctl daemon-reload",
    )


def _jail(env: Env, name: str) -> dict[str, str]:
    """Every entry below the jail: type, mode, owner (mount points as their top)."""
    out = _sh(env, name, "cd /var/lib/haproxy && find . -mindepth 1 -printf '%P %y %m %U\\n'")
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()}


def _events(env: Env, name: str) -> list[dict[str, Any]]:
    """jailshim's JSON events in the unit's journal."""
    out = _sh(env, name, "journalctl -u haproxy -o cat --no-pager")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _assert_torn_down(env: Env, name: str, before: dict[str, str]) -> None:
    """After `systemctl stop`: the jail as before start, plus only systemd's mount point."""
    after = _jail(env, name)
    expected = before | {k: v for k, v in SYSTEMD_MADE.items() if k not in before}
    events = [e for e in _events(env, name) if e.get("command") == "teardown"]
    assert events and not any(e["level"] == "error" for e in events), events
    # ExecStopPost's namespace is a fresh one: the namespaces of ExecStartPre/ExecStart are gone
    # and must be seen to be (records carry their PID namespace), not kept as "shared".
    assert not any(e["event"] == "teardown.shared" for e in events), events
    assert after == expected, events


def _worker(env: Env, name: str) -> int:
    """The PID of haproxy's (one) worker: the child of the unit's main process."""
    script = (
        "main=$(systemctl show -p MainPID --value haproxy); for p in /proc/[0-9]*; do "
        '[ "$(cat $p/comm)" = haproxy ] && grep -q "^PPid:[[:space:]]*$main$" $p/status '
        "&& echo ${p#/proc/}; done; true"
    )
    deadline = time.monotonic() + 30
    while True:
        pids = _sh(env, name, script).split()
        if len(pids) == 1:
            return int(pids[0])
        assert time.monotonic() < deadline, f"haproxy workers: {pids}"
        time.sleep(0.2)


def _assert_jailed(env: Env, name: str) -> int:
    """The worker's root is the jail and its dev/urandom is the character device 1:9."""
    pid = _worker(env, name)
    out = _sh(
        env, name, f"readlink /proc/{pid}/root; stat -c '%F %t:%T' /proc/{pid}/root/dev/urandom"
    )
    assert out.splitlines() == ["/var/lib/haproxy", "character special file 1:9"], out
    return pid


def _query(env: Env, name: str) -> str:
    result = env.podman(
        *("exec", name, "python3", "/t/dns_tool.py", "query", "853", "hello.demo.jailshim"),
        check=False,
        timeout=60,
    )
    return result.stdout.decode().strip()


@pytest.mark.parametrize(
    ("extra", "strategy"),
    [([], "mknod"), ([NODEV], "bind")],
    ids=["mknod-jail", "nodev-jail"],
)
def test_run_drop_in_serves_reloads_and_tears_down(
    env: Env, extra: list[str], strategy: str
) -> None:
    """Debian's haproxy.service + the ExecStart=jailshim run drop-in: active, the worker jailed
    with urandom 1:9 (mknod, or binds on a nodev jail), a DoT answer, reload keeps it serving
    and jailed, stop leaves the jail as before, jailshim's JSON events in the journal."""
    with _systemd(env, *extra) as name:
        before = _jail(env, name)
        _install(env, name, "run.conf")
        _sh(env, name, "systemctl start haproxy")
        assert _sh(env, name, "systemctl is-active haproxy").strip() == "active"
        first = _assert_jailed(env, name)
        env.podman("exec", "-d", name, "python3", "/t/dns_tool.py", "serve", "5300")
        assert _query(env, name) == ANSWER
        events = _events(env, name)
        devices = [e for e in events if e["event"] == "device"]
        assert {e["device"] for e in devices} >= {"urandom", "random"}, devices
        assert {e["strategy"] for e in devices} == {strategy}, devices
        assert any(e["event"] == "checked" for e in events)
        assert any(e["event"] == "handover" and e["mode"] == "exec" for e in events)

        _sh(env, name, "systemctl reload haproxy")  # -Ws: the master re-execs, new worker
        deadline = time.monotonic() + 30
        while _assert_jailed(env, name) == first:
            assert time.monotonic() < deadline, "no new worker after the reload"
            time.sleep(0.2)
        assert _query(env, name) == ANSWER

        _sh(env, name, "systemctl stop haproxy")
        _assert_torn_down(env, name, before)
        if strategy == "bind":  # ExecStopPost's fresh namespace: the binds are already gone
            # The kernel may give ExecStopPost's namespace the inode number ExecStart's had (its
            # records then look like this namespace's: "unbind … already gone") or another one
            # (a namespace provably gone: its records are dropped silently); both are right,
            # and which one happens depends on what else made namespaces in the container.
            teardown = [e for e in _events(env, name) if e.get("command") == "teardown"]
            unbinds = [e for e in teardown if str(e.get("step", "")).startswith("unbind")]
            assert all(e.get("outcome") == "already gone" for e in unbinds), teardown


def test_prepare_drop_in_works_where_mknod_does(env: Env) -> None:
    """The ExecStartPre=jailshim prepare drop-in on a jail that takes device nodes: active,
    the worker jailed with urandom 1:9, and stop removes the nodes again."""
    with _systemd(env) as name:
        before = _jail(env, name)
        _install(env, name, "prepare.conf")
        _sh(env, name, "systemctl start haproxy")
        _assert_jailed(env, name)
        _sh(env, name, "systemctl stop haproxy")
        _assert_torn_down(env, name, before)


def test_prepare_drop_in_on_a_nodev_jail_fails_the_start(env: Env) -> None:
    """The ExecStartPre drop-in where only binds would work: `systemctl start` fails at once,
    exit 77 with jailshim's sentence naming ExecStart=jailshim run, haproxy never runs."""
    with _systemd(env, NODEV) as name:
        before = _jail(env, name)
        _install(env, name, "prepare.conf")
        started = time.monotonic()
        result = env.podman("exec", name, "systemctl", "start", "haproxy", check=False)
        assert result.returncode != 0, result
        assert time.monotonic() - started < 30
        failed = [e for e in _events(env, name) if e["event"] == "failed"]
        assert failed and failed[0]["exit_code"] == 77, failed
        assert "ExecStart=jailshim run -- DAEMON" in failed[0]["error"]
        journal = _sh(env, name, "journalctl -u haproxy -o cat --no-pager")
        assert "status=77/NOPERM" in journal and "New worker" not in journal, journal
        assert _jail(env, name) == before | SYSTEMD_MADE


def _main_pid_jailed(env: Env, name: str, unit: str) -> tuple[str, str]:
    """The unit's main process: its root and its real, effective, saved and fs uids."""
    out = _sh(
        env,
        name,
        f"p=$(systemctl show -p MainPID --value '{unit}'); readlink /proc/$p/root; "
        "grep ^Uid: /proc/$p/status | cut -f2-",
    )
    root, uids = out.splitlines()
    return root, uids


def test_daemon_examples_run_under_systemd(env: Env) -> None:
    """The unbound unit and the nsd and stunnel drop-ins, installed on Debian's stock packages
    as examples/*/README.md say: each unit is active — the Type=notify ones (unbound, nsd) only
    once READY=1 came from inside their chroot — answers its client, runs chrooted as its own
    user, and `systemctl stop` takes back what jailshim made."""
    ex = "/t/examples"
    with _systemd(env) as name:
        uid = {u: _sh(env, name, f"id -u {u}").strip() for u in ("unbound", "nsd", "stunnel4")}
        _sh(
            env,
            name,
            f"cp {ex}/unbound/unbound-jailed.conf /etc/unbound/ && "
            f"cp {ex}/systemd/jailshim-unbound.service /etc/systemd/system/ && "
            "systemctl daemon-reload && systemctl start jailshim-unbound",
        )
        assert _sh(env, name, "kdig @127.0.0.1 -p 10053 localhost A +short") == "127.0.0.1\n"
        assert _main_pid_jailed(env, name, "jailshim-unbound") == (
            "/var/lib/unbound",
            "\t".join([uid["unbound"]] * 4),
        )
        journal = _sh(env, name, "journalctl -u jailshim-unbound -o cat --no-pager")
        notify = [json.loads(ln) for ln in journal.splitlines() if '"notify socket"' in ln]
        assert notify and notify[0]["ok"], journal
        _sh(env, name, "systemctl stop jailshim-unbound")
        assert _sh(env, name, "find /var/lib/unbound -mindepth 1") == ""

        _sh(
            env,
            name,
            "mkdir -p /etc/systemd/system/nsd.service.d && "
            f"cp {ex}/systemd/nsd.service.d/jailshim.conf /etc/systemd/system/nsd.service.d/ && "
            f"cp {ex}/nsd/jailshim.conf /etc/nsd/nsd.conf.d/ && "
            f"cp {ex}/nsd/jailshim.test.zone /var/lib/nsd/ && "
            "systemctl daemon-reload && systemctl start nsd",
        )
        answer = _sh(env, name, "kdig @127.0.0.1 -p 10054 www.jailshim.test A +short")
        assert answer == "192.0.2.80\n"
        assert _main_pid_jailed(env, name, "nsd") == (
            "/var/lib/nsd",
            "\t".join([uid["nsd"]] * 4),
        )
        _sh(env, name, "systemctl stop nsd")
        # what is left is systemd's own: the mount points of the unit's BindReadOnlyPaths=
        left = _sh(env, name, "find /var/lib/nsd/dev /var/lib/nsd/run -mindepth 1")
        assert sorted(left.split()) == [
            "/var/lib/nsd/dev/log",
            "/var/lib/nsd/run/systemd",
            "/var/lib/nsd/run/systemd/notify",
        ]

        _sh(
            env,
            name,
            "mkdir -p /etc/systemd/system/stunnel@.service.d && "
            f"cp {ex}/systemd/stunnel@.service.d/jailshim.conf "
            "/etc/systemd/system/stunnel@.service.d/ && "
            f"cp {ex}/stunnel/jailshim.conf /etc/stunnel/ && "
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 "
            "-subj /CN=localhost -keyout /etc/stunnel/jailshim-key.pem "
            "-out /etc/stunnel/jailshim-cert.pem 2>/dev/null && "
            "systemctl daemon-reload && systemctl start stunnel@jailshim",
        )
        env.podman(
            "exec",
            "-d",
            "-w",
            "/tmp",
            name,
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "10080",
        )
        reply = _sh(
            env,
            name,
            "for i in $(seq 50); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 "
            "openssl s_client -quiet -connect 127.0.0.1:10443 2>/dev/null | head -1 | "
            "grep . && break; sleep 0.1; done",
        )
        assert reply.startswith("HTTP/1.0 200 OK"), reply
        root, uids = _main_pid_jailed(env, name, "stunnel@jailshim")
        assert (root, uids) == ("/var/lib/stunnel4", "\t".join([uid["stunnel4"]] * 4))


def _until(env: Env, name: str, probe: str, tries: int = 100) -> str:
    """``probe``'s output once it prints something: a Type=simple unit is "started" before
    its daemon listens. Bounded (tries times 0.1 s), then the last empty answer."""
    return _sh(env, name, f"for i in $(seq {tries}); do {probe} && break; sleep 0.1; done; true")


def _drop_in(env: Env, name: str, unit: str, setup: str, start: str = "") -> None:
    """``unit``'s drop-in from examples/systemd/, ``setup``, then `systemctl start` (``start``:
    a template's instance)."""
    ex = "/t/examples"
    _sh(
        env,
        name,
        f"mkdir -p /etc/systemd/system/{unit}.service.d && "
        f"cp {ex}/systemd/{unit}.service.d/jailshim.conf /etc/systemd/system/{unit}.service.d/ && "
        f"{setup} && systemctl daemon-reload && systemctl start {start or unit}",
    )


# Connects to vsftpd on port 21 and, while the connection is open, prints the banner and, for
# each vsftpd process chrooted somewhere, its root and uids: the pre-login process of that
# connection (a grandchild of the unit's main process). Silent when nothing listens yet.
_PRE_LOGIN = (
    "import os, socket\n"
    "try:\n"
    '    s = socket.create_connection(("127.0.0.1", 21), timeout=5)\n'
    "except OSError:\n"
    "    raise SystemExit(1)\n"
    "print(s.makefile().readline().strip())\n"
    'for p in filter(str.isdigit, os.listdir("/proc")):\n'
    "    try:\n"
    '        root = os.readlink(f"/proc/{p}/root")\n'
    '        status = open(f"/proc/{p}/status").read().splitlines()\n'
    "    except OSError:\n"
    "        continue\n"
    '    if root != "/" and status[0] == "Name:\\tvsftpd":\n'
    "        print(root)\n"
    '        print([ln for ln in status if ln.startswith("Uid:")][0].split(None, 1)[1])\n'
)


def test_long_tail_drop_ins_run_under_systemd(env: Env) -> None:
    """The lighttpd, pdns-recursor and vsftpd drop-ins on Debian's own units (lighttpd's and
    vsftpd's as shipped, pdns-recursor's Type=notify one), installed as examples/*/README.md
    say: each unit is active, answers its client from the jail jailshim prepared, as its own
    user, and `systemctl stop` takes back what jailshim made."""
    ex = "/t/examples"
    with _systemd(env) as name:
        uid = {u: _sh(env, name, f"id -u {u}").strip() for u in ("www-data", "pdns", "nobody")}

        # lighttpd: README's "add server.chroot to lighttpd.conf" is the example's whole file
        _drop_in(
            env,
            name,
            "lighttpd",
            f"cp {ex}/lighttpd/jailshim.conf /etc/lighttpd/lighttpd.conf && "
            f"mkdir -p /var/www/html && cp {ex}/lighttpd/jailshim.html /var/www/html/ && "
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 "
            "-subj /CN=localhost -keyout /etc/lighttpd/jailshim-key.pem "
            "-out /etc/lighttpd/jailshim-cert.pem 2>/dev/null",
        )
        page = _until(env, name, "curl -sfk https://127.0.0.1:10443/jailshim.html")
        assert page == _sh(env, name, f"cat {ex}/lighttpd/jailshim.html") != "", page
        assert _main_pid_jailed(env, name, "lighttpd") == (
            "/var/www",
            "\t".join([uid["www-data"]] * 4),
        )
        _sh(env, name, "systemctl stop lighttpd")
        assert (
            _sh(env, name, "find /var/www -mindepth 1 -path '/var/www/html*' -prune -o -print")
            == ""
        )

        # pdns-recursor: the drop-in makes the unit Type=simple and starts jailshim as root
        _drop_in(
            env,
            name,
            "pdns-recursor",
            f"cp {ex}/pdns-recursor/jailshim.conf /etc/powerdns/recursor.d/",
        )
        answer = _until(
            env, name, "kdig @127.0.0.1 -p 10055 +short +timeout=1 +retry=0 localhost A | grep ."
        )
        assert answer == "127.0.0.1\n", _sh(
            env, name, "systemctl status pdns-recursor; journalctl -u pdns-recursor -o cat"
        )
        root, uids = _main_pid_jailed(env, name, "pdns-recursor")
        assert (root, uids) == ("/var/spool/powerdns", "\t".join([uid["pdns"]] * 4))
        _sh(env, name, "systemctl stop pdns-recursor")
        # the control socket is the recursor's own (socket-dir=/); the rest was jailshim's:
        # dev/ and the hint and trust-anchor files it reads again inside (usr/share/dns)
        left = _sh(env, name, "find /var/spool/powerdns -mindepth 1")
        assert left == "/var/spool/powerdns/pdns_recursor.controlsocket\n", left

        # vsftpd: Debian's stock /etc/vsftpd.conf (port 21, on lo only: --network=none); a
        # connection's pre-login process is chrooted in secure_chroot_dir as nopriv_user
        _drop_in(env, name, "vsftpd", "true")
        banner_and_jail = _until(env, name, f"python3 -c '{_PRE_LOGIN}'")
        banner, root, uids = banner_and_jail.splitlines()[:3]
        assert banner.startswith("220 (vsFTPd 3."), banner_and_jail
        # /var/run is a link to /run: the kernel names the root by its real path
        assert (root, uids) == ("/run/vsftpd/empty", "\t".join([uid["nobody"]] * 4))
        _sh(env, name, "systemctl stop vsftpd")
        assert _sh(env, name, "find /var/run/vsftpd/empty -mindepth 1") == ""


# Prints, for each process chrooted in the sftp jail, its root and its uids: the session's
# processes (the jailed user's sshd and internal-sftp), while an sftp batch waits 5 s to run.
_SFTP_SESSION = (
    "cd /root && (sleep 5; echo 'ls files') | sftp -b - -i sftpdemo_key "
    "-o StrictHostKeyChecking=accept-new -P 10022 sftpdemo@127.0.0.1 > /tmp/sftp.out 2>&1 & "
    "for i in $(seq 45); do sleep 0.1; for p in /proc/[0-9]*; do "
    'r=$(readlink $p/root 2>/dev/null) || continue; [ "$r" = /srv/sftp/sftpdemo ] && '
    'echo "$r $(grep ^Uid: $p/status | cut -f2-)"; done | sort -u | grep . && break; done; '
    "wait; cat /tmp/sftp.out"
)


# examples/openvpn/README.md's commands: Debian's sample server.conf with user, group and jail
# changed, its keys made with openssl; then a client certificate of the same CA.
_OPENVPN_SERVER = " && ".join(
    [
        "cd /etc/openvpn/server",
        "cp /usr/share/doc/openvpn/examples/sample-config-files/server.conf .",
        "sed -i -e 's/^;user openvpn/user nobody/' "
        "-e 's/^;group openvpn/group nogroup\\nchroot jail/' server.conf",
        *(
            f"openssl req {x509} -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            f"-keyout {who}.key -out {out} -subj /CN={cn} 2>/dev/null"
            for x509, who, out, cn in (
                ("-x509 -days 365", "ca", "ca.crt", "example-ca"),
                ("", "server", "server.csr", "server"),
                ("", "client", "client.csr", "client"),
            )
        ),
        *(
            f"printf 'extendedKeyUsage={usage}\\nkeyUsage=digitalSignature,keyAgreement\\n' "
            f"> {who}.ext && openssl x509 -req -in {who}.csr -CA ca.crt -CAkey ca.key "
            f"-CAcreateserial -out {who}.crt -days 365 -extfile {who}.ext 2>/dev/null"
            for who, usage in (("server", "serverAuth"), ("client", "clientAuth"))
        ),
        "openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out dh2048.pem",
        "mkdir -p jail/tmp /var/log/openvpn && chmod 1777 jail/tmp",
    ]
)
_OPENVPN_CLIENT = (
    "exec nsenter --net=/run/netns/client "
    "openvpn --client --dev tun --proto udp --nobind --remote 192.0.2.1 1194 "
    "--ca ca.crt --cert client.crt --key client.key --remote-cert-tls server --verb 3 "
    "--connect-retry 1"
)

# The client's network namespace, /run/netns/client, joined to the container's by a veth pair:
# vpn0 192.0.2.1/24 here (where the server listens on 0.0.0.0:1194), vpn1 192.0.2.2/24 there.
_CLIENT_NETNS = """
from pyroute2 import IPRoute, NetNS
ns = NetNS("client", flags=0o100)  # O_CREAT
ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
with IPRoute() as ip:
    ip.link("add", ifname="vpn0", kind="veth", peer="vpn1")
    here = ip.link_lookup(ifname="vpn0")[0]
    ip.addr("add", index=here, address="192.0.2.1", prefixlen=24)
    ip.link("set", index=here, state="up")
    ip.link("set", index=ip.link_lookup(ifname="vpn1")[0], net_ns_fd="client")
there = ns.link_lookup(ifname="vpn1")[0]
ns.addr("add", index=there, address="192.0.2.2", prefixlen=24)
ns.link("set", index=there, state="up")
ns.close()
"""
# One ICMP echo request to argv[1]; exit 0 on its reply within a second (the image has no ping;
# tests/test_openvpn.py's echo_reply, run in the container).
_ECHO = """
import select, socket, struct, sys, time
def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
payload = b"jailshim-openvpn"
header = struct.pack("!BBHHH", 8, 0, 0, 4242, 1)
packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), 4242, 1) + payload
with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
    try:
        s.sendto(packet, (sys.argv[1], 0))
    except OSError:  # no route yet: the client's tun is not up
        raise SystemExit(1)
    deadline = time.monotonic() + 1
    while (left := deadline - time.monotonic()) > 0 and select.select([s], [], [], left)[0]:
        data, (source, _) = s.recvfrom(2048)
        icmp = data[(data[0] & 0x0F) * 4 :]
        if source == sys.argv[1] and icmp[0] == 0 and icmp[8:] == payload:
            raise SystemExit(0)
raise SystemExit(1)
"""


def test_more_long_tail_drop_ins_run_under_systemd(env: Env) -> None:
    """The pdns, privoxy, ssh and openvpn-server@ drop-ins on Debian's own units, installed as
    examples/*/README.md say: each unit is active, a real client is answered from the jail
    jailshim prepared, the serving process's root is the jail and its uids the daemon's user's,
    and `systemctl stop` takes back what jailshim made (ExecStopPost=jailshim teardown)."""
    ex = "/t/examples"
    need(Path("/dev/net/tun").exists(), "needs /dev/net/tun (the tun module) for openvpn")
    # openvpn-server@.service opens /dev/net/tun and configures it (netlink): both from podman
    with _systemd(env, "--device=/dev/net/tun", "--cap-add=NET_ADMIN") as name:
        uid = {u: _sh(env, name, f"id -u {u}").strip() for u in ("pdns", "privoxy", "nobody")}

        # pdns: the drop-in makes Debian's Type=notify unit Type=simple, started as root
        _drop_in(
            env,
            name,
            "pdns",
            f"cp {ex}/pdns-server/jailshim.conf /etc/powerdns/pdns.d/ && "
            f"cp {ex}/pdns-server/named.conf {ex}/pdns-server/jailshim.test.zone "
            "/var/spool/powerdns/",
        )
        answer = _until(
            env,
            name,
            "kdig @127.0.0.1 -p 10056 +short +timeout=1 +retry=0 www.jailshim.test A | grep .",
        )
        assert answer == "192.0.2.80\n", _sh(env, name, "journalctl -u pdns -o cat --no-pager")
        root, uids = _main_pid_jailed(env, name, "pdns")
        assert (root, uids) == ("/var/spool/powerdns", "\t".join([uid["pdns"]] * 4))
        _sh(env, name, "systemctl stop pdns")
        # what stays: the example's files and the server's own control socket (socket-dir=/)
        left = _sh(env, name, "find /var/spool/powerdns -mindepth 1 | sort")
        assert left.split() == [
            "/var/spool/powerdns/jailshim.test.zone",
            "/var/spool/powerdns/named.conf",
            "/var/spool/powerdns/pdns.controlsocket",
        ], left

        # privoxy: Debian's stock config (127.0.0.1:8118), the jail's layout as the README says
        before = _sh(env, name, "find /etc/privoxy | sort")
        _drop_in(
            env,
            name,
            "privoxy",
            "mkdir -p /etc/privoxy/etc /etc/privoxy/var/log/privoxy && "
            "ln -s .. /etc/privoxy/etc/privoxy && "
            "chown privoxy:adm /etc/privoxy/var/log/privoxy && "
            "chmod 2750 /etc/privoxy/var/log/privoxy",
        )
        env.podman(
            *("exec", "-d", "-w", "/tmp", name),
            *("python3", "-m", "http.server", "--bind", "127.0.0.1", "10080"),
        )
        page = _until(env, name, "curl -sf -x http://127.0.0.1:8118 http://localhost:10080/")
        assert "Directory listing for /" in page, _sh(
            env, name, "journalctl -u privoxy -o cat --no-pager"
        )
        root, uids = _main_pid_jailed(env, name, "privoxy")
        assert (root, uids) == ("/etc/privoxy", "\t".join([uid["privoxy"]] * 4))
        _sh(env, name, "systemctl stop privoxy")
        # what stays is the operator's: etc/privoxy (the link), var/log/privoxy and its logfile
        after = _sh(env, name, "find /etc/privoxy | sort")
        assert set(after.split()) - set(before.split()) == {
            "/etc/privoxy/etc",
            "/etc/privoxy/etc/privoxy",
            "/etc/privoxy/var",
            "/etc/privoxy/var/log",
            "/etc/privoxy/var/log/privoxy",
            "/etc/privoxy/var/log/privoxy/logfile",
        }, after

        # ssh, first on Debian's stock sshd_config (no sftp jail): jailshim prepares nothing and
        # sshd serves; the drop-in's teardown of the example's jail, absent here, exits 78, and
        # its "-" keeps that from leaving the login service "failed" on stop
        _drop_in(env, name, "ssh", "true")
        banner = _sh(
            env,
            name,
            'python3 -c "import socket; '
            "print(socket.create_connection(('127.0.0.1', 22), timeout=5).recv(8).decode())\"",
        )
        assert banner == "SSH-2.0-\n", banner
        _sh(env, name, "systemctl stop ssh")
        state = _sh(
            env, name, "systemctl is-active ssh; systemctl show -p Result --value ssh", check=False
        )
        assert state.split() == ["inactive", "success"], state
        # then the example's sftp-only sshd_config as Debian's /etc/ssh/sshd_config (a container
        # of its own: no logins to lock out); a session's processes are chrooted as sftpdemo
        _drop_in(
            env,
            name,
            "ssh",
            "useradd --system --home-dir /srv/sftp/sftpdemo --shell /usr/sbin/nologin sftpdemo"
            " && install -d -m 0755 /srv/sftp/sftpdemo/files && "
            f"cp {ex}/sshd-sftp/jailshim.txt /srv/sftp/sftpdemo/files/ && "
            "ssh-keygen -q -t ed25519 -N '' -f /root/sftpdemo_key && "
            "install -d -m 0755 /etc/ssh/sftp-keys && "
            "install -m 0644 /root/sftpdemo_key.pub /etc/ssh/sftp-keys/sftpdemo && "
            f"cp {ex}/sshd-sftp/sshd_config /etc/ssh/sshd_config",
        )
        sftpdemo = _sh(env, name, "id -u sftpdemo").strip()
        session = _sh(env, name, _SFTP_SESSION)
        jailed = "/srv/sftp/sftpdemo " + "\t".join([sftpdemo] * 4)
        assert session.splitlines()[0] == jailed, session
        assert "files/jailshim.txt" in session, session
        # internal-sftp -l INFO, from inside the jail, through the dev/log jailshim bound there
        journal = _sh(env, name, "journalctl -u ssh -o cat --no-pager")
        assert 'opendir "/files/"' in journal, journal
        _sh(env, name, "systemctl stop ssh")
        left = _sh(env, name, "find /srv/sftp/sftpdemo -mindepth 1 | sort")
        assert left.split() == [
            "/srv/sftp/sftpdemo/files",
            "/srv/sftp/sftpdemo/files/jailshim.txt",
        ], left
        assert "/srv/sftp/sftpdemo" not in _sh(env, name, "cat /proc/self/mountinfo")

        # openvpn-server@server: Debian's sample server.conf, as examples/openvpn/README.md
        # makes it, and a client of the same CA in a network namespace of its own, across a
        # veth pair: an echo reply from the server's tunnel address 10.8.0.1 came through the
        # tunnel, that is through the jailed server (in one namespace both tunnel ends would be
        # local addresses, answered by the kernel without the tunnel)
        _drop_in(env, name, "openvpn-server@", _OPENVPN_SERVER, start="openvpn-server@server")
        assert _sh(env, name, "systemctl is-active openvpn-server@server") == "active\n"
        env.podman("exec", name, "python3", "-c", _CLIENT_NETNS)
        env.podman(
            *("exec", "-d", "-w", "/etc/openvpn/server", name),
            *("sh", "-c", f"{_OPENVPN_CLIENT} > /tmp/client.log 2>&1"),
        )
        deadline = time.monotonic() + 45
        while (
            env.podman(
                *("exec", name, "nsenter", "--net=/run/netns/client"),
                *("python3", "-c", _ECHO, "10.8.0.1"),
                check=False,
            ).returncode
            != 0
        ):
            assert time.monotonic() < deadline, _sh(
                env, name, "cat /tmp/client.log; journalctl -u openvpn-server@server -o cat"
            )
            time.sleep(0.2)
        server = _sh(env, name, "journalctl -u openvpn-server@server -o cat --no-pager")
        assert "chroot to 'jail' and cd to '/' succeeded" in server, server
        assert "[client] Peer Connection Initiated" in server, server
        root, uids = _main_pid_jailed(env, name, "openvpn-server@server")
        assert (root, uids) == ("/etc/openvpn/server/jail", "\t".join([uid["nobody"]] * 4))
        _sh(env, name, "systemctl stop openvpn-server@server")
        left = _sh(env, name, "find /etc/openvpn/server/jail -mindepth 1")
        assert left == "/etc/openvpn/server/jail/tmp\n", left
