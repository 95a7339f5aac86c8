"""The entropy verdict table (jailshim/verify/verdict.py), tested as a table."""

from __future__ import annotations

import pytest

from jailshim.verify.verdict import (
    EntropyFacts,
    Getrandom,
    Library,
    Remedy,
    Verdict,
    decide,
    library_of,
)

O3, O111, OOLD = Library.OPENSSL_3, Library.OPENSSL_111, Library.OPENSSL_OLD
GT, NA, UNK = Library.GNUTLS, Library.LIBSODIUM, Library.UNKNOWN
W, NOSYS, PERM, G_UNK = Getrandom.WORKS, Getrandom.ENOSYS, Getrandom.EPERM, Getrandom.UNKNOWN
NEW, OLD = (6, 1), (2, 6)
SAFE, FRAGILE, FAIL, UNSURE = Verdict.SAFE, Verdict.FRAGILE, Verdict.WILL_FAIL, Verdict.CANNOT_TELL
NONE, PREP, ALLOW = Remedy.NONE, Remedy.PREPARE, Remedy.ALLOW_GETRANDOM

# (library, getrandom, kernel, marker, kept fd, nodes, running) -> (verdict, remedy, when)
TABLE = [
    # Debian's haproxy, OpenSSL 3, no filter, empty jail: it reseeds from getrandom() (issue 23,
    # case 1: doctor said "will fail")
    ((O3, W, NEW, False, False, False, True), (SAFE, NONE, "")),
    ((O111, W, NEW, None, None, False, False), (SAFE, NONE, "")),
    ((GT, W, None, None, None, False, True), (SAFE, NONE, "")),
    ((NA, W, None, None, None, None, False), (SAFE, NONE, "")),
    # getrandom() denied on a modern kernel without the marker: the devices are never read,
    # a prepared jail does not help (issue 23, case 2: check passed)
    ((O3, NOSYS, NEW, False, False, True, False), (FAIL, ALLOW, "at start")),
    ((O3, PERM, NEW, False, False, True, True), (FAIL, ALLOW, "at its next reseed")),
    ((O111, NOSYS, NEW, False, None, True, False), (FAIL, ALLOW, "at start")),
    # ...with the marker, or a kernel seen as 2.6, the devices are read
    ((O3, NOSYS, NEW, True, False, True, False), (SAFE, NONE, "")),
    ((O3, NOSYS, OLD, False, False, True, False), (SAFE, NONE, "")),
    ((O3, NOSYS, NEW, True, None, False, False), (FRAGILE, PREP, "")),
    ((O3, NOSYS, NEW, True, True, False, True), (FRAGILE, PREP, "")),
    ((O3, NOSYS, NEW, True, False, False, True), (FAIL, PREP, "at its next reseed")),
    ((O111, PERM, OLD, None, False, False, True), (FAIL, PREP, "at its next reseed")),
    # marker or kernel not known: cannot tell, unless neither matters
    ((O3, NOSYS, NEW, None, False, True, True), (UNSURE, NONE, "")),
    ((O3, NOSYS, None, False, False, True, True), (UNSURE, NONE, "")),
    # OpenSSL before 1.1.1d has no marker test
    ((OOLD, NOSYS, NEW, False, False, True, True), (SAFE, NONE, "")),
    (
        (OOLD, NOSYS, NEW, False, False, False, True),
        (FAIL, Remedy.PREPARE_AND_RESTART, "at its next reseed"),
    ),
    # GnuTLS falls back on any error but EAGAIN, and opens the device at every read: no fd
    # carries it (measured, docs/entropy-matrix.md)
    ((GT, NOSYS, NEW, None, False, True, True), (SAFE, NONE, "")),
    ((GT, PERM, NEW, None, False, True, True), (SAFE, NONE, "")),
    ((GT, NOSYS, NEW, None, True, False, True), (FAIL, PREP, "at its next reseed")),
    ((GT, PERM, NEW, None, None, False, False), (FAIL, PREP, "at its next reseed")),
    # libsodium opens the device once, in sodium_init(), and keeps it
    ((NA, NOSYS, NEW, None, True, False, True), (SAFE, NONE, "")),
    (
        (NA, PERM, NEW, None, False, False, True),
        (FAIL, Remedy.PREPARE_AND_RESTART, "at its next reseed"),
    ),
    ((NA, PERM, NEW, None, None, False, False), (FRAGILE, Remedy.PREPARE_AND_RESTART, "")),
    # the daemon's filter not evaluated
    ((O3, G_UNK, NEW, True, False, True, True), (SAFE, NONE, "")),
    ((O3, G_UNK, NEW, False, False, True, True), (UNSURE, NONE, "")),
    # a live daemon without nodes: whether it keeps an fd decides
    ((O3, NOSYS, NEW, True, None, False, True), (UNSURE, NONE, "")),
    # no library known
    ((UNK, W, NEW, None, None, True, True), (SAFE, NONE, "")),
    ((UNK, W, NEW, None, None, False, True), (UNSURE, NONE, "")),
    ((UNK, NOSYS, NEW, None, None, True, True), (UNSURE, NONE, "")),
]


@pytest.mark.parametrize(("row", "expected"), TABLE)
def test_the_table(row: tuple[object, ...], expected: tuple[object, ...]) -> None:
    library, getrandom, kernel, marker, kept, nodes, running = row
    decision = decide(EntropyFacts(library, getrandom, kernel, marker, kept, nodes, running))  # type: ignore[arg-type]
    assert (decision.verdict, decision.remedy, decision.when) == expected, decision
    assert decision.why
    assert (decision.verdict is FRAGILE) == bool(decision.breaks_if)


def test_every_cell_has_one_verdict() -> None:
    """The table is total: every combination of facts, known or not, gets a decision whose
    remedy fits it (no remedy for safe, a remedy for a failure)."""
    kernels = (NEW, OLD, None)
    tri = (True, False, None)
    for library in Library:
        for getrandom in Getrandom:
            for kernel in kernels:
                for marker in tri:
                    for kept in tri:
                        for nodes in tri:
                            for running in (True, False):
                                facts = EntropyFacts(
                                    library, getrandom, kernel, marker, kept, nodes, running
                                )
                                d = decide(facts)
                                if d.verdict in (SAFE, UNSURE):
                                    assert d.remedy is NONE, facts
                                else:
                                    assert d.remedy is not NONE, facts
                                if d.remedy is ALLOW:
                                    assert getrandom is not W, facts


@pytest.mark.parametrize(
    ("family", "version", "row"),
    [
        ("OpenSSL", "OpenSSL 3.0.19 27 Jan 2026", O3),
        ("OpenSSL", "OpenSSL 1.1.1r  11 Oct 2022", O111),
        ("OpenSSL", "OpenSSL 1.1.1d  10 Sep 2019", O111),
        ("OpenSSL", "OpenSSL 1.1.1c  28 May 2019", OOLD),
        ("OpenSSL", "OpenSSL 1.1.1za", OOLD),  # no such release: not assumed to be >= d
        ("OpenSSL", "OpenSSL 1.0.2u", OOLD),
        ("OpenSSL", "", UNK),
        ("GnuTLS", "GnuTLS 3.7.9", GT),
        ("wolfSSL", "", UNK),
    ],
)
def test_library_rows(family: str, version: str, row: Library) -> None:
    assert library_of(family, version) is row
