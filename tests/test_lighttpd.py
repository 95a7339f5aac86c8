"""`jailshim run -- lighttpd -D -f FILE`: Debian's lighttpd, jail and user from `lighttpd -p`."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jailshim.daemons.lighttpd import argv_options, parse_dump, truthy
from jailshim.errors import UsageError
from tests.daemons import descendants, free_port, make_certificate, own_network, status_field, stop
from tests.stock import copy_of, host_state, in_stock_layout, strategies
from tests.support import NSRUN, jailshim_argv, need, run, spawn

__all__ = ["own_network"]  # a fixture (tests/daemons.py) the fixtures here use

LIGHTTPD = "/usr/sbin/lighttpd"
MOD_OPENSSL = Path("/usr/lib/lighttpd/mod_openssl.so")


@pytest.fixture
def lighttpd_bin(root: None, own_network: None) -> str:
    """Debian's lighttpd with its TLS module, Debian's www-data, and curl as the client."""
    need(os.access(LIGHTTPD, os.X_OK), "needs lighttpd (Debian package lighttpd)")
    need(MOD_OPENSSL.exists(), "needs mod_openssl (Debian package lighttpd-mod-openssl)")
    need(shutil.which("curl") is not None, "needs curl")
    try:
        pwd.getpwnam("www-data")
    except KeyError:
        need(False, "needs the user www-data (Debian's base-passwd)")
    return LIGHTTPD


def make_jail(area: Path, page: str) -> Path:
    """A jail holding what lighttpd opens after its chroot: the document root and the error
    log's directory, writable by www-data (the operator's part; jailshim makes dev/)."""
    jail = area / "jail"
    (jail / "var/www/html").mkdir(parents=True)
    (jail / "var/www/html/index.html").write_text(page)
    logs = jail / "var/log/lighttpd"
    logs.mkdir(parents=True)
    ids = pwd.getpwnam("www-data")
    os.chown(logs, ids.pw_uid, ids.pw_gid)
    for directory in (jail, *jail.rglob("*")):
        if directory.is_dir():
            directory.chmod(0o755)
    return jail


def fetch(port: int, proc: subprocess.Popen[str], path: str = "/") -> str:
    """The page at https://127.0.0.1:PORT/PATH through curl (certificate not verified: it is
    self-signed), retried until the daemon listens."""
    deadline = time.monotonic() + 20
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = stop(proc)
            raise AssertionError(f"exited with {proc.returncode}: {err}")
        done = subprocess.run(
            ["curl", "-sSk", "--max-time", "5", f"https://127.0.0.1:{port}{path}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout
        last = done.stderr
        time.sleep(0.1)
    raise AssertionError(f"no TLS answer on 127.0.0.1:{port}: {last}")


def lighttpd_pid(proc: subprocess.Popen[str]) -> int:
    """The lighttpd process: jailshim exec'd into it, in proc or under nsrun."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in (proc.pid, *descendants(proc.pid)):
            try:
                if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "lighttpd":
                    return pid
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError("no lighttpd process")


