"""Pure verdicts of the probe: facts in, findings out."""

from __future__ import annotations

import errno

from jailshim.devices import ALLOWLIST
from jailshim.verify.entropy import (
    CHECK_FAILS,
    ProbeEntropy,
    ProbeLibrary,
    absent_only,
    getrandom_of,
    judge_entropy,
    worst,
)
from jailshim.verify.findings import (
    DeviceFacts,
    Finding,
    NotifyFacts,
    judge_device,
    judge_getrandom,
    judge_notify,
    render_table,
)
from jailshim.verify.verdict import (
    Decision,
    EntropyFacts,
    Getrandom,
    Library,
    Remedy,
    Verdict,
)

URANDOM = ALLOWLIST["urandom"]
GOOD = DeviceFacts(
    is_char=True, numbers="1:9", mode=0o666, samples=(bytes(range(64)), bytes(range(1, 65)))
)


def test_good_entropy_device_passes() -> None:
    """A 1:9 node that gives two different, non-constant reads passes."""
    assert judge_device(URANDOM, GOOD, 65534).ok


def test_constant_or_repeated_bytes_fail() -> None:
    """Zeros, or the same 64 bytes twice, are not randomness."""
    zeros = DeviceFacts(is_char=True, numbers="1:9", samples=(b"\0" * 64, b"\0" * 64))
    same = DeviceFacts(is_char=True, numbers="1:9", samples=(bytes(range(64)),) * 2)
    for facts in (zeros, same):
        verdict = judge_device(URANDOM, facts, 65534)
        assert not verdict.ok and not verdict.transient


def test_missing_is_not_transient_and_claims_nothing_about_getrandom() -> None:
    """ENOENT fails at once (issue 26: nothing makes a node after prepare; waiting for one
    made an empty jail's check wait out --timeout before saying "run prepare"). Whether the
    daemon needs the node is the entropy verdict's to say: the row no longer claims
    "getrandom() is unusable here, so every crypto library depends on this node" (false for
    OpenSSL >= 1.1.1d on a kernel >= 4.8 without the marker: it never reads the devices;
    issue 23)."""
    verdict = judge_device(URANDOM, DeviceFacts(lstat_errno=errno.ENOENT), 65534)
    assert not verdict.transient and verdict.whose == "jail"
    assert "jailshim prepare" in verdict.remedy
    assert "getrandom" not in verdict.detail and "every crypto library" not in verdict.detail


def test_null_full_behaviour() -> None:
    """null accepts writes, full answers ENOSPC."""
    null, full = ALLOWLIST["null"], ALLOWLIST["full"]
    assert judge_device(null, DeviceFacts(is_char=True, numbers="1:3", write_result="ok"), 0).ok
    assert judge_device(full, DeviceFacts(is_char=True, numbers="1:7", write_result="ENOSPC"), 0).ok
    assert not judge_device(full, DeviceFacts(is_char=True, numbers="1:7", write_result="ok"), 0).ok


def test_getrandom_verdicts() -> None:
    """EAGAIN: RNG not ready (transient); ENOSYS/EPERM: unusable (warning); 0: all good."""
    rng, gr, usable = judge_getrandom(errno.EAGAIN)
    assert not rng.ok and rng.transient and gr.ok and usable
    rng, gr, usable = judge_getrandom(errno.ENOSYS)
    assert rng.ok and gr.warning and not usable
    # the old claim, false for OpenSSL >= 1.1.1d on a kernel >= 4.8 (issue 23), is gone
    assert "fall back" not in gr.detail and "essential" not in gr.detail
    assert {rng.whose, gr.whose} == {"probe"}
    rng, gr, usable = judge_getrandom(0)
    assert rng.ok and gr.ok and not gr.warning and usable


def test_table_marks_and_remedies() -> None:
    """✓ for passes, ! for warnings, ✗ with an arrowed remedy for failures."""
    text = render_table(
        [
            Finding("dev/urandom", True, "fine"),
            Finding("getrandom()", True, "denied", warning=True),
            Finding("dev/null", False, "missing", "run prepare"),
        ]
    )
    lines = text.splitlines()
    assert lines[0].startswith("✓ dev/urandom") and lines[1].startswith("! getrandom()")
    assert lines[2].startswith("✗ dev/null") and lines[3].strip() == "→ run prepare"


def test_table_and_json_say_whose_fact_each_row_is() -> None:
    """Issue 23: doctor's "✓ getrandom() usable" was jailshim's probe's, said of a daemon whose
    filter denied it. Each row names its owner on the TTY and in JSON."""
    rows = [
        Finding("getrandom()", True, "ENOSYS: its filter", warning=True, whose="daemon"),
        Finding("getrandom() (probe)", True, "usable", whose="probe"),
        Finding("dev/urandom", False, "missing", "prepare", whose="jail"),
    ]
    lines = render_table(rows).splitlines()
    assert lines[0].split()[:3] == ["!", "getrandom()", "daemon"]
    assert lines[1].split()[:4] == ["✓", "getrandom()", "(probe)", "probe"]
    assert lines[2].split()[:3] == ["✗", "dev/urandom", "jail"]
    assert rows[2].to_json()["whose"] == "jail"
    assert Finding.from_json(rows[0].to_json()) == rows[0]


