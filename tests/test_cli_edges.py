"""The edges a new user hits (issue 12): what the daemon inherits, wrong words, options per
command, closed and broken output, the machine's limits, numeric users, scripts, devices."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemons import status_field, stop
from tests.handshake import wait_until
from tests.multiarch import MULTIARCH
from tests.support import (
    NOBODY,
    TESTS,
    Result,
    clean_env,
    in_shell,
    jailshim_argv,
    need,
    run,
    snapshot,
)

README = TESTS.parent / "README.md"
SEED_LINE = (
    "140135125062464:error:140BA041:SSL routines:SSL_new:malloc failure:ssl/ssl_lib.c:839:\n"
)

# What a container runtime may leave behind: SIGUSR2 ignored, SIGUSR1 blocked (and Python, the
# runtime here, ignores SIGPIPE and SIGXFSZ as well).
RUNTIME = (
    "import os, signal, sys; signal.signal(signal.SIGUSR2, signal.SIG_IGN); "
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1}); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)
SIGNAL_FIELDS = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]


def _under_runtime(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUNTIME, *argv],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


def _fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines())


# 1. Signals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [[], ["--init"]], ids=["exec", "init"])
def test_daemon_starts_with_default_signals_and_an_empty_mask(mode: list[str]) -> None:
    """The exec'd command's /proc/PID/status shows nothing ignored or blocked (not Python's
    SIGPIPE/SIGXFSZ, not the runtime's SIGUSR2/SIGUSR1), with exec and with --init; so a
    shell under jailshim runs `yes | head -1` without "Broken pipe"."""
    control = _under_runtime(SIGNAL_FIELDS)  # the same runtime without jailshim in between
    assert _fields(control.stdout)["SigBlk"] != "0" * 16
    daemon = _under_runtime(jailshim_argv("run", *mode, "--", *SIGNAL_FIELDS))
    assert daemon.returncode == 0, daemon.stderr
    assert _fields(daemon.stdout) == {"SigIgn": "0" * 16, "SigBlk": "0" * 16}
    shell = _under_runtime(jailshim_argv("run", *mode, "--", "sh", "-c", "yes | head -1"))
    assert shell.returncode == 0 and shell.stdout == "y\n"
    assert "Broken pipe" not in shell.stderr, shell.stderr


# 3. Wrong words ---------------------------------------------------------------------------------


def _on_a_tty(argv: list[str]) -> tuple[int, str]:
    import pty

    out = bytearray()

    def read(fd: int) -> bytes:
        data = os.read(fd, 65536)
        out.extend(data)
        return data

    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(clean_env(NO_COLOR="1"))
    try:
        status = pty.spawn(argv, read)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_doctor_on_a_tty_says_each_finding_and_the_verdict_once(jail: Path) -> None:
    """doctor on a terminal: the table holds each finding once, with whose fact it is; the
    verdict's remedy appears once. (getrandom() denied with OpenSSL's marker: the library
    reads the devices, so the empty jail needs them.)"""
    seccomp = subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], check=False)
    need(seccomp.returncode == 0, "needs Debian's python3-seccomp")
    wrap = ["unshare", "--ipc", "/usr/bin/python3", str(Path(__file__).parent / "seccomp_run.py"),
            "deny", "ENOSYS", "--shm-marker", "--"]  # fmt: skip
    argv = jailshim_argv("doctor", "--chroot", str(jail), "--user", "nobody")
    code, text = _on_a_tty([*wrap, *argv])
    assert code == 69, text
    assert text.count("Fix: `jailshim prepare") == 1, text
    assert re.search(r"^✗ dev/urandom +jail ", text, re.M), text
    assert text.count("✗ dev/urandom") == 1 and "check=dev/urandom" not in text, text
    assert re.search(r"^✗ entropy \(OpenSSL 3[.0-9]*\) +probe +safe now, fragile", text, re.M)
    # issue 26: the verdict is the table's last word, not an `[error] failed error=…` line
    lines = text.strip().splitlines()
    assert lines[-2].startswith("✗ verdict: safe now, fragile: "), text
    assert lines[-1].startswith("  Fix: `jailshim prepare --chroot "), text
    assert text.count("verdict: ") == 1, text
    assert not re.search(r"\[(error|info|warning) *\]", text), text
    assert "error=" not in text and "doctor.verdict" not in text, text


def _uid(pid: int) -> int:
    """``pid``'s effective UID (-1 when it is gone)."""
    try:
        return int(status_field(pid, "Uid").split()[1])
    except OSError:
        return -1