def write_config(area: Path, jail: Path, port: int, extra: str = "") -> Path:
    pem = make_certificate(area)
    config = area / "lighttpd.conf"
    config.write_text(
        'server.modules = ("mod_openssl", "mod_indexfile", "mod_staticfile")\n'
        'server.document-root = "/var/www/html"\n'
        'index-file.names = ("index.html")\n'
        f'server.chroot = "{jail}"\n'
        'server.username = "www-data"\n'
        'server.groupname = "www-data"\n'
        'server.bind = "127.0.0.1"\n'
        f"server.port = {port}\n"
        'ssl.engine = "enable"\n'
        f'ssl.pemfile = "{pem}"\n'
        f"{extra}"
    )
    return config


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_lighttpd_serves_tls_from_the_jail_its_config_names(
    area: Path, lighttpd_bin: str, where: str
) -> None:
    """No --chroot/--user: server.chroot and server.username from `lighttpd -p`; curl gets the
    jail's page over TLS; lighttpd's root is the jail, its uid www-data; syslog is asked for
    (server.errorlog-use-syslog), so /dev/log is wanted; the jail's local time is set."""
    jail = make_jail(area, "hello from the lighttpd jail\n")
    port = free_port()
    config = write_config(area, jail, port, 'server.errorlog-use-syslog = "enable"\n')
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    proc = spawn([*wrap, *jailshim_argv("run", "--", lighttpd_bin, "-D", "-f", str(config))])
    try:
        assert fetch(port, proc) == "hello from the lighttpd jail\n"
        pid = lighttpd_pid(proc)
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        ids = pwd.getpwnam("www-data")
        assert status_field(pid, "Uid").split() == [str(ids.pw_uid)] * 4
        assert status_field(pid, "Gid").split() == [str(ids.pw_gid)] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    read = [json.loads(ln) for ln in stderr.splitlines() if '"lighttpd.config"' in ln]
    read = [event for event in read if "files" in event]  # not the notes' warnings
    assert read and read[0]["chroot"] == str(jail) and read[0]["user"] == "www-data", stderr
    assert read[0]["log_sockets"] == ["/dev/log"] and read[0]["addresses"] == ["127.0.0.1"]
    assert (jail / "etc/localtime").exists()
    assert strategies(stderr) == ({"bind"} if wrap else {"mknod"}), stderr
    # lighttpd links no crypto library; mod_openssl's libcrypto, listed by lighttpd's own
    # loader, is what the probe reseeds in the jail ("none probed" passed it unproven)
    checks = [json.loads(ln) for ln in stderr.splitlines() if '"event": "check"' in ln]
    reseeds = [c for c in checks if re.fullmatch(r"OpenSSL \S+ reseed", c["check"])]
    assert reseeds and all(c["ok"] for c in reseeds), stderr
    assert not [c for c in checks if c["check"] == "crypto library"], stderr


def test_broken_config_exits_78_in_lighttpds_words(area: Path, lighttpd_bin: str) -> None:
    """A value lighttpd's parser refuses: 78 with its own sentence, from `lighttpd -p`, before
    anything is prepared."""
    jail = make_jail(area, "x")
    config = write_config(area, jail, free_port(), 'server.max-fds = "many"\n')
    result = run("run", "--", lighttpd_bin, "-D", "-f", str(config))
    assert result.code == 78, result.stderr
    assert "got a string but expected a short: server.max-fds many" in result.error
    assert "lighttpd -p" in result.error
    assert not (jail / "dev").exists()


def test_checker_rejection_exits_78_and_takes_the_jail_back(area: Path, lighttpd_bin: str) -> None:
    """A certificate lighttpd cannot load passes `-p` (it only parses) but not `-tt` (it loads
    the modules): 78 with lighttpd's words, and what was prepared in the jail is taken back."""
    jail = make_jail(area, "x")
    config = write_config(area, jail, free_port())
    text = config.read_text().replace(str(area / "haproxy.pem"), str(area / "missing.pem"))
    config.write_text(text)
    result = run("run", "--", lighttpd_bin, "-D", "-f", str(config))
    assert result.code == 78, result.stderr
    assert f"fdevent_load_file() {area}/missing.pem: No such file or directory" in result.error
    assert "lighttpd -tt" in result.error
    assert not (jail / "dev").exists() and not (jail / "etc/localtime").exists()


