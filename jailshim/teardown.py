"""Undo what prepare recorded, and only that, and only where it is still what prepare made.

Under the jail's lock, newest record first, each record dropped from the journal as soon as it
is undone (a killed teardown leaves the rest recorded; running it again finishes). Mount
records belong to one mount namespace: this one's are undone here; another's are left while
that namespace may still exist, and with them everything on disk that it may be using (a
placeholder under its bind, the nodes its daemon opens). Nothing is undone while a process
this one can see is still chrooted in the jail.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from jailshim.jail import mounts
from jailshim.jail.lock import JailLock
from jailshim.jail.namespaces import namespace_alive, processes_rooted_at
from jailshim.jail.safepath import Jail
from jailshim.jail.undo import describe, sweep_new_dev
from jailshim.options import DEFAULT_TIMEOUT
from jailshim.records import (
    bring_back_moved_dev,
    check_paths,
    open_journal,
    say_lock_ignored,
    undo_records,
)
from jailshim.state import STATE_NAME, Record, mount_namespace
from jailshim.stopsignals import signals_deferred

if TYPE_CHECKING:
    from jailshim.logs import Logger

__all__ = ["teardown"]


def teardown(
    jail: Jail, log: Logger, *, dry_run: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> int:
    """Undo every record this mount namespace may undo. Returns how many were undone (with
    ``dry_run``, how many would be, changing nothing)."""
    with JailLock(jail.fd, jail.real, timeout) as lock:
        say_lock_ignored(lock, log)
        st = os.fstat(jail.fd)
        users = processes_rooted_at((st.st_dev, st.st_ino))
        if users:
            # A daemon still chrooted there opens dev/urandom and dev/log after this: taking
            # them away is the original failure, made by jailshim (ssh.service's stop keeps
            # the sessions, KillMode=process, and its ExecStopPost= teardown emptied their jails).
            log.warning(
                "teardown.in_use",
                pids=users,
                detail="processes are still chrooted in this jail: nothing is undone while they "
                "run; run teardown again when they are gone (a restart's prepare keeps it as is)",
            )
            return 0
        bring_back_moved_dev(jail, log, dry_run=dry_run)
        dev_fd = jail.open_dir("dev")
        try:
            return _teardown(jail, dev_fd, log, dry_run)
        finally:
            if dev_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(dev_fd)


def _teardown(jail: Jail, dev_fd: int | None, log: Logger, dry_run: bool) -> int:
    ns = mount_namespace()
    journal = open_journal(jail, dev_fd, mounts.read_mount_table(), ns)
    check_paths(jail, journal.records)
    if not journal.records:
        if not dry_run:
            with signals_deferred():
                swept = sweep_new_dev(jail)
            if swept:
                log.info("teardown", step="remove a killed run's temporary dev/", outcome=swept)
        reason = "no dev/ in the jail" if dev_fd is None else f"no {STATE_NAME}"
        log.info("teardown", outcome="nothing to undo", reason=reason)
        return 0
    # A namespace holds the jail when it recorded a mount or a hold (its prepare may have been
    # killed before writing the hold): pulling a placeholder away would detach its bind.
    holders = {r.ns: r.pidns for r in journal.records if r.is_mount and r.ns != ns}
    others = sorted(n for n, pidns in holders.items() if namespace_alive(n, pidns))
    if others:
        log.warning(
            "teardown.shared",
            namespaces=others,
            detail="another mount namespace still uses this jail (its prepare said so): only "
            "this namespace's mounts are undone; the rest stays for that namespace's teardown. "
            "If it is gone, run teardown from the host's PID namespace, where that can be seen.",
        )

    def gone(r: Record) -> bool:  # a mount of a namespace that no longer exists
        return r.is_mount and r.ns != ns and r.ns not in others

    def ours(r: Record) -> bool:
        return r.ns == ns if r.is_mount else not others

    if dry_run:
        steps = [r for r in journal.records if ours(r)]
        for record in reversed(steps):
            log.info("teardown", step=describe(record), dry_run=True)
        return len(steps)
    with signals_deferred():
        for index in range(len(journal.records) - 1, -1, -1):
            if gone(journal.records[index]):
                journal.drop(index)  # nothing is left to undo there
        mine = [i for i, r in enumerate(journal.records) if ours(r)]
        undo_records(jail, journal, mine, log, "teardown")
    return len(mine)
