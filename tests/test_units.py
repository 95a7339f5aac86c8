"""Small pure pieces: mountinfo parsing, powers, the exit-code table, CLI and env handling."""

from __future__ import annotations

import io
import json

import pytest

from jailshim import log
from jailshim.cli import parse_args
from jailshim.devices import ALLOWLIST, select
from jailshim.errors import (
    EXIT_CODES,
    CannotTell,
    CheckFailed,
    CommandNotExecutable,
    CommandNotFound,
    ConfigError,
    JailshimError,
    NoInput,
    NotPermitted,
    SystemRefused,
    UsageError,
    exit_code_for,
)
from jailshim.jail.mounts import MountTable, parse_mountinfo
from jailshim.jail.powers import decide_powers, parse_effective_caps
from jailshim.options import (
    CheckOptions,
    DoctorOptions,
    PrepareOptions,
    RunOptions,
    TeardownOptions,
)

MOUNTINFO = (
    "22 1 0:21 / / rw - ext4 /dev/vda rw\n"
    "36 22 0:6 /urandom /srv/my\\040jail/dev/urandom ro,nosuid - devtmpfs devtmpfs rw\n"
    "37 22 0:40 / /srv/j/dev rw,nodev - tmpfs jailshim rw,mode=755\n"
    "garbage line\n"
)


def test_mountinfo_is_parsed_with_octal_escapes() -> None:
    """Spaces in mount points arrive as \\040 and are decoded; junk lines are skipped."""
    table = MountTable(parse_mountinfo(MOUNTINFO))
    assert len(table) == 3
    assert table.at("/srv/my jail/dev/urandom") is not None
    entry = table.at("/srv/j/dev")
    assert entry is not None and entry.source == "jailshim" and entry.fstype == "tmpfs"


def test_powers_from_capabilities_and_namespaces() -> None:
    """CAP_MKNOD counts only in the initial user namespace; mounting needs the mount ns owner."""
    full = (1 << 27) | (1 << 21)
    assert decide_powers(full, True, None) == decide_powers(full, True, True)
    assert decide_powers(full, True, None).can_mknod
    userns = decide_powers(full, False, True)
    assert not userns.can_mknod and userns.can_mount
    parent_owned = decide_powers(full, False, False)
    assert not parent_owned.can_mount and "parent user namespace" in parent_owned.no_mount_because
    none = decide_powers(0, True, None)
    assert "CAP_MKNOD" in none.no_mknod_because and "CAP_SYS_ADMIN" in none.no_mount_because
    assert parse_effective_caps("Name:\tx\nCapEff:\t000001ffffffffff\n") == 0x1FFFFFFFFFF


def test_exit_code_table_is_complete_and_documented() -> None:
    """Every failure class maps to its documented code."""
    assert {cls: code for cls, code in EXIT_CODES.items()} == {
        UsageError: 64,
        NoInput: 66,
        CheckFailed: 69,
        CannotTell: 75,
        SystemRefused: 71,
        NotPermitted: 77,
        ConfigError: 78,
        CommandNotExecutable: 126,
        CommandNotFound: 127,
    }

    class Unlisted(JailshimError):
        pass

    class SubConfig(ConfigError):
        pass

    assert exit_code_for(SubConfig("x")) == 78
    assert exit_code_for(Unlisted("x")) == 70


def test_doctor_verdict_exit_table() -> None:
    """doctor's entropy verdicts -> exit codes, in one table keyed by every verdict there is:
    0 safe, 69 action needed, 75 cannot tell (EX_TEMPFAIL)."""
    from jailshim.errors import VERDICT_ERRORS
    from jailshim.verify.verdict import Verdict

    assert set(VERDICT_ERRORS) == {str(v) for v in Verdict}
    codes = {
        v: 0 if (e := VERDICT_ERRORS[v]) is None else exit_code_for(e("x")) for v in VERDICT_ERRORS
    }
    assert codes == {"safe": 0, "safe now, fragile": 69, "will fail": 69, "cannot tell": 75}


