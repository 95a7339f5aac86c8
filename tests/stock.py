"""Debian's stock layout for a daemon, without touching the host's: copies of its directories
(`cp -a`: owners and modes as the package made them) bound over the real paths in a private
mount namespace, where the daemon runs with its stock paths (/etc/unbound, /var/lib/unbound…).
Whatever jailshim makes in the jail lands in the copy; the host's own directories are never
written, and the namespace (its binds and tmpfs) goes away with the daemon."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.support import NSRUN, snapshot

__all__ = ["copy_of", "host_state", "in_stock_layout", "strategies"]


def copy_of(source: str, area: Path) -> Path:
    """A `cp -a` copy of the host directory ``source`` in ``area`` (named after its path),
    with the package's conffiles in it as the package shipped them (the host's may have been
    edited; tests/daemons.py, pristine_copy)."""
    from tests.daemons import pristine_copy

    return pristine_copy(None, source, area)


def in_stock_layout(
    binds: dict[str, Path],
    argv: Sequence[str],
    *,
    userns: bool,
    tmpfs: Sequence[str] = (),
    before: Sequence[Sequence[str]] = (),
) -> list[str]:
    """The command line that runs ``argv`` (exec'd: same PID under unshare) in a private mount
    namespace — also a user namespace with ``userns`` (jailshim then binds: no mknod there) —
    with each copy bound over its host path, a tmpfs on each ``tmpfs`` path (a daemon's
    runtime files stay out of the host's /run), and each ``before`` command run first (a
    unit's ExecStartPre=, its failure ignored as `-` does)."""
    steps = ["set -e"]
    steps += [f"mount --bind {shlex.quote(str(c))} {shlex.quote(p)}" for p, c in binds.items()]
    steps += [f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(p)}" for p in tmpfs]
    steps += [f"{shlex.join(cmd)} || true" for cmd in before]
    steps.append('exec "$@"')
    wrap = (
        [sys.executable, NSRUN, "--mount", "--"]
        if userns
        else ["unshare", "--mount", "--propagation", "private"]
    )
    return [*wrap, "sh", "-c", "; ".join(steps), "sh", *argv]


def _meaning(st: os.stat_result) -> tuple[int, ...]:
    """What a test means by "the same directory": not the whole stat, whose atime the test's
    own reading moves (relatime updates an atime older than the ctime: on a fresh machine the
    first run failed, a second passed)."""
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)


def host_state(paths: Sequence[str]) -> tuple[object, ...]:
    """The host's own directories as they are (entries, modes, owners, contents) and whether
    anything is mounted on or below them: a stock test must leave both as it found them."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return tuple(
        (
            _meaning(os.lstat(p)),
            snapshot(Path(p)),
            [m for m in mounts if f" {p}/" in m or f" {p} " in m],
        )
        for p in paths
    )


def strategies(stderr: str) -> set[str]:
    """How jailshim made the jail's nodes (mknod, bind, tmpfs), from its JSON events."""
    found = set()
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        made = isinstance(event, dict) and event.get("event") == "device"
        if made and event.get("outcome") in ("created", "bound"):
            found.add(str(event.get("strategy")))
    return found
