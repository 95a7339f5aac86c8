"""Under CI=true a skip is a failure, whatever made it: pytest.skip, a skip/skipif marker,
importorskip, at collection or in a test. support.need() already fails under CI, but a plain
pytest.skip added later would pass silently and leave a claim untested on the one machine that
is meant to run everything. xfail stays allowed: it is a known failure, still run.

Loaded by tests/conftest.py (its hooks are imported there) and, for the test of it, as a plugin
(`-p tests.ci_skips`)."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.support import IN_CI

REASON = "CI=true: a skip is a failure here (tests/ci_skips.py)"


def _as_failure(report: pytest.TestReport | pytest.CollectReport) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        skipped = report.longrepr
        why = skipped[2] if isinstance(skipped, tuple) else str(skipped)
        report.outcome = "failed"
        report.longrepr = f"{REASON}; it skipped: {why}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _as_failure(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _as_failure(report)
    return report