_MASTER_AND_WORKER = """
import os, sys, time
master = os.getpid()
if os.fork() == 0:
    os.chroot(sys.argv[1]); os.setgid(65534); os.setuid(65534)
    while os.getppid() == master:  # gone with its master
        time.sleep(0.1)
    os._exit(0)
time.sleep(60)
"""


def test_doctor_on_a_tty_says_a_master_and_its_worker_in_a_heading(jail: Path) -> None:
    """Issue 26: on a terminal `doctor --pid MASTER` printed `[info] doctor.workers …` and
    `[info] doctor.daemon …` lines above the table. Now: a heading that names the worker, its
    master, its jail and user, the table, one verdict line; no log lines. Without a terminal
    the JSON events stay as they were."""
    from jailshim.doctor import chrooted_children

    libcrypto = f"/lib/{MULTIARCH}/libcrypto.so.3"
    need(os.path.exists(libcrypto), "needs Debian's libssl3")
    proc = subprocess.Popen(
        [sys.executable, "-c", _MASTER_AND_WORKER, str(jail)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # chrooted AND nobody: doctor looking between the worker's chroot and its setuid saw
        # root (the heading's "user nobody" raced a slow child on a loaded machine)
        (worker,) = wait_until(
            lambda: [w for w in chrooted_children(proc.pid) if _uid(w) == NOBODY],
            "the worker to chroot and become nobody",
        )
        args = ("doctor", "--pid", str(proc.pid), "--crypto-lib", libcrypto)
        code, text = _on_a_tty(jailshim_argv(*args))
        piped = run(*args)
    finally:
        stop(proc)
    assert code == 0, text
    lines = text.strip().splitlines()
    master = f"a worker of PID {proc.pid} \\(not chrooted itself\\)"
    assert re.fullmatch(f"PID {worker} python[.0-9]*, {master}: jail {jail}, user nobody", lines[0])
    assert re.match(r"^✓ getrandom\(\) +daemon +works", lines[1]), text
    assert lines[-1].startswith("✓ verdict: safe: OpenSSL 3 reads getrandom()"), text
    assert not re.search(r"\[(error|info|warning|debug) *\]", text), text
    assert "doctor." not in text, text
    assert piped.code == 0, piped.stderr
    assert piped.named("doctor.workers")[0]["workers"] == [worker]
    assert piped.named("doctor.daemon")[0]["pid"] == worker
    assert piped.named("doctor.verdict")[0]["verdict"].startswith("safe: OpenSSL 3")


def test_doctor_names_the_daemons_user(jail: Path) -> None:
    """doctor --pid says "ran as nobody" (as check does), not the bare UID."""
    code = (
        f"import os, time; os.chroot({str(jail)!r}); os.setgid(65534); os.setuid(65534); "
        "time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        # the uid, not only the chroot: doctor between the two read "ran as root"
        wait_until(lambda: _uid(proc.pid) == NOBODY, "the daemon to become nobody")
        result = run("doctor", "--pid", str(proc.pid))
    finally:
        stop(proc)
    privileges = next(e for e in result.events if e.get("check") == "privileges")
    assert str(privileges["detail"]).startswith("ran as nobody ("), privileges
    assert result.named("doctor.daemon")[0]["user"] == "nobody"


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("JAILSHIM_TIMEOUT", "soon", "JAILSHIM_TIMEOUT='soon' must be a positive number"),
        ("JAILSHIM_DEVICE", "zero,sda", "JAILSHIM_DEVICE='sda' is not an allowlisted"),
        ("JAILSHIM_USER", "no-such-user-jailshim", "User JAILSHIM_USER='no-such-user-jailshim'"),
        ("JAILSHIM_USER", "4294967295", "JAILSHIM_USER='4294967295' is not a valid UID"),
        ("JAILSHIM_WAIT_ADDR", "example.org", "JAILSHIM_WAIT_ADDR='example.org' is not a"),
        ("JAILSHIM_CHROOT", " ", "JAILSHIM_CHROOT is empty"),
        ("JAILSHIM_ONLY_DEVICES", "1", "JAILSHIM_ONLY_DEVICES needs at least one --device"),
    ],
)
def test_a_bad_variable_is_named_as_the_variable(variable: str, value: str, needle: str) -> None:
    """A value from the environment is reported under its JAILSHIM_ name, exit 64."""
    env = clean_env(**{variable: value})
    env.setdefault("JAILSHIM_CHROOT", "/nonexistent-jail")
    result = run("check", env=env)
    assert result.code == 64
    assert needle in result.error


def test_a_missing_haproxy_config_is_named_as_given() -> None:
    """--haproxy-config and JAILSHIM_HAPROXY_CONFIG that cannot be read: 78, named as given
    (not as an -f argument)."""
    flag = run("run", "--haproxy-config", "/nonexistent.cfg", "--", "true")
    assert flag.code == 78
    assert flag.error.startswith("--haproxy-config '/nonexistent.cfg' cannot be read")
    env = clean_env(JAILSHIM_HAPROXY_CONFIG="/nonexistent.cfg")
    variable = run("run", "--", "true", env=env)
    assert variable.code == 78
    assert variable.error.startswith("JAILSHIM_HAPROXY_CONFIG='/nonexistent.cfg' cannot be read")


def test_variables_for_other_commands_are_ignored_and_flags_refused(tmp_path: Path) -> None:
    """explain takes FILE only: `--init --strategy tmpfs` is refused (64), while a container's
    JAILSHIM_INIT/STRATEGY/TIMEOUT, wrong even, do not concern it."""
    refused = run("explain", "--init", "--strategy", "tmpfs")
    assert refused.code == 64
    assert refused.error.startswith("jailshim explain does not take --init")
    (tmp_path / "log").write_text(SEED_LINE)
    env = clean_env(JAILSHIM_INIT="maybe", JAILSHIM_STRATEGY="magic", JAILSHIM_TIMEOUT="x")
    assert run("explain", str(tmp_path / "log"), env=env).code == 0
    assert run("check", "--init").code == 64
    assert run("teardown", "--chroot", str(tmp_path), "--device", "zero").code == 64


def _readme_options() -> dict[str, set[str]]:
    """The README's options table: each flag and the commands its row names."""
    section = README.read_text().split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) < 3 or not cells[0].startswith("`--"):
            continue
        commands = set(cells[1].replace(",", " ").split())
        for flag in re.findall(r"`(--[a-z-]+)", cells[0]):
            rows[flag] = commands
    return rows