def test_a_jail_others_can_write_is_refused_before_lighttpd_tt_chroots_into_it(
    area: Path, lighttpd_bin: str
) -> None:
    """`lighttpd -tt` chroot()s as root (server.c: the i_am_root block runs in preflight): a
    jail anyone may write is refused, 78, before it runs. COMMAND is a `lighttpd` script that
    notes each time it is started, then runs Debian's: `-p` ran, `-tt` never did."""
    jail = make_jail(area, "x")
    jail.chmod(0o777)
    config = write_config(area, jail, free_port())
    starts = area / "starts"
    wrapper = area / "bin" / "lighttpd"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {starts}\nexec {lighttpd_bin} "$@"\n')
    wrapper.chmod(0o755)
    result = run("run", "--", str(wrapper), "-D", "-f", str(config))
    assert result.code == 78, result.stderr
    assert str(jail) in result.error
    assert starts.read_text().split() == ["-p"]
    assert not (jail / "dev").exists()


def test_argv_is_read_as_glibc_getopt_reads_it() -> None:
    """Options after a word that is none still count (glibc permutes) until `--`; lighttpd's
    own refusals (two -f, none, an unknown letter) are one sentence each."""
    assert argv_options(["lighttpd", "stray", "-D", "-f", "/a.conf"]) == {
        "D": [""],
        "f": ["/a.conf"],
    }
    assert argv_options(["lighttpd", "-Df/a.conf", "-m", "/mods"]) == {
        "D": [""],
        "f": ["/a.conf"],
        "m": ["/mods"],
    }
    assert argv_options(["lighttpd", "-D", "--", "-f", "/a.conf"]) == {"D": [""]}
    with pytest.raises(UsageError, match="-x is not one it takes"):
        argv_options(["lighttpd", "-x"])
    from jailshim.daemons import load

    adapter = load("lighttpd")
    with pytest.raises(UsageError, match="Can only read one config file"):
        adapter.read(["lighttpd", "-f", "/a", "-f", "/b"], {})
    with pytest.raises(UsageError, match="No configuration available"):
        adapter.read(["lighttpd", "-D"], {})


def test_dump_is_read_from_lighttpd_p_itself(area: Path, lighttpd_bin: str) -> None:
    """The real `lighttpd -p` output of a config with quotes, a variable, conditions and a
    server option set (deprecated) in a condition: the global scope's values, and the
    `$SERVER["socket"]` conditions at any depth; the condition's server.chroot is not global."""
    config = area / "dump.conf"
    config.write_text(
        'var.base = "/srv/j"\n'
        'server.chroot = var.base + "ail"\n'
        'server.username = "www-data"\n'
        'server.tag = "say \\"hi\\""\n'
        'server.errorlog-use-syslog = "Enabled"\n'
        '$SERVER["socket"] == "127.0.0.2:8443" { ssl.engine = "enable" }\n'
        '$SERVER["socket"] == "[::1]:8443" { $HTTP["host"] == "x" { server.name = "x" } }\n'
        '$HTTP["url"] =~ "^/a" { server.chroot = "/nope" }\n'
    )
    out = subprocess.run(
        [lighttpd_bin, "-p", "-f", str(config)], capture_output=True, text=True, check=True
    ).stdout
    dump = parse_dump(out)
    assert dump.values["server.chroot"] == "/srv/jail"
    assert dump.values["server.tag"] == 'say "hi"'
    assert truthy(dump.values["server.errorlog-use-syslog"])
    assert dump.sockets == ("127.0.0.2:8443", "[::1]:8443")
    assert not truthy("disable") and truthy("1") and not truthy(None)


# -- Debian's own lighttpd.conf ------------------------------------------------------------------

SSL_CONF = "conf-available/10-ssl.conf"


