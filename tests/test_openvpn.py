"""`jailshim run -- openvpn --cd DIR --config server.conf`: Debian's sample server.conf with its
chroot, user and group read by jailshim, the server in a network namespace of its own, a client
in the test's, a veth pair between them, and a ping across the tunnel."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jailshim.daemons.openvpn import argv_words, identity_as_set, parse_line, read_options
from jailshim.errors import ConfigError, UsageError
from jailshim.spec import Identity
from tests.daemons import descendants, own_network, status_field, stop
from tests.stock import strategies
from tests.support import NSRUN, jailshim_argv, need, run, spawn

__all__ = ["own_network"]  # a fixture (tests/daemons.py) the fixtures here use

OPENVPN = "/usr/sbin/openvpn"
SAMPLE = Path("/usr/share/doc/openvpn/examples/sample-config-files/server.conf")
SERVER_IP, CLIENT_IP = "10.99.0.1", "10.99.0.2"  # the veth pair's ends
TUNNEL_SERVER = "10.8.0.1"  # server 10.8.0.0 255.255.255.0, topology subnet (the sample's)

# The server's own network namespace: it waits for its end of the veth pair (moved in by the
# test from outside), gives it SERVER_IP, and execs jailshim.
_SERVER_NETNS = f"""
set -e
for attempt in $(seq 400); do ip link show ov0 >/dev/null 2>&1 && break; sleep 0.05; done
ip link set lo up
ip addr add {SERVER_IP}/24 dev ov0
ip link set ov0 up
exec "$@"
"""


@pytest.fixture
def openvpn_bin(root: None, own_network: None) -> str:
    """Debian's openvpn, its sample server.conf, /dev/net/tun, openssl for the certificates,
    and a veth pair ov0 (the server's, moved later) - ov1 (the client's, CLIENT_IP)."""
    need(os.access(OPENVPN, os.X_OK), "needs openvpn (Debian package openvpn)")
    need(SAMPLE.is_file(), f"needs {SAMPLE} (Debian package openvpn)")
    need(os.path.exists("/dev/net/tun"), "needs /dev/net/tun (the tun module)")
    need(shutil.which("openssl") is not None, "needs openssl (Debian package openssl)")
    for command in (
        ["ip", "link", "add", "ov0", "type", "veth", "peer", "name", "ov1"],
        ["ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "ov1"],
        ["ip", "link", "set", "ov1", "up"],
    ):
        subprocess.run(command, capture_output=True, check=True)
    return OPENVPN


def make_pki(area: Path) -> None:
    """A CA, a server and a client certificate (P-256) and ffdhe2048 as dh2048.pem, named as
    the sample wants them (ca.crt, server.crt, server.key, dh2048.pem)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=area, capture_output=True, check=True)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=jailshim-test-ca")  # fmt: skip
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (area / f"{name}.ext").write_text(
            f"extendedKeyUsage={usage}\nkeyUsage=digitalSignature,keyAgreement\n"
        )
        openssl("req", *curve, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                "-extfile", f"{name}.ext")  # fmt: skip
    # the sample's `dh dh2048.pem`: RFC 7919's group, instead of minutes of dhparam
    openssl("genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
            "-out", "dh2048.pem")  # fmt: skip
    for key in area.glob("*.key"):
        key.chmod(0o600)