def test_readme_options_table_matches_the_code() -> None:
    """Every option (--pid too) is in the README's table with the commands that take it, as
    each command's --help lists them."""
    code: dict[str, set[str]] = {}
    for command in ("run", "prepare", "check", "teardown", "doctor", "explain"):
        helped = run(command, "--help")
        assert helped.code == 0, helped.stderr
        for flag in re.findall(r"^  (--[a-z][a-z-]*)", helped.stdout, re.M):
            code.setdefault(flag, set()).add(command)
    assert code.pop("--help", None) is None  # -h, --help: its line starts with -h
    assert _readme_options() == code


def test_device_adds_to_the_defaults_and_only_devices_replaces_them(jail: Path) -> None:
    """--device zero: urandom random null and zero; with --only-devices: zero alone."""
    added = run("prepare", "--chroot", str(jail), "--dry-run", "--device", "zero")
    assert added.code == 0, added.stderr
    assert re.findall(r"^dev/(\w+)", added.stdout, re.M) == ["urandom", "random", "null", "zero"]
    only = run("prepare", "--chroot", str(jail), "--dry-run", "--device", "zero", "--only-devices")
    assert re.findall(r"^dev/(\w+)", only.stdout, re.M) == ["zero"]
    assert run("prepare", "--chroot", str(jail), "--only-devices").code == 64
    assert not (jail / "dev").exists()