def test_notify_socket_verdicts_name_the_cause() -> None:
    """A connect() that works passes; each failure names its own cause, and none is transient
    (nothing makes the socket appear or change by itself)."""
    path = "/run/systemd/notify"
    assert judge_notify(path, NotifyFacts(), 102).ok

    def sock(err: int, mode: int = 0o777) -> NotifyFacts:
        return NotifyFacts(err, kind="a socket", mode=mode, owner="0:0")

    causes = {
        NotifyFacts(errno.ENOENT, lstat_errno=errno.ENOENT): "does not exist in the jail",
        NotifyFacts(errno.EACCES, lstat_errno=errno.EACCES): "directory on its path",
        NotifyFacts(errno.ECONNREFUSED, kind="a regular file of 0 bytes"): "a regular file",
        sock(errno.EACCES, 0o755): "(mode 0755, owner 0:0) refuses",
        sock(errno.ECONNREFUSED): "nothing listens on",
        sock(errno.EPROTOTYPE): "stream socket",
        sock(errno.ENOMEM): "(ENOMEM)",
    }
    for facts, cause in causes.items():
        verdict = judge_notify(path, facts, 102)
        assert not verdict.ok and not verdict.transient and verdict.remedy
        assert verdict.detail.startswith(f"$NOTIFY_SOCKET {path} ") and cause in verdict.detail


# ---- the entropy rows, from verdict.decide() (jailshim/verify/entropy.py) -------------------

OSSL3 = ProbeLibrary("OpenSSL", "OpenSSL 3.0.19 27 Jan 2026", "OpenSSL 3.0.19 reseed")
MISSING = Finding("dev/urandom", False, "dev/urandom does not exist.", "prepare", whose="jail")
RESEED_FAILED = Finding("OpenSSL 3.0.19 reseed", False, "no primary DRBG", "x", whose="probe")


def _judge(getrandom: Getrandom, marker: bool, rows: list[Finding]) -> list[Finding]:
    facts = EntropyFacts(Library.UNKNOWN, getrandom, kernel=(6, 1), marker=marker, nodes=False)
    judged, verdicts, _ = judge_entropy(
        rows, facts, (OSSL3,), absent=("dev/urandom",), fails=CHECK_FAILS,
        prepare="run `jailshim prepare`", whose="probe",
    )  # fmt: skip
    return verdicts + judged


def test_a_missing_node_is_information_when_the_library_reads_getrandom() -> None:
    """Issue 23, the Debian haproxy case: OpenSSL 3, getrandom() works, no dev/urandom."""
    verdict, node = _judge(Getrandom.WORKS, False, [MISSING])
    assert verdict.ok and verdict.detail == "safe: OpenSSL 3 reads getrandom(), which works"
    assert node.ok and node.warning and not node.transient and "not needed now" in node.detail


def test_a_missing_node_fails_where_the_library_reads_it() -> None:
    verdict, node = _judge(Getrandom.ENOSYS, True, [MISSING])
    assert not verdict.ok and verdict.detail.startswith("safe now, fragile")
    # not waited for (issue 26): the node will not appear by itself
    assert verdict.remedy == "run `jailshim prepare`" and not verdict.transient
    assert not node.ok and not node.transient


def test_a_library_that_cannot_seed_fails_naming_the_filter() -> None:
    """Issue 23, case 2: the reseed row fails (never "ok, skipped") with the filter's remedy."""
    verdict, node, reseed = _judge(Getrandom.EPERM, False, [MISSING, RESEED_FAILED])
    assert not verdict.ok and verdict.detail.startswith("will fail at start: getrandom() fails")
    assert "SystemCallFilter=" in verdict.remedy and "does not help" in verdict.remedy
    assert not reseed.ok and reseed.remedy == verdict.remedy and not reseed.transient
    assert node.ok and node.warning  # the jail is not what fails it


def test_only_an_absent_node_is_excused() -> None:
    """A wrong node gives non-random bytes to whoever reads it: never downgraded."""
    assert absent_only(DeviceFacts(lstat_errno=errno.ENOENT))
    assert absent_only(DeviceFacts(is_char=True, numbers="1:9", open_errno=errno.EACCES))
    assert not absent_only(DeviceFacts(kind="a regular file of 4096 bytes"))
    assert not absent_only(DeviceFacts(is_char=True, numbers="1:9", samples=(b"\0" * 64,) * 2))


def test_probe_facts_map_onto_the_table() -> None:
    assert [getrandom_of(e) for e in (0, errno.EAGAIN, errno.ENOSYS, errno.EPERM, errno.EIO)] == [
        Getrandom.WORKS, Getrandom.WORKS, Getrandom.ENOSYS, Getrandom.EPERM, Getrandom.OTHER,
    ]  # fmt: skip
    facts = ProbeEntropy(38, True, (2, 6), (OSSL3,), ("dev/urandom",), False)
    assert ProbeEntropy.from_json(facts.to_json()) == facts


def test_the_worst_decision_is_the_verdict_line() -> None:
    said = [Decision(v, Remedy.NONE, str(v)) for v in Verdict]
    assert worst(said).verdict is Verdict.WILL_FAIL
    assert worst(said[:1] + said[3:]).verdict is Verdict.CANNOT_TELL
    assert worst([said[0], said[1]]).verdict is Verdict.FRAGILE