def test_device_allowlist() -> None:
    """Only the six allowlisted character devices, with fixed numbers; /dev/ prefix accepted."""
    assert {d: ALLOWLIST[d].numbers for d in ALLOWLIST} == {
        "null": "1:3",
        "zero": "1:5",
        "full": "1:7",
        "random": "1:8",
        "urandom": "1:9",
        "tty": "5:0",
    }
    assert [d.name for d in select(["/dev/urandom", "null", "urandom"])] == ["urandom", "null"]
    with pytest.raises(UsageError):
        select(["sda"])


def test_environment_fills_unset_options_and_flags_win() -> None:
    """JAILSHIM_* fills what the flags left unset; a flag always wins."""
    env = {
        "JAILSHIM_CHROOT": "/from/env",
        "JAILSHIM_DEVICE": "zero, null",
        "JAILSHIM_DRY_RUN": "yes",
        "JAILSHIM_TIMEOUT": "5",
        "JAILSHIM_STRATEGY": "bind",
    }
    args = parse_args(["prepare"], env)
    assert isinstance(args, PrepareOptions)
    assert args.chroot == "/from/env" and args.device == ("zero", "null")
    assert args.dry_run is True and args.timeout == 5.0 and args.strategy == "bind"
    args = parse_args(["prepare", "--chroot", "/flag", "--device", "tty"], env)
    assert isinstance(args, PrepareOptions)
    assert args.chroot == "/flag" and args.device == ("tty",)
    assert args.origin("chroot") == "--chroot" and args.origin("device") == "--device"
    assert args.origin("timeout") == "JAILSHIM_TIMEOUT" and args.origin("user") == "--user"
    with pytest.raises(UsageError, match="JAILSHIM_STRATEGY"):
        parse_args(["prepare"], {"JAILSHIM_STRATEGY": "magic"})
    with pytest.raises(UsageError, match="yes/no"):
        parse_args(["run"], {"JAILSHIM_INIT": "maybe"})


def test_each_command_takes_only_its_own_options() -> None:
    """A flag of another command is a usage error naming the command; a variable of another
    command is ignored, even with a value that would be wrong (a container sets them all)."""
    with pytest.raises(UsageError, match=r"jailshim explain does not take --init"):
        parse_args(["explain", "--init", "--strategy", "tmpfs"], {})
    with pytest.raises(UsageError, match=r"jailshim check does not take --strategy"):
        parse_args(["check", "--strategy", "bind"], {})
    with pytest.raises(UsageError, match=r"jailshim teardown does not take --user"):
        parse_args(["teardown", "--user", "nobody"], {})
    env = {"JAILSHIM_INIT": "maybe", "JAILSHIM_STRATEGY": "magic", "JAILSHIM_KILL_GROUP": "x"}
    args = parse_args(["teardown", "--chroot", "/j", "--dry-run"], env)
    assert isinstance(args, TeardownOptions) and args.dry_run is True
    assert set(args.origins) == {"chroot", "dry_run"}  # the variables of others: not read
    doctor = parse_args(["doctor", "--pid", "1"], env)
    assert isinstance(doctor, DoctorOptions) and doctor.pids == (1,)


def test_values_from_the_environment_are_named_as_variables() -> None:
    """A bad JAILSHIM_TIMEOUT is reported as JAILSHIM_TIMEOUT, a bad --timeout as --timeout."""
    with pytest.raises(UsageError, match=r"^JAILSHIM_TIMEOUT='soon' must be a positive"):
        parse_args(["check"], {"JAILSHIM_TIMEOUT": "soon"})
    with pytest.raises(UsageError, match=r"^--timeout 'soon' must be a positive"):
        parse_args(["check", "--timeout", "soon"], {})
    with pytest.raises(UsageError, match=r"^JAILSHIM_PID='x' is not a process ID"):
        parse_args(["doctor"], {"JAILSHIM_PID": "x"})


@pytest.mark.parametrize("budget", ["inf", "-inf", "nan", "1e300", "86401", "0", "-3"])
def test_absurd_retry_budgets_are_refused(budget: str) -> None:
    """--timeout must be finite, positive and at most a day (86400 s)."""
    with pytest.raises(UsageError, match="at most 86400"):
        parse_args(["check", f"--timeout={budget}"], {})
    checked = parse_args(["check", "--timeout", "86400"], {})
    assert isinstance(checked, CheckOptions) and checked.timeout == 86400.0