def make_client_certificate(area: Path) -> None:
    """client.crt/client.key from the CA in ``area`` (ca.crt, ca.key), for clientAuth."""
    for argv in (
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=client"],
        ["x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "client.crt", "-days", "2", "-extfile", "client.ext"],
    ):  # fmt: skip
        (area / "client.ext").write_text(
            "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyAgreement\n"
        )
        subprocess.run(["openssl", *argv], cwd=area, capture_output=True, check=True)


def sample_config(area: Path, extra: str = "") -> Path:
    """Debian's sample server.conf changed only for the jail: `user nobody`, `group nogroup`
    (its commented ;user/;group lines), `chroot jail` (relative: from --cd), and its two files
    under /var/log/openvpn moved into the test's area; ``extra`` appended."""
    text = SAMPLE.read_text()
    changes = {
        ";user openvpn\n": "user nobody\n",
        ";group openvpn\n": "group nogroup\nchroot jail\n",
        "ifconfig-pool-persist /var/log/openvpn/ipp.txt": f"ifconfig-pool-persist {area}/ipp.txt",
        "status /var/log/openvpn/openvpn-status.log": f"status {area}/openvpn-status.log",
    }
    for old, new in changes.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    config = area / "server.conf"
    config.write_text(text.rstrip("\n") + "\n" + extra)
    return config


def make_jail(area: Path) -> Path:
    """The operator's part of the jail: tmp/, which openvpn checks under its chroot (its
    default --tmp-dir /tmp) and refuses to start without."""
    jail = area / "jail"
    (jail / "tmp").mkdir(parents=True)
    jail.chmod(0o755)
    (jail / "tmp").chmod(0o1777)
    return jail


def start_client(area: Path) -> subprocess.Popen[str]:
    """An openvpn client in the test's network namespace (not jailed: it is the peer)."""
    argv = [OPENVPN, "--client", "--dev", "tun", "--proto", "udp", "--nobind",
            "--remote", SERVER_IP, "1194", "--ca", "ca.crt", "--cert", "client.crt",
            "--key", "client.key", "--remote-cert-tls", "server", "--verb", "3",
            "--connect-retry", "1", "--cd", str(area)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def netns_pid(proc: subprocess.Popen[str]) -> int:
    """A process of ``proc``'s tree in a network namespace other than the test's."""
    mine = os.stat("/proc/thread-self/ns/net").st_ino
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for pid in [proc.pid, *descendants(proc.pid)]:
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino != mine:
                    return pid
            except OSError:
                continue
        assert proc.poll() is None, stop(proc)
        time.sleep(0.05)
    raise AssertionError("the server never entered a network namespace of its own")


def openvpn_pid(proc: subprocess.Popen[str]) -> int:
    """The server: the process of ``proc``'s tree whose comm is openvpn."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "openvpn":
                return pid
        except OSError:
            continue
    raise AssertionError("no openvpn in the server's process tree")


def echo_reply(address: str, ident: int) -> bool:
    """One ICMP echo request to ``address`` and its reply within a second (a raw socket: the
    image has no ping binary; the test runs as root)."""
    import select
    import socket
    import struct

    def checksum(data: bytes) -> int:
        total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total >> 16) + (total & 0xFFFF)
        return ~(total + (total >> 16)) & 0xFFFF

    payload = b"jailshim-openvpn"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        try:
            s.sendto(packet, (address, 0))
        except OSError:  # no route yet: the client's tun is not up
            return False
        deadline = time.monotonic() + 1
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                return False
            data, (source, _) = s.recvfrom(2048)
            icmp = data[(data[0] & 0x0F) * 4 :]  # past the IP header
            kind, _, _, got, _ = struct.unpack("!BBHHH", icmp[:8])
            if source == address and kind == 0 and got == ident and icmp[8:] == payload:
                return True
    return False


def ping_across(server: subprocess.Popen[str], client: subprocess.Popen[str]) -> None:
    """An echo reply from the server's end of the tunnel, once the client has it up."""
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        for proc, name in ((server, "server"), (client, "client")):
            if proc.poll() is not None:
                raise AssertionError(f"the {name} exited with {proc.returncode}")
        if echo_reply(TUNNEL_SERVER, os.getpid() & 0xFFFF):
            return
        time.sleep(0.2)
    raise AssertionError(f"no echo reply from {TUNNEL_SERVER} across the tunnel")


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_sample_server_answers_a_ping_across_the_tunnel_from_its_jail(
    area: Path, openvpn_bin: str, where: str
) -> None:
    """No --chroot/--user: `chroot jail` (relative to --cd), `user`, `group` from the sample
    config; the client's tunnel comes up and pings the server's tun address; the server's root
    is the jail, its uid and gid nobody's and nogroup's; jailshim prepared the jail's nodes
    (mknod as real root, bind mounts in a user namespace)."""
    make_pki(area)
    sample_config(area)
    jail = make_jail(area)
    argv = [openvpn_bin, "--cd", str(area), "--config", "server.conf"]
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    server = spawn([*wrap, "unshare", "--net", "sh", "-c", _SERVER_NETNS, "sh",
                    *jailshim_argv("run", "--", *argv)])  # fmt: skip
    client = None
    try:
        moved = subprocess.run(["ip", "link", "set", "ov0", "netns", str(netns_pid(server))],
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        client = start_client(area)
        ping_across(server, client)
        pid = openvpn_pid(server)
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        nobody = pwd.getpwnam("nobody")
        assert status_field(pid, "Uid").split() == [str(nobody.pw_uid)] * 4
        assert status_field(pid, "Gid").split() == [str(nobody.pw_gid)] * 4
        # libcap-ng's capng_change_id(…, CAPNG_DROP_SUPP_GRP) keeping CAP_NET_ADMIN (bit 12)
        assert status_field(pid, "Groups").split() == []
        assert int(status_field(pid, "CapEff"), 16) == 1 << 12
    finally:
        if client is not None:
            stop(client)
        _, stderr = stop(server)
    assert "Traceback" not in stderr
    logged = [json.loads(ln) for ln in stderr.splitlines() if '"openvpn.config"' in ln]
    read = [event for event in logged if "chroot" in event]  # the others: its notes
    assert read and read[0]["chroot"] == str(jail), stderr
    notes = " | ".join(str(event.get("note")) for event in logged)
    assert f"tmp-dir inside the jail: {jail}/tmp" in notes, notes
    assert (read[0]["user"], read[0]["group"]) == ("nobody", "nogroup")
    assert read[0]["files"] == [str(area / "server.conf")]
    assert strategies(stderr) == ({"bind"} if where == "userns" else {"mknod"}), stderr


def test_sighup_re_reads_the_options_inside_the_jail(area: Path, openvpn_bin: str) -> None:
    """The trap jailshim warns of: a SIGHUP makes openvpn parse its argv again after its
    chroot, and `--cd DIR` (not in the jail) is then fatal — seen, not assumed."""
    make_pki(area)
    sample_config(area)
    make_jail(area)
    argv = [openvpn_bin, "--cd", str(area), "--config", "server.conf"]
    server = spawn(["unshare", "--net", "sh", "-c", _SERVER_NETNS, "sh",
                    *jailshim_argv("run", "--", *argv)])  # fmt: skip
    client = None
    try:
        moved = subprocess.run(["ip", "link", "set", "ov0", "netns", str(netns_pid(server))],
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        client = start_client(area)
        ping_across(server, client)
        os.kill(openvpn_pid(server), signal.SIGHUP)
        server.wait(20)
    finally:
        if client is not None:
            stop(client)
        stdout, stderr = stop(server)
    assert server.returncode == 1, stdout
    assert f"cd to '{area}' failed" in stdout, stdout
    assert f"inside the jail, which lacks {area}/jail{area}, " in stderr, stderr
    assert "a SIGHUP would stop it" in stderr


def _readme_commands() -> list[str]:
    """The commands of examples/openvpn/README.md's first ```sh block (comments left out)."""
    text = (Path(__file__).parent.parent / "examples/openvpn/README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def test_readme_example_runs_as_written(area: Path, openvpn_bin: str) -> None:
    """examples/openvpn/README.md's commands, with /etc/openvpn/server and /var/log/openvpn
    moved into the test's area (the host's stay untouched): the server they set up, started by
    their `jailshim run` line, serves a client of the same CA; Ctrl-C stops it; their teardown
    exits 0 and takes dev/ back."""
    commands = _readme_commands()
    here = {"/etc/openvpn/server": str(area), "/var/log/openvpn": str(area / "log")}

    def moved(command: str) -> str:
        for host, test in here.items():
            command = command.replace(host, test)
        return command

    start = next(c for c in commands if c.startswith("jailshim run "))
    teardown = next(c for c in commands if c.startswith("jailshim teardown "))
    for command in commands:
        if command not in (start, teardown) and not command.startswith("cd "):
            done = subprocess.run(["sh", "-c", moved(command)], cwd=area,
                                  capture_output=True, text=True, check=False)  # fmt: skip
            assert done.returncode == 0, (command, done.stderr)
    config = area / "server.conf"
    config.write_text(moved(config.read_text()))  # the sample's status and pool files
    make_client_certificate(area)
    words = moved(start).split()
    server = spawn(["unshare", "--net", "sh", "-c", _SERVER_NETNS, "sh",
                    *jailshim_argv(*words[1:])])  # fmt: skip
    client = None
    try:
        into = subprocess.run(["ip", "link", "set", "ov0", "netns", str(netns_pid(server))],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert into.returncode == 0, into.stderr
        client = start_client(area)
        ping_across(server, client)
        assert os.readlink(f"/proc/{openvpn_pid(server)}/root") == str(area / "jail")
    finally:
        if client is not None:
            stop(client)
        _, stderr = stop(server, signal.SIGINT)  # the README's Ctrl-C
    assert "Traceback" not in stderr
    assert server.returncode is not None
    result = run(*moved(teardown).split()[1:])
    assert result.code == 0, result.stderr
    assert not (area / "jail/dev").exists()
    assert (area / "jail/tmp").is_dir()  # the README's: "What stays is yours: jail/tmp"


def test_broken_config_exits_78_in_openvpns_words(area: Path, openvpn_bin: str) -> None:
    """An option openvpn does not know, found by openvpn itself (the dry check): 78 with its
    words; the jail is taken back."""
    make_pki(area)
    sample_config(area, "bogus-option 1\n")
    jail = make_jail(area)
    result = run("run", "--", openvpn_bin, "--cd", str(area), "--config", "server.conf")
    assert result.code == 78, result.stderr
    assert "openvpn rejected its configuration" in result.stderr
    assert "Unrecognized option or missing or extra parameter(s) in server.conf:" in result.stderr
    assert not (jail / "dev").exists(), "the jail was not taken back"


def test_the_dry_check_leaves_the_configs_log_alone(area: Path, openvpn_bin: str) -> None:
    """A config with `daemon` and `log FILE`: the dry check (openvpn itself) still speaks to
    jailshim (its --log-append /dev/stderr comes first: no syslog, no log file), so a broken
    line is 78 in openvpn's words, and the operator's log file is neither made nor emptied."""
    make_pki(area)
    log = area / "openvpn.log"
    sample_config(area, f"daemon\nlog {log}\nbogus-option 1\n")
    make_jail(area)
    result = run("run", "--", openvpn_bin, "--cd", str(area), "--config", "server.conf")
    assert result.code == 78, result.stderr
    assert "Unrecognized option or missing or extra parameter(s)" in result.stderr
    assert not log.exists()
    sample_config(area, f"daemon\nlog {log}\n")
    log.write_text("kept\n")
    dry = run("run", "--dry-run", "--", openvpn_bin, "--cd", str(area), "--config", "server.conf")
    assert dry.code == 0, dry.stderr
    assert log.read_text() == "kept\n"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("", "Temporary directory (--tmp-dir) fails with 'jail//tmp'"),
        ("crl-verify crl.pem\n", "--crl-verify fails with 'jail/crl.pem'"),
    ],
)
def test_what_openvpn_reads_in_the_jail_must_be_there(
    area: Path, openvpn_bin: str, extra: str, words: str
) -> None:
    """openvpn checks its tmp-dir and its CRL under the chroot (it re-reads the CRL there as
    clients connect): a jail without them is 78 in openvpn's words, before it starts."""
    make_pki(area)
    sample_config(area, extra)
    jail = make_jail(area)
    if not extra:
        (jail / "tmp").rmdir()
    result = run("run", "--", openvpn_bin, "--cd", str(area), "--config", "server.conf")
    assert result.code == 78, result.stderr
    assert words in result.stderr, result.stderr


def test_lines_are_split_as_parse_line_splits_them() -> None:
    """Comments only where a word starts, both quotes, backslash escapes; its refusals."""
    assert parse_line('key "my key.pem"  # secret\n', "f", 1) == ["key", "my key.pem"]
    assert parse_line("a 'b\\c' d\\ e x#y ;z\n", "f", 1) == ["a", "b\\c", "d e", "x#y"]
    assert parse_line("   ; all comment\n", "f", 1) == []
    with pytest.raises(ConfigError, match="No closing quotation"):
        parse_line('ca "ca.crt\n', "f", 3)
    with pytest.raises(ConfigError, match="Bad backslash"):
        parse_line("ca c:\\ca.crt\n", "f", 3)


def test_options_read_as_options_c_reads_them(tmp_path: Path) -> None:
    """`cd` moves every relative path after it (the jail's too); includes; inline blocks
    skipped (a `chroot` inside <ca> is certificate text); <connection>'s local is read; a
    lone word is --config; a word without "--" is openvpn's refusal."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/more.conf").write_text("--user nobody\nlocal 10.1.2.3\n")
    (tmp_path / "etc/s.conf").write_text(
        "\ufeffcd etc\nconfig more.conf\n<ca>\nchroot /nowhere\n</ca>\nchroot jail\n"
        "<connection>\nlocal 10.4.5.6\n</connection>\nsyslog\n"
    )
    read = read_options(["openvpn", "etc/s.conf"], cwd=str(tmp_path))
    assert read.cwd == str(tmp_path / "etc")
    assert read.values["chroot"] == ["jail"] and read.values["user"] == ["nobody"]
    assert read.files == [str(tmp_path / "etc/s.conf"), str(tmp_path / "etc/more.conf")]
    assert [a for a, _ in read.locals_] == ["10.1.2.3", "10.4.5.6"]
    # only "\n" ends a line (fgets), \x1c is no blank (isspace); 255 characters is the most
    (tmp_path / "odd.conf").write_text("chroot a\x1cb\n#" + "x" * 253 + "\n")
    odd = read_options(["openvpn", "odd.conf"], cwd=str(tmp_path))
    assert odd.values["chroot"] == ["a\x1cb"]
    (tmp_path / "odd.conf").write_text("#" + "x" * 254 + "\n")
    with pytest.raises(ConfigError, match=r"odd.conf:1: Maximum option line length \(256\)"):
        read_options(["openvpn", "odd.conf"], cwd=str(tmp_path))
    assert argv_words(["openvpn", "--cd", "/x", "--config", "a", "--verb", "3"]) == [
        ["cd", "/x"],
        ["config", "a"],
        ["verb", "3"],
    ]
    with pytest.raises(UsageError, match="don't see a leading '--'"):
        argv_words(["openvpn", "x", "y"])
    with pytest.raises(ConfigError, match="cd to 'missing' failed"):
        read_options(["openvpn", "--cd", "missing"], cwd=str(tmp_path))


def test_plan_from_the_options(tmp_path: Path) -> None:
    """The jail from the last `cd`; syslog (daemon/syslog, no log file) wants /dev/log there, a
    log file (opened before the chroot, on the host) does not; `local` is waited for."""
    from jailshim.daemons import load

    adapter = load("openvpn")
    base = ["openvpn", "--cd", str(tmp_path), "--chroot", "j", "--user", "nobody"]
    plan = adapter.read([*base, "--daemon", "--local", "10.1.2.3"], {})
    assert plan.chroot == str(tmp_path / "j") and plan.user == "nobody" and plan.group is None
    assert plan.sockets == ("/dev/log",)
    assert [t.ip for t in plan.wait_targets] == ["10.1.2.3"]
    assert any("no persist-tun" in note for note in plan.notes), plan.notes
    assert adapter.read([*base, "--log", "x.log", "--daemon"], {}).sockets == ()
    assert adapter.read([*base], {}).sockets == ()


def test_identity_as_openvpn_sets_it() -> None:
    """libcap-ng's capng_change_id: no supplementary groups; --user alone keeps the gid."""
    nobody = Identity("nobody", 65534, 65534, (65534, 100))
    assert identity_as_set(nobody, group_given=True) == nobody._replace(groups=())
    alone = identity_as_set(nobody, group_given=False)
    assert (alone.uid, alone.gid, alone.groups) == (65534, os.getgid(), ())
