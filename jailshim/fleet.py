"""`jailshim doctor --all`: every chrooted daemon on the host and in its containers, each judged
as `doctor --pid` judges it (issue 29).

A process is chrooted when its root is not its mount namespace's root. The kernel says so in
/proc/PID/root: readlink gives the root's path as seen from that namespace's root ("/" for a
container's processes, whose namespace root is the container's; "/var/lib/haproxy" for a daemon
that chroots, on the host or inside a container). A root reached by another path that is the
namespace's root all the same (a bind of "/") is not a jail: it is compared by identity with the
root of a process of the same namespace that is not chrooted.

Discovery reads only /proc (readlink, stat of nsfs files, statx of the root from cached
attributes: a plain stat of a root on FUSE asks its server, which may never answer). Chrooted
processes are grouped into daemons (a master and its workers, one jail), and each daemon's
representative goes through doctor's own per-PID judgement (read_daemon, _diagnose): the same
probe, the same bounds, never a device node opened, never a daemon's library loaded unless
doctor --pid would load it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from jailshim.errors import (
    NAGIOS_STATES,
    NotPermitted,
    SystemRefused,
    UsageError,
)
from jailshim.jail.namespaces import root_identity

if TYPE_CHECKING:
    from jailshim.devices import Device
    from jailshim.logs import Logger

__all__ = [
    "FORMATS",
    "Daemon",
    "Judged",
    "Proc",
    "Scan",
    "group",
    "scan",
    "write_atomically",
]

UNKNOWN = NAGIOS_STATES["cannot tell"]  # also bad usage, for a plugin (the guidelines' 3)
FORMATS = ("auto", "table", "json", "prometheus", "nagios")

Identity = tuple[int, int]  # (st_dev, st_ino)


class Proc(NamedTuple):
    """A chrooted process, as /proc shows it."""

    pid: int
    ppid: int
    name: str
    root: str  # as readlink says it, from its own namespace's root
    namespace: Identity  # its mount namespace (nsfs st_dev, st_ino)
    root_id: Identity  # its root directory
    started: int  # start time (clock ticks since boot): a reused PID is another process

    @property
    def jail(self) -> tuple[Identity, Identity]:
        return self.namespace, self.root_id


class Parent(NamedTuple):
    """The parent of a daemon's top process, when that parent is not in the same jail."""

    name: str
    chrooted: bool


class Daemon(NamedTuple):
    """A master and its workers in one jail: one verdict."""

    name: str
    root: str
    pids: tuple[int, ...]  # the chrooted processes; the first is the one judged
    started: int  # the judged one's start time
    master: int | None  # a parent outside the jail that stands for them (haproxy -W)
    namespace: Identity


class Judged(NamedTuple):
    daemon: Daemon
    verdict: str  # a jailshim.verify.verdict.Verdict value
    words: str  # doctor's verdict sentence
    user: str = ""
    libraries: tuple[str, ...] = ()  # "OpenSSL 3.0.17"
    container: bool = False  # in another mount namespace than doctor's
    seconds: float = 0.0


class Scan(NamedTuple):
    judged: tuple[Judged, ...]
    notes: tuple[str, ...]  # processes skipped, and why
    processes: int  # how many /proc listed
    unreadable: int  # processes whose root the kernel would not show
    seconds: float
    finished: float  # time.time() at the end


# --- discovery (syscalls, each bounded: /proc reads and nsfs stats only) -------------------


def _namespace(pid: int | str) -> Identity:
    st = os.stat(f"/proc/{pid}/ns/mnt")
    return st.st_dev, st.st_ino


