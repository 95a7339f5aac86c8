"""Every test the documentation names exists: a claim "this is tested" must point at a test."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_NAMED = re.compile(r"\b(test_[a-z0-9_]+)\b")
_FILE = re.compile(r"\btests/([a-z0-9_]+\.py)\b")
# "test_x.py (`test_a`, `test_b`)": tests named as that file's
_IN_FILE = re.compile(r"\b(test_[a-z0-9_]+\.py)\s*\(((?:`test_[a-z0-9_]+`(?:,\s*)?)+)\)")


def _documents() -> list[Path]:
    return [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "examples").glob("*/README.md")),
    ]


def test_every_test_the_docs_name_exists() -> None:
    """A test name or a tests/ file in README.md, docs/ or an example's README is defined in
    tests/ (issue 32: a README claimed a postfix --init stop test that was never written), and
    a test named after its file (`test_x.py (`test_a`)`) is defined in that file."""
    sources = {p.name: p.read_text() for p in (REPO / "tests").glob("*.py")}
    defined = {m for text in sources.values() for m in re.findall(r"def (test_\w+)", text)}
    missing = []
    for doc in _documents():
        text = doc.read_text()
        for name in set(_NAMED.findall(text)) - defined:
            if f"{name}.py" not in sources and name != "test_":  # a file named without .py
                missing.append(f"{doc.relative_to(REPO)}: {name}")
        for name in set(_FILE.findall(text)) - set(sources):
            missing.append(f"{doc.relative_to(REPO)}: tests/{name}")
        for file, names in _IN_FILE.findall(text):  # a test moved to another file (issue 27)
            in_file = set(re.findall(r"def (test_\w+)", sources.get(file, "")))
            named = set(re.findall(r"`(test_\w+)`", names))
            missing += [f"{doc.relative_to(REPO)}: {file}::{n}" for n in sorted(named - in_file)]
    assert not missing, "named but not defined in tests/:\n" + "\n".join(sorted(missing))
