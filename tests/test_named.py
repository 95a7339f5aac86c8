"""`jailshim run -- named`: Debian's BIND 9.18, its jail and user from named's own argv.

The jail is built as examples/named/README.md says (make-jail.sh: Debian's chroot how-to, with
/etc/bind and the root hints copied in and bind's writable directories; the example's
named.conf.options): the stock config changed only to listen on a test port on 127.0.0.1, plus
one test zone. Debian's config recurses from the root hints and validates (it asks the root
servers at start), so each test runs in a network namespace of its own with only lo
(own_network, tests/daemons.py): nothing leaves the machine, kdig asks from the same namespace.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from jailshim.daemons import named
from jailshim.errors import UsageError
from tests.daemons import (
    daemon_pid,
    free_port,
    pristine_copy,
    status_field,
    stop,
    wait_for_dns,
)
from tests.support import NSRUN, TESTS, clean_env, jailshim_argv, run, spawn

ANSWER = "192.0.2.55"
CONFIG = "/etc/bind/named.conf"  # inside the jail: named reads -c after its chroot (-t)
EXAMPLE = TESTS.parent / "examples" / "named"


def make_jail(area: Path, port: int, options_extra: str = "") -> Path:
    """Debian's config in a jail made by the example's script, with the example's
    named.conf.options (Debian's, listening on 127.0.0.1 only) moved to ``port``, serving zone
    jailshim.test. The script copies /etc/bind: it runs in a private mount namespace where
    /etc/bind is the package's configuration (pristine_copy), whatever the host's says."""
    jail = area / "jail"
    stock = pristine_copy("bind9", "/etc/bind", area)
    script = 'mount --bind "$0" /etc/bind && exec sh "$@"'
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(stock),
         str(EXAMPLE / "make-jail.sh"), str(jail)],
        check=True, timeout=30,
    )  # fmt: skip
    bind = jail / "etc" / "bind"
    options = (EXAMPLE / "named.conf.options").read_text()
    assert "listen-on port 10055 {" in options and "listen-on-v6 { none; };" in options
    options = options.replace("listen-on port 10055 {", f"listen-on port {port} {{")
    options = options.replace(
        "listen-on-v6 { none; };", f"listen-on-v6 {{ none; }};{options_extra}"
    )
    (bind / "named.conf.options").write_text(options)
    with (bind / "named.conf.local").open("a") as f:
        f.write('zone "jailshim.test" { type master; file "/etc/bind/db.jailshim.test"; };\n')
    (bind / "db.jailshim.test").write_text(
        "$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n@ IN NS ns\n"
        f"ns IN A 127.0.0.1\nanswer IN A {ANSWER}\n"
    )
    return jail


def test_the_examples_options_are_debians_listening_on_loopback(area: Path, named_bin: str) -> None:
    """examples/named/named.conf.options is Debian's file with only the listen lines changed
    (and a comment saying so), so the tests run Debian's own config — the file bind9 shipped,
    not the host's /etc/bind, which an administrator may have edited."""
    shipped = pristine_copy("bind9", "/etc/bind", area) / "named.conf.options"
    stock = shipped.read_text().splitlines()
    example = (EXAMPLE / "named.conf.options").read_text().splitlines()
    added = [line for line in example if line not in stock]
    assert [line for line in stock if line not in example] == ["\tlisten-on-v6 { any; };"]
    code = [line.strip() for line in added if not line.strip().startswith("//")]
    assert code == ["listen-on port 10055 { 127.0.0.1; };", "listen-on-v6 { none; };"]


def named_argv(named_path: str, jail: Path, *flags: str) -> list[str]:
    return [named_path, *flags, "-t", str(jail), "-u", "bind", "-c", CONFIG]


@pytest.mark.parametrize("where", ["plain", "userns"])
def test_named_answers_from_the_jail_its_argv_names(area: Path, named_bin: str, where: str) -> None:
    """No --chroot/--user: the jail and user come from named's -t and -u; named-checkconf -t
    accepts the config; kdig gets the test zone's answer; named's root is the jail and it runs
    as bind with bind's groups (initgroups), its jail holding the four devices it needs."""
    port = free_port()
    jail = make_jail(area, port)
    wrap = [sys.executable, NSRUN, "--mount", "--"] if where == "userns" else []
    argv = [*wrap, *jailshim_argv("run", "--", *named_argv(named_bin, jail, "-g"))]
    proc = spawn(argv)
    try:
        wait_for_dns(port, proc, ANSWER)
        pid = daemon_pid(proc, "named")
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        bind = pwd.getpwnam("bind")
        assert status_field(pid, "Uid").split() == [str(bind.pw_uid)] * 4
        assert status_field(pid, "Gid").split() == [str(bind.pw_gid)] * 4
        groups = os.getgrouplist("bind", bind.pw_gid)
        assert sorted(map(int, status_field(pid, "Groups").split())) == sorted(set(groups))
        if where == "plain":  # in the userns case dev/ is a tmpfs in named's mount namespace
            assert sorted(p.name for p in (jail / "dev").iterdir() if p.is_char_device()) == [
                "null",
                "random",
                "urandom",
                "zero",
            ]
    finally:
        _, stderr = stop(proc)
    assert "Traceback" not in stderr
    read = [line for line in stderr.splitlines() if '"named.config"' in line]
    assert read, stderr
    assert f'"chroot": "{jail}"' in read[0] and '"user": "bind"' in read[0], read[0]
    assert f'"listen_on": "listen-on port {port} {{ 127.0.0.1/32; }}' in read[0], read[0]
    assert '"logging": "stderr (-g)"' in read[0] and '"log_sockets": []' in read[0], read[0]
    assert '"zero"' in read[0], read[0]
    assert '"check", "check": "dev/zero", "ok": true' in stderr
    if where == "userns":  # no mknod in a user namespace: the host's nodes are bound in
        assert '"device": "zero", "strategy": "bind", "outcome": "bound"' in stderr, stderr


def test_broken_config_exits_78_with_named_checkconfs_words(area: Path, named_bin: str) -> None:
    """named-checkconf -t rejects the config: exit 78 with its words (file:line inside the
    jail); nothing prepared, no named started."""
    jail = make_jail(area, free_port(), options_extra="\n\tbogus-option yes;")
    result = run("run", "--", *named_argv(named_bin, jail, "-g"))
    assert result.code == 78, result.stderr
    assert "named rejected its configuration (named-checkconf -t" in result.error
    assert "/etc/bind/named.conf.options:" in result.error
    assert "unknown option 'bogus-option'" in result.error
    assert not (jail / "dev").exists()
    leftover = subprocess.run(["pgrep", "-f", str(jail)], capture_output=True, check=False)
    assert leftover.stdout == b""


def test_a_jail_another_user_can_write_is_refused(area: Path, named_bin: str) -> None:
    """The jail belongs to nobody (not root, not bind): 78 before anything is made."""
    jail = make_jail(area, free_port())
    nobody = pwd.getpwnam("nobody")
    os.chown(jail, nobody.pw_uid, nobody.pw_gid)
    result = run("run", "--", *named_argv(named_bin, jail, "-g"))
    assert result.code == 78, result.stderr
    assert "The jail is writable by a non-root user" in result.error
    assert not (jail / "dev").exists()


def test_named_logging_to_syslog_brings_dev_log(area: Path, named_bin: str) -> None:
    """named -f logs to syslog from inside its jail (the default logging): the plan binds the
    host's /dev/log there; -u digits are a UID to named, and jailshim reads them so."""
    jail = make_jail(area, free_port())
    uid = str(pwd.getpwnam("bind").pw_uid)
    argv = [named_bin, "-f", f"-t{jail}", "-u", uid, "-c", CONFIG]
    result = run("run", "--dry-run", "--", *argv)
    assert result.code == 0, result.stderr
    read = result.named("named.config")
    assert read and read[0]["log_sockets"] == ["/dev/log"] and read[0]["logging"] == "syslog"
    assert read[0]["user"] == f"+{uid}" and read[0]["chroot"] == str(jail)
    assert "/dev/log" in result.stdout


def test_a_uid_without_a_user_is_refused_as_named_would(area: Path, named_bin: str) -> None:
    """-u DIGITS is a UID to named (getpwuid); with no such user named exits: so does jailshim,
    with 78 and a sentence, before anything is prepared."""
    jail = make_jail(area, free_port())
    missing = next(uid for uid in range(64000, 65000) if not _has_uid(uid))
    result = run("run", "--", named_bin, "-g", "-t", str(jail), "-u", str(missing))
    assert result.code == 78, result.stderr
    assert f"named's -u {missing} is a UID with no user on this host" in result.error
    assert f"user '{missing}' unknown" in result.error
    assert not (jail / "dev").exists()


def _has_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


# --- named's argv and config, read without running anything ---


def test_argv_is_read_as_named_getopt_reads_it() -> None:
    """Combined flags, a value in the same word or the next, the last one wins, `--` ends."""
    opts = named.argv_options(["named", "-fgu", "bind", "-t/var/jail", "-c", "/x.conf"])
    assert opts == {"f": [""], "g": [""], "u": ["bind"], "t": ["/var/jail"], "c": ["/x.conf"]}
    assert named.argv_options(["named", "-u", "a", "-ub"])["u"] == ["a", "b"]
    assert named.argv_options(["named", "-4", "-n2", "--"]) == {"4": [""], "n": ["2"]}
    # a value that looks like an option is still the value (getopt takes the next word)
    assert named.argv_options(["named", "-t", "-g"]) == {"t": ["-g"]}


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["named", "-t"], "-t needs a value"),
        (["named", "-gh"], "-h, which named 9.18 does not take"),
        (["named", "-g", "extra"], "'extra' after its options"),
        (["named", "--", "extra"], "'extra' after its options"),
    ],
)
def test_argv_named_would_refuse_is_a_usage_error(argv: list[str], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        named.argv_options(argv)


PRINTED = """/etc/bind/x.conf:2: option 'auto-dnssec' is deprecated
acl "foo" {
	10.0.0.0/8;
};
logging {
	channel "f" {
		file "/var/log/named.log";
	};
	category "default" {
		"f";
	};
};
options {
	directory "/var/cache/bind";
	listen-on port 5353 {
		127.0.0.1/32;
		!10.1.1.1/32;
		"foo";
		{
			127.0.0.2/32;
		};
	};
	listen-on  {
		"any";
	};
	listen-on-v6  {
		::1/128;
		"none";
	};
};
"""


def test_printed_config_gives_listen_on_and_its_warnings() -> None:
    """named-checkconf -p output: the warnings it logged first, then listen-on/-v6 elements;
    only positive, literal addresses are waited for (a host prefix is its address)."""
    warnings, printed = named.split_printed(PRINTED)
    assert warnings == ["/etc/bind/x.conf:2: option 'auto-dnssec' is deprecated"]
    found = named.listen_on(printed)
    assert found == [
        ("listen-on port 5353", ["127.0.0.1/32", "!10.1.1.1/32", "foo", "127.0.0.2/32"]),
        ("listen-on", ["any"]),
        ("listen-on-v6", ["::1/128", "none"]),
    ]
    assert named.addresses(found[0][1]) == ["127.0.0.1", "foo", "127.0.0.2"]
    assert named.addresses(found[1][1]) == [] and named.addresses(found[2][1]) == ["::1"]


def test_syslog_is_needed_unless_g_or_a_logging_block_sends_everything_elsewhere() -> None:
    _, to_file = named.split_printed(PRINTED)  # category default -> a file channel
    assert not named.logs_to_syslog(to_file, {})
    none = named.parse_printed("options { };")
    assert named.logs_to_syslog(none, {}) and not named.logs_to_syslog(none, {"g": [""]})
    assert not named.logs_to_syslog(none, {"L": ["/var/log/n"]})  # -L: default goes to it
    partial = named.parse_printed('logging { category "lame-servers" { "null"; }; };')
    assert named.logs_to_syslog(partial, {})  # default category still default_syslog
    channel = named.parse_printed(
        'logging { channel "s" { syslog "local0"; }; category "default" { "s"; }; };'
    )
    assert named.logs_to_syslog(channel, {})


def test_default_options_are_only_a_warning(tmp_path: Path) -> None:
    """Debian's /etc/default/named OPTIONS with -t or -u is named's argv only when the unit
    passes it: read solely to warn when the argv has neither."""
    options = tmp_path / "named"
    options.write_text('# startup options\nRESOLVCONF=no\nOPTIONS="-u bind -t /var/bind9/chroot"\n')
    note = named.default_options_note(str(options))
    assert note is not None and '"-u bind -t /var/bind9/chroot"' in note
    assert "named will run unjailed, as root" in note
    options.write_text('OPTIONS="-4"\n')
    assert named.default_options_note(str(options)) is None
    assert named.default_options_note(str(tmp_path / "absent")) is None


@pytest.mark.parametrize("socket_set", [False, True], ids=["no-notify-socket", "notify-socket"])
def test_config_event_says_notify_capable_apart_from_the_socket(
    area: Path, named_bin: str, socket_set: bool
) -> None:
    """named.config said `"notify": true` with NOTIFY_SOCKET unset: now notify_capable
    (Debian's named sends READY=1 after its chroot) and notify_socket (null without one)."""
    jail = make_jail(area, free_port())
    socket_path = str(area / "notify.sock")
    env = clean_env(NOTIFY_SOCKET=socket_path) if socket_set else clean_env()
    result = run("run", "--dry-run", "--", *named_argv(named_bin, jail, "-g"), env=env)
    assert result.code == 0, result.stderr
    read = result.named("named.config")[0]
    assert "notify" not in read and read["notify_capable"] is True, read
    assert read["notify_socket"] == (socket_path if socket_set else None), read
