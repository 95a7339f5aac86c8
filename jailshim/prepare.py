"""`jailshim prepare`: lock the jail, reconcile what a killed run left, survey, decide, apply.

``Prepared`` holds the jail's lock until the caller has verified the jail (so a prepare that
exits 0 hands over a jail no concurrent teardown has touched) and knows which records this run
added, so that a stop signal anywhere before hand-over takes exactly those back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time
from collections.abc import Iterator
from logging import INFO, WARNING
from typing import TYPE_CHECKING

from jailshim import state
from jailshim.errors import ConfigError, NotPermitted, SystemRefused
from jailshim.jail import mounts
from jailshim.jail.lock import JailLock
from jailshim.jail.namespaces import mounts_vanish_on_exit, namespace_alive, pid_namespace
from jailshim.jail.safepath import Jail, swappable_path
from jailshim.jail.undo import describe, sweep_new_dev, undo
from jailshim.plan import Plan, describe_errno
from jailshim.records import (
    bring_back_moved_dev,
    check_paths,
    open_journal,
    say_lock_ignored,
    undo_records,
)
from jailshim.spec import Spec
from jailshim.state import Journal, Kind, Record
from jailshim.stopsignals import STOP_SIGNALS, signals_deferred

if TYPE_CHECKING:
    from jailshim.jail.powers import Powers
    from jailshim.logs import Logger

__all__ = ["Prepared", "mounts_refused", "prepare"]

_MAX_FOREIGN_NAMESPACES = 8


class Prepared:
    """A prepared jail, still locked. ``rollback`` undoes this run's records."""

    def __init__(self, jail: Jail, lock: JailLock, log: Logger) -> None:
        self.jail = jail
        self.lock = lock
        self.log = log
        self.journal = Journal(None, [])
        self.first_new = 0
        self.fds: list[int] = []

    def rollback(self) -> None:
        """Take back every record this run added (a failed step, a stop signal)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # finish undoing, then exit
        mine = list(range(self.first_new, len(self.journal.records)))
        undo_records(self.jail, self.journal, mine, self.log, "rollback")

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.lock.release()
        self.jail.close()


def _reconcile(prepared: Prepared, ns: int, log: Logger) -> bool:
    """Finish what a killed run left: undo every record it did not complete, and forget the
    mounts of namespaces that are gone (a restarted container leaves one set each time)."""
    swept = sweep_new_dev(prepared.jail)
    if swept:
        log.warning("reconcile", step=f"remove {state.NEW_DEV}", outcome=swept)
    journal = prepared.journal
    # Another namespace's unfinished steps are its own to reconcile while it may still exist:
    # undoing its half-made bind from here would find nothing (the mount is not visible here)
    # and drop the record of a read-write bind that namespace still has.
    pending = [
        i
        for i, r in enumerate(journal.records)
        if not r.done and (r.ns in (0, ns) or not namespace_alive(r.ns, r.pidns))
    ]
    if pending:
        undo_records(prepared.jail, journal, pending, log, "reconcile")
    if journal.dir_fd is None:
        return True
    foreign = {r.ns: r.pidns for r in journal.records if r.is_mount and r.ns != ns}
    gone = {n for n, pidns in foreign.items() if not namespace_alive(n, pidns)}
    # Where they cannot be seen (inside a container) keep the newest few: a bound on the
    # record's size, at the price of forgetting a namespace that prepared long ago.
    alive = [n for n in foreign if n not in gone]
    gone.update(alive[: max(0, len(alive) - _MAX_FOREIGN_NAMESPACES)])
    if gone:
        for index in range(len(journal.records) - 1, -1, -1):
            if journal.records[index].is_mount and journal.records[index].ns in gone:
                journal.drop(index)
        log.info(
            "reconcile", step="forget mounts of gone mount namespaces", namespaces=sorted(gone)
        )
    return bool(swept or pending)


def _release_stale_binds(prepared: Prepared, spec: Spec, ns: int, log: Logger) -> None:
    """Unbind this namespace's binds of a host socket or file that the host has since
    replaced (a restarted syslog makes a new /dev/log; systemd-resolved renames a new
    resolv.conf into place): the jail still shows the old inode, and the survey would take
    that mount point for an entry to move aside (EBUSY). The placeholder stays, and the plan
    binds the host's current one onto it."""
    from jailshim.files import FileMode

    wanted = set(spec.sockets)
    if spec.file_mode is FileMode.BIND:
        wanted.update(f.path for f in spec.files)
    journal, jail = prepared.journal, prepared.jail
    for index in range(len(journal.records) - 1, -1, -1):
        record = journal.records[index]
        path = f"/{record.path}"
        if not (record.kind is Kind.BIND and record.done and record.ns == ns):
            continue
        if record.rdev or path not in wanted:
            continue
        try:
            host = os.stat(os.path.realpath(path))
        except OSError:
            continue  # the host has none now: the plan says so; the old bind is left
        dir_fd, missing = jail.walk(record.where)
        try:
            if missing:
                continue
            try:
                seen = os.stat(record.name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
        finally:
            os.close(dir_fd)
        if seen.st_ino == record.ino or (seen.st_dev, seen.st_ino) == (host.st_dev, host.st_ino):
            continue  # not mounted here, or still the host's current one
        outcome = undo(jail, record, mounts.read_mount_table())
        if outcome == "unmounted":
            journal.drop(index)
        log.info("rebind", path=path, reason="the host's one was replaced", outcome=outcome)


@contextlib.contextmanager
def prepare(spec: Spec, log: Logger, *, then_exec: bool = False) -> Iterator[Prepared]:
    """Make ``spec.chroot``'s dev/ right (with ``spec.dry_run`` only print the plan), holding
    the jail's lock until the block ends; a failure or stop signal inside it undoes this run.

    ``then_exec``: the daemon is exec'd from this process (`run`), so mounts made here are in
    its namespace; otherwise (`prepare`) mounts must outlive this process, see
    ``mounts_refused``.
    """
    from jailshim.jail.powers import survey_powers

    start = time.monotonic()
    prepared = _locked(spec, log)
    try:
        dev_fd, ns, table = _journal_reconciled(prepared, spec, log)
        powers = survey_powers()
        plan = _decided(prepared, spec, dev_fd, table, powers)
        vanish = False if then_exec else mounts_vanish_on_exit()
        refused = mounts_refused(plan, vanish, log)
        if spec.dry_run:
            _print_plan(prepared, plan, refused, log)
            prepared.first_new = len(prepared.journal.records)  # a rollback takes back nothing
            yield prepared
            return
        prepared.first_new = len(prepared.journal.records)
        if refused:
            raise NotPermitted(refused)
        created = _applied(prepared, plan, dev_fd, powers, ns=ns, vanish=vanish)
        unchanged = [s.device.name for s in plan.steps if s.device.name not in created]
        log.info(
            "prepared",
            created=created,
            unchanged=unchanged,
            tmpfs=plan.mount_tmpfs,
            elapsed_ms=round((time.monotonic() - start) * 1000, 3),
        )
        try:
            yield prepared
        except KeyboardInterrupt:  # a stop signal during verification (stopsignals.Interrupted)
            prepared.rollback()
            raise
    finally:
        prepared.close()


def _locked(spec: Spec, log: Logger) -> Prepared:
    """The jail opened by fd and locked; refused when its path could be swapped."""
    jail = Jail(spec.chroot)
    try:
        # jailshim works by fd, but the daemon chroot()s by the path: one another user can
        # swap would put the daemon in a directory no one prepared (review1 R3)
        swappable = jail.root_movable() or swappable_path(
            spec.chroot, "the daemon, which chroot()s by its path,"
        )
        if swappable:
            raise ConfigError(swappable, chroot=spec.chroot)
        lock = JailLock(jail.fd, jail.real, spec.timeout)
    except BaseException:
        jail.close()
        raise
    prepared = Prepared(jail, lock, log)
    say_lock_ignored(lock, log)
    return prepared


def _journal_reconciled(
    prepared: Prepared, spec: Spec, log: Logger
) -> tuple[int | None, int, mounts.MountTable]:
    """Open dev/ and the journal; unless a dry run, finish what a killed run left and release
    stale binds. Returns dev/'s fd (None: no dev/ yet), this mount namespace, the mount table."""
    from jailshim.jail.survey import check_ownership

    jail = prepared.jail
    bring_back_moved_dev(jail, log, dry_run=spec.dry_run)
    dev_fd = jail.open_dir("dev")
    if dev_fd is not None:
        prepared.fds.append(dev_fd)
    for level, note in check_ownership(
        jail, dev_fd, allow_writable=spec.allow_writable_jail, daemon=spec.identity
    ):
        log.log(INFO if level == "info" else WARNING, "jail.writable", detail=note)
    ns = state.mount_namespace()
    table = mounts.read_mount_table()
    prepared.journal = open_journal(jail, dev_fd, table, ns)
    check_paths(jail, prepared.journal.records)
    if not spec.dry_run:
        with signals_deferred():
            changed = _reconcile(prepared, ns, log)
        table = mounts.read_mount_table()
        if changed:  # dev/ itself may have gone back (an unfinished mkdir): look again
            dev_fd = jail.open_dir("dev")
            if dev_fd is not None:
                prepared.fds.append(dev_fd)
            prepared.journal = open_journal(jail, dev_fd, table, ns)
        with signals_deferred():
            _release_stale_binds(prepared, spec, ns, log)
    return dev_fd, ns, table


def _decided(
    prepared: Prepared,
    spec: Spec,
    dev_fd: int | None,
    table: mounts.MountTable,
    powers: Powers,
) -> Plan:
    """Survey the jail (read only) and decide the plan."""
    from jailshim.jail.survey import survey
    from jailshim.plan import decide

    records = prepared.journal.records
    facts = survey(
        prepared.jail,
        dev_fd,
        spec.devices,
        table,
        powers,
        sockets=spec.sockets,
        placeholders=frozenset(r.ino for r in records if r.kind is Kind.PLACEHOLDER and r.done),
        files=spec.files,
        copies=frozenset((f"/{r.path}", r.ino) for r in records if r.kind is Kind.COPY and r.done),
        notify=spec.notify_socket,
    )
    return decide(facts, spec.devices, spec.strategy, repair=spec.repair, file_mode=spec.file_mode)


def _print_plan(prepared: Prepared, plan: Plan, refused: str, log: Logger) -> None:
    """--dry-run: the plan on stdout, after what a killed run left; a refusal still refuses."""
    unfinished = [describe(r) for r in prepared.journal.records if not r.done]
    text = plan.render()
    if unfinished:
        text = f"first undo what a killed run left: {', '.join(unfinished)}\n{text}"
    if refused:
        text += f"\nrefused: {refused}"
    sys.stdout.write(text + "\n")
    log.info("plan", dry_run=True, changes=plan.changes_anything or bool(unfinished))
    if refused:
        raise NotPermitted(refused)


def _applied(
    prepared: Prepared,
    plan: Plan,
    dev_fd: int | None,
    powers: Powers,
    *,
    ns: int,
    vanish: bool | None,
) -> list[str]:
    """Carry the plan out, journaled; any failure takes back this run's records. Returns the
    names of the devices made."""
    from jailshim.apply import Applier

    jail, log = prepared.jail, prepared.log
    applier = Applier(jail, dev_fd, prepared.journal, powers, ns=ns, log=log)
    # The ladder may still fall from mknod to bind at run time: refuse that too.
    applier.mounts_refused = _MOUNTS_VANISH if vanish else ""
    try:
        with signals_deferred():
            applier.apply(plan)
            _dev_still_there(jail, applier.dev_fd)
            _adopt_inherited_binds(prepared.journal, plan, ns)
            _hold(prepared.journal, ns)
    except OSError as exc:
        prepared.rollback()
        full = state.disk_full(exc)
        if full:  # a mkdir, placeholder or node on a full disk read "Preparing …/dev failed"
            raise SystemRefused(
                f"The jail {jail.real} cannot take what jailshim makes there: {full} "
                f"({describe_errno(exc.errno or 0)}); what this run made is taken back: "
                "free space (or inodes) on that filesystem, then run again.",
                errno=exc.errno,
            ) from None
        raise SystemRefused(
            f"Preparing {jail.real} failed: {exc.strerror or exc} "
            f"({describe_errno(exc.errno or 0)}); nothing was left half-made.",
            errno=exc.errno,
        ) from None
    except BaseException:  # a refused step, a stop signal, a bug: still undo
        prepared.rollback()
        raise
    finally:
        prepared.fds.extend(applier.opened)
        applier.opened.clear()
    return applier.created


_MOUNTS_VANISH = (
    "systemd started jailshim prepare in a mount namespace of its own (the unit has "
    "BindReadOnlyPaths=, PrivateTmp=, ProtectSystem= or the like), so a bind or tmpfs made here "
    "is gone before ExecStart= runs and the daemon would start without its nodes; use "
    "ExecStart=jailshim run -- DAEMON … (the mounts are made in the daemon's own namespace, "
    "just before exec), or let mknod work (CAP_MKNOD, a filesystem without nodev)"
)


def mounts_refused(plan: Plan, vanish: bool | None, log: Logger) -> str:
    """Why this plan's mounts cannot serve the daemon ("" when they can, or need none);
    ``vanish`` is namespaces.mounts_vanish_on_exit() (False for `run`)."""
    from jailshim.files import FileAction
    from jailshim.plan import Action

    mounts = (
        plan.mount_tmpfs
        or any(s.action is Action.BIND for s in plan.steps)
        or any(s.action is Action.BIND for s in plan.sockets)
        or any(f.action is FileAction.BIND for f in plan.files)
    )
    if not mounts:
        return ""
    if vanish is None:
        log.warning(
            "mount_namespace",
            detail="started by systemd, but PID 1's mount namespace cannot be read: if this "
            "unit gives each command its own namespace, the binds made here will not reach "
            "the daemon (ExecStart=jailshim run -- DAEMON avoids the question)",
        )
    return _MOUNTS_VANISH if vanish else ""


def _dev_still_there(jail: Jail, dev_fd: int | None) -> None:
    """jail/dev must still be the directory apply worked in: in a jail its user can write, that
    user can rename dev/ (root's, so only within the jail root) while prepare runs, and the
    daemon would then find no nodes at dev/. Raised inside apply: the rollback takes back what
    was made, through the fd, wherever the directory went."""
    if dev_fd is None:
        return
    ours = os.fstat(dev_fd)
    try:
        now = os.stat("dev", dir_fd=jail.fd, follow_symlinks=False)
    except FileNotFoundError:
        now = None
    if now is None or (now.st_dev, now.st_ino) != (ours.st_dev, ours.st_ino):
        raise ConfigError(
            f"{jail.real}/dev was moved or replaced while jailshim prepared it (someone who can "
            "write the jail did it); what was made is taken back. Make the jail root-owned, or "
            "stop that process, then run again.",
            chroot=jail.path,
        )


def _adopt_inherited_binds(journal: Journal, plan: Plan, ns: int) -> None:
    """A namespace copied from one that had bound (unshare -m, or a runtime starting the daemon
    after ExecStartPre=) has those binds too, right already: record them as this namespace's,
    or its teardown could neither unmount them nor remove the placeholders under them."""
    from jailshim.files import FileAction
    from jailshim.plan import Action

    found = [(s.found, "dev", s.device.rdev) for s in plan.steps if s.action is Action.NOTHING]
    for sock in plan.sockets:
        if sock.action is Action.NOTHING and not sock.facts.host_problem:
            where, _name = os.path.split(sock.facts.path.strip("/"))
            found.append((sock.facts.entry, where, 0))
    for file in plan.files:  # a jail file bound read-only (--file-mode bind), "already bound"
        if file.action is FileAction.NOTHING and not file.facts.host.problem:
            found.append((file.facts.entry, file.facts.where, 0))
    for entry, where, rdev in found:
        if not entry.mountpoint:
            continue
        placeholder = next(
            (
                r
                for r in journal.records
                if r.kind is Kind.PLACEHOLDER
                and r.done
                and (r.where, r.name) == (where, entry.name)
            ),
            None,
        )
        if placeholder is None or any(
            r.kind is Kind.BIND and r.ns == ns and (r.where, r.name) == (where, entry.name)
            for r in journal.records
        ):
            continue
        _record_unless_read_only(
            journal,
            Record(
                Kind.BIND,
                entry.name,
                where,
                placeholder.ino,
                rdev,
                ns=ns,
                pidns=pid_namespace(),
                done=True,
            ),
        )


def _hold(journal: Journal, ns: int) -> None:
    """Say this mount namespace uses what the journal records, so that a teardown in another
    namespace leaves it alone. Nothing to hold when jailshim made nothing here."""
    if journal.dir_fd is None or not journal.records:
        return
    if any(r.kind is Kind.HOLDER and r.ns == ns for r in journal.records):
        return
    _record_unless_read_only(
        journal, Record(Kind.HOLDER, "dev", "", ns=ns, pidns=pid_namespace(), done=True)
    )


def _record_unless_read_only(journal: Journal, record: Record) -> None:
    """A bookkeeping record (nothing was changed for it); a jail made read-only since its
    prepare cannot take it, and needs none: nothing there can be torn down either."""
    try:
        journal.intend(record)
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
        journal.records.pop()