# 4. Tracebacks and wrong codes ------------------------------------------------------------------


# The commands as `jailshim --help` lists them (the case without one checks that list is this)
COMMANDS = ("run", "prepare", "check", "teardown", "doctor", "explain")


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_with_stdout_closed(command: list[str]) -> None:
    """`jailshim [COMMAND] --help >&-`: exit 0, no traceback."""
    result = in_shell('exec "$@" >&-', *jailshim_argv(*command, "--help"))
    assert result.code == 0 and result.stderr == "", result.stderr
    if not command:  # every command is here: one the help lists and this test did not is caught
        listed = in_shell('exec "$@"', *jailshim_argv("--help")).stdout
        block = listed.split("  COMMAND\n", 1)[1].split("\n\n", 1)[0]
        assert tuple(line.split()[0] for line in block.splitlines()) == COMMANDS, listed


def test_commands_with_stdout_closed(jail: Path, tmp_path: Path) -> None:
    """Every command runs with stdout closed, exits as it would, and the daemon finds
    /dev/null on fd 1 (not a file that happened to take fd 1)."""
    (tmp_path / "log").write_text(SEED_LINE)
    closed = 'exec "$@" >&-'
    assert in_shell(closed, *jailshim_argv("prepare", "--chroot", str(jail), "--dry-run")).code == 0
    assert in_shell(closed, *jailshim_argv("explain", str(tmp_path / "log"))).code == 0
    assert in_shell(closed, *jailshim_argv("prepare", "--chroot", str(jail))).code == 0
    assert in_shell(closed, *jailshim_argv("check", "--chroot", str(jail))).code == 0
    assert in_shell(closed, *jailshim_argv("doctor", "--chroot", str(jail))).code == 0
    assert in_shell(closed, *jailshim_argv("teardown", "--chroot", str(jail))).code == 0
    show = "import os, sys; sys.stderr.write(os.readlink('/proc/self/fd/1') + '\\n')"
    daemon = in_shell(closed, *jailshim_argv("run", "--", sys.executable, "-c", show))
    assert daemon.code == 0 and daemon.stderr.splitlines()[-1] == "/dev/null", daemon.stderr