def _stat(pid: int | str) -> tuple[str, int, int]:
    """(comm, ppid, start time) from /proc/PID/stat; the name may hold ") "."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        head, _, tail = f.read().rpartition(b")")
    fields = tail.split()
    name = head.split(b"(", 1)[1].decode("utf-8", "backslashreplace")
    return name, int(fields[1]), int(fields[19])


def _mountinfo(pid: int | str) -> str:
    """/proc/PID/mountinfo, which the kernel shows where it refuses /proc/PID/root (a
    non-dumpable process: the sandbox's init here). A chrooted process's mount points are
    relative to its root and those outside it hidden, and mount IDs are unique across
    namespaces: one identical to doctor's own (unchrooted) is in its namespace, not chrooted."""
    try:
        with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return ""


def _unreadable(refused: Sequence[int], plain: Sequence[int]) -> int:
    """How many of the processes whose root the kernel refused may be chrooted: those whose
    mountinfo is not that of an unchrooted process (one per mount namespace, doctor's own
    first: the host's, seen from the DaemonSet's container, is another)."""
    views: set[str] = set()
    seen: set[Identity] = set()
    for pid in ("self", *map(str, plain)):
        try:
            namespace = _namespace(pid)
        except OSError:
            continue
        if namespace not in seen:
            seen.add(namespace)
            views.add(_mountinfo(pid))
    views.discard("")
    return sum(1 for pid in refused if _mountinfo(pid) not in views)


class _Found(NamedTuple):
    chrooted: list[Proc]
    parents: dict[int, Parent]
    notes: list[str]
    processes: int
    unreadable: int


def discover() -> _Found:
    """Every chrooted process, and the parents of those whose parent is not chrooted."""
    pids = sorted(int(e.name) for e in os.scandir("/proc") if e.name.isdigit())
    plain, candidates, refused = _roots_of(pids, os.getpid())
    unreadable = _unreadable(refused, plain) if refused else 0
    notes: list[str] = []
    found = _procs_of(candidates, notes)
    roots = _namespace_roots({p.namespace for p in found}, plain)
    chrooted = [p for p in found if roots.get(p.namespace) != p.root_id]
    for p in found:
        if roots.get(p.namespace) == p.root_id:
            notes.append(
                f"PID {p.pid} {p.name}: its root {p.root} is its mount namespace's own root "
                "(reached by another path): not a jail"
            )
    return _Found(chrooted, _parents_of(chrooted), notes, len(pids), unreadable)


def _roots_of(pids: Sequence[int], me: int) -> tuple[list[int], list[tuple[int, str]], list[int]]:
    """(PIDs whose root reads "/", (PID, root) of the others, PIDs whose root is refused)."""
    plain: list[int] = []
    candidates: list[tuple[int, str]] = []
    refused: list[int] = []
    for pid in pids:
        if pid == me:
            continue
        try:
            root = os.readlink(f"/proc/{pid}/root")
        except PermissionError:
            refused.append(pid)
            continue
        except OSError:  # gone (or a zombie): it was never a daemon to judge
            continue
        if root == "/":
            plain.append(pid)
        else:
            candidates.append((pid, root))
    return plain, candidates, refused


def _procs_of(candidates: Sequence[tuple[int, str]], notes: list[str]) -> list[Proc]:
    """The facts of each candidate; one that exits while it is read is skipped with a note."""
    found: list[Proc] = []
    for pid, root in candidates:
        try:
            name, ppid, started = _stat(pid)
            namespace = _namespace(pid)
            root_id = root_identity(pid)
        except (OSError, IndexError, ValueError):
            root_id = None
        if root_id is None:
            notes.append(f"PID {pid} (chrooted at {root}) exited during the scan: skipped")
            continue
        found.append(Proc(pid, ppid, name, root, namespace, root_id, started))
    return found


def _parents_of(chrooted: Sequence[Proc]) -> dict[int, Parent]:
    """The parents of chrooted processes that are not chrooted themselves (haproxy's master)."""
    inside = {p.pid for p in chrooted}
    parents: dict[int, Parent] = {}
    for p in chrooted:
        if p.ppid in inside or p.ppid in parents or p.ppid == 0:
            continue
        try:
            parents[p.ppid] = Parent(_stat(p.ppid)[0], os.readlink(f"/proc/{p.ppid}/root") != "/")
        except (OSError, IndexError, ValueError):
            continue
    return parents


def _namespace_roots(wanted: set[Identity], plain: Sequence[int]) -> dict[Identity, Identity]:
    """The root of each mount namespace in ``wanted``, from a process there that is not
    chrooted (doctor's own first; then in PID order: a container's init is found early).
    A namespace with no such process (a container whose only process chroots) has none:
    readlink alone decides there."""
    roots: dict[Identity, Identity] = {}
    if not wanted:
        return roots
    for pid in ("self", *map(str, plain)):
        try:
            namespace = _namespace(pid)
            if namespace not in wanted or namespace in roots:
                continue
            if pid == "self" and os.readlink("/proc/self/root") != "/":
                continue
            root = root_identity(pid)
        except OSError:
            continue
        if root is not None:
            roots[namespace] = root
        if len(roots) == len(wanted):
            break
    return roots


# --- grouping (pure) -------------------------------------------------------------------------


def group(chrooted: Sequence[Proc], parents: Mapping[int, Parent]) -> list[Daemon]:
    """Chrooted processes -> daemons. A process whose parent is in the same jail belongs to
    that parent's daemon (nginx, unbound: a chrooted master forks its workers); the tops of a
    jail whose parent is not chrooted and has their name belong to that parent (haproxy -W:
    the master stays outside, its workers chroot, a reload leaves old and new workers).
    The judged process: the top (the newest one, under a master: it is the one that stays)."""
    by_pid = {p.pid: p for p in chrooted}

    def top(p: Proc) -> Proc:
        seen = {p.pid}
        while (up := by_pid.get(p.ppid)) is not None and up.jail == p.jail and up.pid not in seen:
            seen.add(up.pid)
            p = up
        return p

    members: dict[tuple[Any, ...], list[Proc]] = {}
    tops: dict[tuple[Any, ...], list[Proc]] = {}
    masters: dict[tuple[Any, ...], int | None] = {}
    for p in sorted(chrooted, key=lambda x: x.pid):
        t = top(p)
        parent = parents.get(t.ppid)
        master = (
            t.ppid if parent is not None and not parent.chrooted and parent.name == t.name else None
        )
        key = (t.jail, master if master is not None else t.pid)
        members.setdefault(key, []).append(p)
        if t.pid == p.pid:
            tops.setdefault(key, []).append(p)
        masters[key] = master
    daemons = []
    for key, procs in members.items():
        judged = max(tops[key], key=lambda x: (x.started, x.pid))
        rest = tuple(p.pid for p in procs if p.pid != judged.pid)
        daemons.append(
            Daemon(
                judged.name,
                judged.root,
                (judged.pid, *rest),
                judged.started,
                masters[key],
                judged.namespace,
            )
        )
    return sorted(daemons, key=lambda d: (d.name, d.root, d.pids[0]))


# --- judging: doctor's own per-PID judgement --------------------------------------------------


class _Quiet:
    """doctor's events of one daemon, at debug: --all says one line per daemon, and a fleet
    of daemons' every check at info would drown the journal of a timer run every minutes."""

    def __init__(self, log: Logger) -> None:
        self._log = log

    def log(self, level: int, event: str, *args: Any, **facts: Any) -> None:
        self._log.debug(event, *args, **facts)

    def debug(self, event: str, *args: Any, **facts: Any) -> None:
        self._log.debug(event, *args, **facts)

    info = warning = error = debug  # a Logger: every level is debug here


def _same_process(pid: int, started: int) -> bool:
    try:
        return _stat(pid)[2] == started
    except (OSError, IndexError, ValueError):
        return False


def _library_labels(libs: Iterable[Any]) -> tuple[str, ...]:
    from jailshim.verify.cryptolib import short_version

    labels = []
    for lib in libs:
        version = short_version(lib.version) if lib.version else ""
        labels.append(
            version if version.startswith(lib.family) else f"{lib.family} {version}".strip()
        )
    return tuple(dict.fromkeys(labels))


def judge(
    daemon: Daemon,
    devices: tuple[Device, ...],
    log: Logger,
    *,
    read_filter: bool,
    ours: Identity | None,
) -> Judged | str:
    """``daemon`` judged as `doctor --pid` judges its representative; a note (str) when it
    exited before or during its judgement (a verdict on a vanished jail would be false)."""
    from jailshim.doctor import _diagnose, _user_name, read_daemon

    pid = daemon.pids[0]
    gone = f"PID {pid} {daemon.name} (jail {daemon.root}) exited during the scan: skipped"
    start = time.monotonic()
    if not _same_process(pid, daemon.started):
        return gone
    try:
        facts = read_daemon(pid)
    except UsageError:  # _gone: no such process, a zombie
        return gone
    except NotPermitted as exc:
        return Judged(daemon, "cannot tell", exc.sentence, container=daemon.namespace != ours)
    found = _diagnose(
        facts,
        "",
        None,
        devices,
        _Quiet(log),
        read_filter=read_filter,
        master=daemon.master,
        show=False,
    )
    if not _same_process(pid, daemon.started):
        return gone
    return Judged(
        daemon,
        str(found.verdict),
        found.words,
        _user_name(facts.uid),
        _library_labels(facts.crypto),
        daemon.namespace != ours,
        time.monotonic() - start,
    )


# One daemon's judgement: doctor's probe has 10 s, a filter read 2 s; the rest is /proc and
# the library's file, which a filesystem that stopped answering (a hard NFS mount) can hold
# for ever. One such daemon must not stop the scan of all the others (a timer's run, a
# Nagios check), so judging runs in a child that is killed when a daemon takes longer.
DAEMON_DEADLINE = 20.0


def _encode(result: Judged | str) -> bytes:
    import json

    if isinstance(result, str):
        return (json.dumps({"note": result}) + "\n").encode()
    return (json.dumps({"judged": [list(result.daemon), *result[1:]]}) + "\n").encode()


def _decode(line: bytes) -> Judged | str:
    import json

    data = json.loads(line)
    if "note" in data:
        return str(data["note"])
    daemon, verdict, words, user, libraries, container, seconds = data["judged"]
    name, root, pids, started, master, namespace = daemon
    return Judged(
        Daemon(name, root, tuple(pids), started, master, (namespace[0], namespace[1])),
        verdict,
        words,
        user,
        tuple(libraries),
        container,
        seconds,
    )


def judge_bounded(
    daemons: Sequence[Daemon],
    judge_one: Callable[[Daemon], Judged | str],
    deadline: float,
) -> list[Judged | str]:
    """``judge_one`` of each daemon, in one child that streams the results (so what it learns,
    a library's identity, serves the next daemon); a daemon that takes more than ``deadline``
    seconds is "cannot tell", its child killed (the daemon is left alone), and a new child
    goes on with the next ones."""
    import select
    import signal

    results: list[Judged | str] = []
    todo = list(daemons)
    while todo:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                os.close(read_end)
                for daemon in todo:
                    view = memoryview(_encode(judge_one(daemon)))
                    while view:
                        view = view[os.write(write_end, view) :]
            finally:
                os._exit(0)
        os.close(write_end)
        done, pending, timed_out = 0, b"", False
        try:
            end = time.monotonic() + deadline
            while done < len(todo):
                left = end - time.monotonic()
                if left <= 0 or not select.select([read_end], [], [], left)[0]:
                    timed_out = True
                    break
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break  # the child died: its remaining daemons are retried below
                pending += chunk
                while b"\n" in pending and done < len(todo):
                    line, pending = pending.split(b"\n", 1)
                    results.append(_decode(line))
                    done += 1
                    end = time.monotonic() + deadline
        finally:
            os.close(read_end)
            if timed_out or done < len(todo):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        if done < len(todo):
            stuck = todo[done]
            why = (
                f"its judgement did not finish within {deadline:g} s (a /proc read or its "
                "library's file on a filesystem that does not answer?); it was stopped, the "
                "daemon left running"
                if timed_out
                else "doctor's child judging it died"
            )
            results.append(Judged(stuck, "cannot tell", f"cannot tell: {why}"))
            done += 1
        todo = todo[done:]
    return results


def scan(
    devices: tuple[Device, ...],
    log: Logger,
    *,
    names: tuple[str, ...] = (),
    read_filter: bool = False,
) -> Scan:
    """Discover, group, judge: the whole of `doctor --all` but its output."""
    start = time.monotonic()
    found = discover()
    daemons = group(found.chrooted, found.parents)
    if names:
        daemons = [d for d in daemons if d.name in names]
    try:
        ours: Identity | None = _namespace("self")
    except OSError:
        ours = None
    judged: list[Judged] = []
    notes = list(found.notes)

    def one(daemon: Daemon) -> Judged | str:
        return judge(daemon, devices, log, read_filter=read_filter, ours=ours)

    for result in judge_bounded(daemons, one, DAEMON_DEADLINE):
        if isinstance(result, str):
            notes.append(result)
        else:
            judged.append(result)
    if found.unreadable:
        notes.append(
            f"{found.unreadable} process{'es' if found.unreadable != 1 else ''} whose root "
            "could not be read (the kernel refused /proc/PID/root: run doctor as root with "
            "CAP_SYS_PTRACE) may be chrooted"
        )
    return Scan(
        tuple(judged),
        tuple(notes),
        found.processes,
        found.unreadable,
        time.monotonic() - start,
        time.time(),
    )


# --- output ------------------------------------------------------------------------------------


def write_atomically(path: str, text: str) -> None:
    """``text`` to ``path`` so a reader (node_exporter) sees the old file or the new one,
    never half a file: a temporary name in the same directory (a rename is atomic only within
    one filesystem) that does not end in .prom (node_exporter reads only *.prom), fsync'd
    before the rename, the directory fsync'd after it."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
    except FileNotFoundError:
        raise UsageError(f"--output {path}: the directory {directory} does not exist.") from None
    except PermissionError:
        raise NotPermitted(f"--output {path}: {directory} is not writable for doctor.") from None
    except OSError as exc:
        raise SystemRefused(f"--output {path}: {exc.strerror} (writing {temporary}).") from None
    try:
        try:
            view = memoryview(text.encode("utf-8"))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise SystemRefused(f"--output {path}: {exc.strerror}.") from None
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # the rename is done; only its durability across a crash is in question