def _stock_edits(etc: Path, jail: Path, port: int, tls_port: int) -> None:
    """Debian's lighttpd.conf with `server.chroot` added and its port moved to a test port;
    TLS enabled as `lighty-enable-mod ssl` enables it (conf-enabled/10-ssl.conf, a link to
    Debian's file), its 443 moved to a test port and its server.pem made."""
    main = etc / "lighttpd.conf"
    text = main.read_text()
    assert text.count("server.port                 = 80\n") == 1, "Debian's lighttpd.conf changed"
    text = text.replace("server.port                 = 80\n", f"server.port = {port}\n")
    main.write_text(text + f'\nserver.chroot = "{jail}"\n')
    ssl = etc / SSL_CONF
    assert ssl.read_text().count("443") == 2, "Debian's 10-ssl.conf changed"
    ssl.write_text(ssl.read_text().replace("0.0.0.0:443", f"127.0.0.1:{tls_port}"))
    ssl.write_text(ssl.read_text().replace("use-ipv6.pl 443", f"use-ipv6.pl {tls_port}"))
    (etc / "conf-enabled/10-ssl.conf").symlink_to(f"../{SSL_CONF}")
    shutil.copyfile(make_certificate(etc.parent), etc / "server.pem")
    (etc / "server.pem").chmod(0o600)


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_stock_debian_lighttpd_serves_tls_from_its_jail(
    area: Path, lighttpd_bin: str, where: str
) -> None:
    """Debian's /etc/lighttpd (as shipped) with only server.chroot and test ports changed and
    TLS enabled Debian's way, run as lighttpd.service runs it (`lighttpd -D -f
    /etc/lighttpd/lighttpd.conf`) under `jailshim run` with no flags, from a copy bound at
    /etc/lighttpd in a private mount namespace (a tmpfs /run for its pid file): curl gets the
    jail's /var/www/html over TLS; Debian's error log is opened inside the jail by www-data
    (jailshim said so when it read the config); the host's /etc/lighttpd is untouched."""
    need((Path("/etc/lighttpd") / SSL_CONF).exists(), "needs Debian's 10-ssl.conf")
    host_before = host_state(("/etc/lighttpd",))
    etc = copy_of("/etc/lighttpd", area)
    jail = make_jail(area, "stock lighttpd, jailed\n")
    port, tls_port = free_port(), free_port()
    _stock_edits(etc, jail, port, tls_port)
    argv = in_stock_layout(
        {"/etc/lighttpd": etc},
        jailshim_argv("run", "--", lighttpd_bin, "-D", "-f", "/etc/lighttpd/lighttpd.conf"),
        userns=where == "userns",
        tmpfs=["/run"],
    )
    proc = spawn(argv)
    try:
        assert fetch(tls_port, proc) == "stock lighttpd, jailed\n"
        pid = lighttpd_pid(proc)
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        assert status_field(pid, "Uid").split() == [str(pwd.getpwnam("www-data").pw_uid)] * 4
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    assert strategies(stderr) == ({"bind"} if where == "userns" else {"mknod"}), stderr
    read = [json.loads(ln) for ln in stderr.splitlines() if '"lighttpd.config"' in ln]
    read = [event for event in read if "files" in event]  # not the notes' warnings
    assert read and read[0]["chroot"] == str(jail) and read[0]["user"] == "www-data", stderr
    assert read[0]["files"] == ["/etc/lighttpd/lighttpd.conf"]
    inside = f"{jail}/var/log/lighttpd/error.log"
    assert f"is opened inside the jail, as {inside}, by www-data" in stderr
    assert "server started" in Path(inside).read_text()
    assert host_state(("/etc/lighttpd",)) == host_before


def test_relative_chroot_and_a_group_alone_are_read_as_lighttpd_acts(
    area: Path, lighttpd_bin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative server.chroot is chroot()ed from the start directory (jailshim's, kept by
    exec); server.groupname without server.username leaves lighttpd root: said, and no group
    is checked with."""
    from jailshim.daemons import load

    config = area / "relative.conf"
    config.write_text('server.chroot = "jail/"\nserver.groupname = "www-data"\n')
    monkeypatch.chdir(area)
    plan = load("lighttpd").read([lighttpd_bin, "-D", "-f", str(config)], {})
    assert plan.chroot == str(area / "jail")
    assert plan.user is None and plan.group is None
    assert any("without server.username" in note for note in plan.notes), plan.notes