def _reader_gone(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with stdout a pipe whose reader has already exited (`… | true`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            argv,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


def test_a_reader_that_went_away_is_not_a_failure(jail: Path, tmp_path: Path) -> None:
    """`--dry-run | true` and `explain | true` (EPIPE): quiet, and the command's own code."""
    dry = _reader_gone(jailshim_argv("prepare", "--chroot", str(jail), "--dry-run"))
    assert dry.returncode == 0 and '"failed"' not in dry.stderr, dry.stderr
    assert not (jail / "dev").exists()
    (tmp_path / "seen").write_text(SEED_LINE)
    (tmp_path / "unseen").write_text("all good\n")
    assert _reader_gone(jailshim_argv("explain", str(tmp_path / "seen"))).returncode == 0
    assert _reader_gone(jailshim_argv("explain", str(tmp_path / "unseen"))).returncode == 1
    helped = _reader_gone(jailshim_argv("run", "--help"))
    assert helped.returncode == 0 and helped.stderr == ""


def test_a_full_disk_on_stdout_is_an_os_error(jail: Path) -> None:
    """stdout on /dev/full: one sentence, 71."""
    result = in_shell(
        'exec "$@" > /dev/full', *jailshim_argv("prepare", "--chroot", str(jail), "--dry-run")
    )
    assert result.code == 71
    assert "could not write to its standard output" in result.error


def test_a_path_too_long_is_a_usage_error(tmp_path: Path) -> None:
    """A 4,240-character path: one sentence naming flag or variable, 64 (any command)."""
    long = "/tmp/" + "/".join(["d" * 200] * 21) + "/" + "x" * 14
    assert len(long) == 4240
    for command in ("prepare", "check", "teardown", "doctor"):
        result = run(command, "--chroot", long)
        assert result.code == 64, result.stderr
        assert result.error.startswith("--chroot '/tmp/ddd") and "is too long" in result.error
        assert len(result.error) < 300
    env = clean_env(JAILSHIM_CHROOT=long)
    assert run("run", "--", "true", env=env).error.startswith("JAILSHIM_CHROOT='/tmp/")
    assert run("explain", long).code == 64
    name = run("prepare", "--chroot", str(tmp_path / ("n" * 300)))
    assert name.code == 64 and "the longest name 300" in name.error


@pytest.mark.parametrize("command", ["prepare", "check"])
def test_out_of_file_descriptors_is_an_os_error(jail: Path, command: str) -> None:
    """`ulimit -n 5`: one sentence on the limit, 71, and nothing made in the jail."""
    before = snapshot(jail)
    result = in_shell('ulimit -n 5; exec "$@"', *jailshim_argv(command, "--chroot", str(jail)))
    assert result.code == 71, result.stderr
    assert "ran out of file descriptors (EMFILE" in result.error
    assert snapshot(jail) == before


def _ran_as(result: Result) -> tuple[str, int]:
    detail = next(str(e["detail"]) for e in result.events if e.get("check") == "privileges")
    hit = re.match(r"ran as (\S+) \(uid (\d+)/", detail)
    assert hit, detail
    return hit.group(1), int(hit.group(2))


def test_user_names_win_over_uids_as_chown_decides(jail: Path, tmp_path: Path) -> None:
    """With a user *named* "64123" (uid 64124): --user 64123 is that user, --user +64123 is
    uid 64123, --user 64124 finds the user by its UID (coreutils chown's rule)."""
    assert run("prepare", "--chroot", str(jail), "--no-verify").code == 0
    passwd = tmp_path / "passwd"
    passwd.write_text(
        Path("/etc/passwd").read_text() + "64123:x:64124:64124::/nonexistent:/usr/sbin/nologin\n"
    )
    script = 'mount --bind "$0" /etc/passwd && exec "$@"'
    seen = {}
    for user in ("64123", "+64123", "64124", "+0"):
        result = in_shell(
            f"exec unshare --mount --propagation private sh -c '{script}' {passwd} \"$@\"",
            *jailshim_argv("check", "--chroot", str(jail), "--user", user),
        )
        assert result.code == 0, result.stderr
        seen[user] = _ran_as(result)
    assert seen == {
        "64123": ("64123", 64124),
        "+64123": ("64123", 64123),
        "64124": ("64123", 64124),
        "+0": ("root", 0),
    }


def test_a_script_whose_interpreter_is_missing_fails_before_prepare(jail: Path, area: Path) -> None:
    """#! names a missing interpreter: 127 naming it; not executable: 126; the jail untouched;
    a DOS line end's \\r is shown as part of the name."""
    before = snapshot(jail)

    def script(name: str, first_line: str) -> str:
        path = area / name
        path.write_text(first_line + "\necho hello\n")
        path.chmod(0o755)
        return str(path)

    interp = area / "not-executable"
    interp.write_text("")
    interp.chmod(0o644)
    cases = [
        (script("missing", "#!/nonexistent/python3 -u"), 127, "'/nonexistent/python3'"),
        (script("dos", "#!/bin/sh\r"), 127, "'/bin/sh\\r'"),
        (script("not-exec", f"#!  {interp} arg"), 126, f"interpreter {interp} "),
        (script("nested", f"#!{area / 'missing'}"), 127, "'/nonexistent/python3'"),
        (script("empty", "#!"), 126, "names no interpreter"),
    ]
    for path, code, needle in cases:
        for mode in ([], ["--init"]):
            result = run("run", *mode, "--chroot", str(jail), "--", path)
            assert result.code == code, (path, result.stderr)
            assert needle in result.error and "#!" in result.error, result.error
    assert snapshot(jail) == before
    ok = script("fine", "#!/bin/sh")
    assert run("run", "--chroot", str(jail), "--no-verify", "--", ok).code == 0


def test_explain_reads_stdin_that_is_not_utf8() -> None:
    """Pasted logs with stray bytes are still explained (no UnicodeDecodeError, no 70)."""
    proc = subprocess.run(
        jailshim_argv("explain"),
        input=b"\xff\xfe " + SEED_LINE.encode(),
        capture_output=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and b"SSL_new malloc failure" in proc.stdout, proc.stderr