def test_run_takes_the_command_after_double_dash() -> None:
    """Everything after -- is the daemon's argv, untouched."""
    args = parse_args(["run", "--chroot", "/j", "--", "haproxy", "-f", "/x", "--chroot"], {})
    assert isinstance(args, RunOptions)
    assert args.argv == ("haproxy", "-f", "/x", "--chroot")


def test_json_logs_when_not_a_tty() -> None:
    """auto on a non-TTY stream: one JSON object per line, event first."""
    stream = io.StringIO()
    log.setup("auto", "info", stream=stream)
    log.get_logger().info("hello", device="urandom")
    line = json.loads(stream.getvalue())
    assert next(iter(line)) == "timestamp" and line["event"] == "hello"
    assert line["device"] == "urandom" and line["level"] == "info"


def test_console_logs_and_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    """console format is plain text; NO_COLOR keeps ANSI codes out; levels filter."""
    monkeypatch.setenv("NO_COLOR", "1")
    stream = io.StringIO()
    log.setup("console", "warning", stream=stream)
    log.get_logger().info("hidden")
    log.get_logger().warning("shown", device="null")
    text = stream.getvalue()
    assert "hidden" not in text and "shown" in text and "device=null" in text
    assert "\x1b[" not in text


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # on purpose
def test_a_stop_signal_lost_in_a_finalizer_still_ends_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stop signal's handler runs at any bytecode, also inside a finalizer, where Python
    prints "Exception ignored" and goes on (pyroute2's asyncio loop has many): `run` then
    waited out its whole --timeout after a SIGTERM. The wait asks again before each attempt
    and each sleep."""
    import signal

    from jailshim import stopsignals
    from jailshim.verify.findings import Finding
    from jailshim.verify.retry import verify_with_retries

    monkeypatch.setattr(stopsignals, "_received", [])

    class HandlerRunsHere:
        def __del__(self) -> None:
            stopsignals.interrupt(signal.SIGTERM, None)

    attempts: list[int] = []

    def probe() -> list[Finding]:
        attempts.append(1)
        HandlerRunsHere()  # finalized at once: the handler's exception is swallowed
        return [Finding("address 192.0.2.77", False, "absent", transient=True)]

    with pytest.raises(stopsignals.Interrupted) as raised:
        verify_with_retries(probe, timeout=10, log=log.get_logger())
    assert raised.value.signum == signal.SIGTERM
    assert attempts == [1]


def test_every_option_a_command_takes_has_a_field_in_its_record() -> None:
    """The option table drives the records: each option a command takes is a field of that
    command's record (by its dest; --pid as pids, an adapter's --NAME-config in
    daemon_configs), so no value parsed can be dropped on the way to the command."""
    # cli's private table on purpose: the test is about the option table itself
    from jailshim import cli, daemons

    for record, command in cli._NAMES.items():
        names = record.FIELDS
        taken = {o.dest for o in cli._OPTIONS if command in o.commands}
        taken = {"pids" if d == "pid" else d for d in taken - set(daemons.config_options())}
        assert taken <= names, (command, sorted(taken - names))
        if command == "run":
            assert "daemon_configs" in names


def test_a_budget_spent_between_two_looks_is_no_internal_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """verify_with_retries looked at the time left (positive), then slept that long, read
    again: on a loaded machine it had turned negative, time.sleep raised ValueError and `run
    --wait-addr --timeout 0.3` exited 70 (2 in 25 beside two busy loops). A clock that moves
    0.1 s at each look makes it happen every time."""
    import itertools

    from jailshim.verify import retry
    from jailshim.verify.findings import Finding

    clock = itertools.count(0.0, 0.1)
    monkeypatch.setattr("jailshim.verify.retry.time.monotonic", lambda: next(clock))
    waiting = Finding("address 127.0.0.1", ok=False, detail="lo is down", transient=True)

    class Quiet:
        def log(self, *args: object, **facts: object) -> None:
            pass

        debug = info = warning = error = log  # a Logger (jailshim.logs)

    outcome = retry.verify_with_retries(lambda: [waiting], 0.45, Quiet())
    assert outcome.failing == [waiting]
