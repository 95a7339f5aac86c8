"""The in-jail probe: fork, chroot, drop to the daemon's user, gather facts, report over a pipe.

A check run as root outside the jail proves nothing about a daemon running as nobody inside it:
root ignores modes, and the host's /dev is not the jail's. So the child does exactly what the
daemon will do (chroot, chdir /, setgroups, setgid, setuid, in that order: after setuid the
process could no longer change its groups), then looks at the jail the way the daemon will.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import stat
import time
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from jailshim.devices import ENTROPY_DEVICES, Device
from jailshim.spec import Identity
from jailshim.verify.findings import (
    DeviceFacts,
    Finding,
    NotifyFacts,
    judge_device,
    judge_getrandom,
    judge_notify,
)
from jailshim.verify.needs import Needs

if TYPE_CHECKING:
    from jailshim.spec import Spec
    from jailshim.verify.cryptolib import CryptoLib
    from jailshim.verify.entropy import ProbeEntropy, ProbeLibrary
    from jailshim.verify.libfind import CommandLibraries

__all__ = ["CryptoSource", "Probe", "crypto_source", "needs_of", "run_probe", "start_probe"]


class CryptoSource(NamedTuple):
    """Whose crypto libraries to probe: --crypto-lib paths win, then libraries already found
    (doctor --pid, from the maps), then COMMAND's (asked of its loader in the probe child).
    All empty: the host's default libcrypto, as "OpenSSL reseed" (a jail with no daemon).
    ``missing``: why a daemon's libraries could not be named; then nothing is probed, since
    the host's library says nothing about the daemon's (issue 25: it was, and said "safe")."""

    paths: tuple[str, ...] = ()
    libs: tuple[CryptoLib, ...] = ()
    command: str = ""
    missing: str = ""


_HOST_DEFAULT = CryptoSource()


class _Reseeder(Protocol):
    check: str
    version: str

    def reseed(self) -> Finding: ...


_OPENSSL_SHM_KEY = 114  # OPENSSL_RAND_SEED_DEVRANDOM_SHM_ID (rand_unix.c)


def _marker_here() -> bool | None:
    """Is OpenSSL's "random is seeded" segment in this process's IPC namespace (the daemon's
    to be)? EACCES: it exists, for another user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.shmget(_OPENSSL_SHM_KEY, 0, 0) >= 0:
        return True
    return {errno.EACCES: True, errno.ENOENT: False}.get(ctypes.get_errno())


_PROBE_DEADLINE = 10.0  # seconds; a probe that hangs (a blocking read) is killed
# the reopen of a node looked at by fd (/proc/self/fd/N): O_NOFOLLOW would refuse the magic link
_OPEN_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_OPEN_RDWR = os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if stat.S_ISREG(st.st_mode):
        return f"a regular file of {st.st_size} bytes"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO"
    if stat.S_ISBLK(st.st_mode):
        return f"a block device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return "a socket"


def _device_facts(device: Device, proc_fd: int) -> DeviceFacts:
    """Look at /dev/NAME by an O_PATH fd, then open THAT node (through ``proc_fd``'s
    self/fd/N, as the current user) and read (or write) it; all errors are facts.

    By fd, not by name: a uid-0 daemon's jail is that root's (a container's root, CAP_MKNOD)
    to rename in at any instant, and a second open of the name got a block node of the host's
    disk swapped in after the look (review1 R2: read as root in the host's cgroup; a watchdog
    node would reboot)."""
    path = f"/dev/{device.name}"
    try:
        look = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return DeviceFacts(lstat_errno=exc.errno or errno.EIO)
    try:
        st = os.fstat(look)
        if not stat.S_ISCHR(st.st_mode):
            return DeviceFacts(is_symlink=stat.S_ISLNK(st.st_mode), kind=_kind(st))
        base: dict[str, Any] = {
            "is_char": True,
            "numbers": f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}",
            "mode": stat.S_IMODE(st.st_mode),
        }
        if device.name == "tty" or st.st_rdev != device.rdev:
            # tty: opening needs a controlling terminal; identity is what matters. Other numbers:
            # never opened, since opening some devices acts (a watchdog node reboots the machine).
            return DeviceFacts(**base)
        entropy = device.name in ENTROPY_DEVICES
        try:
            fd = os.open(f"self/fd/{look}", _OPEN_READ if entropy else _OPEN_RDWR, dir_fd=proc_fd)
        except OSError as exc:
            try:
                nodev = bool(os.fstatvfs(look).f_flag & os.ST_NODEV)
            except OSError:
                nodev = False
            return DeviceFacts(**base, open_errno=exc.errno or errno.EIO, nodev=nodev)
    finally:
        os.close(look)
    try:
        if entropy:
            try:
                return DeviceFacts(**base, samples=(os.read(fd, 64), os.read(fd, 64)))
            except OSError as exc:
                return DeviceFacts(**base, read_errno=exc.errno or errno.EIO)
        try:
            os.write(fd, b"x")
            written = "ok"
        except OSError as exc:
            written = errno.errorcode.get(exc.errno or 0, "error")
        return DeviceFacts(**base, write_result=written)
    finally:
        os.close(fd)


def _notify_facts(path: str) -> NotifyFacts:
    """connect() a unix datagram socket to ``path`` as the current user, sending nothing (a
    READY=1 would tell systemd the daemon is up before it is); on failure, lstat says why."""
    import socket  # already loaded by _child before chroot

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
        return NotifyFacts()
    except OSError as exc:
        connect_errno = exc.errno or errno.EIO
    finally:
        sock.close()
    try:
        st = os.lstat(path)
    except OSError as exc:
        return NotifyFacts(connect_errno, lstat_errno=exc.errno or errno.EIO)
    kind = "a socket" if stat.S_ISSOCK(st.st_mode) else _kind(st)
    if stat.S_ISCHR(st.st_mode):
        kind = f"a character device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return NotifyFacts(
        connect_errno,
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        owner=f"{st.st_uid}:{st.st_gid}",
    )


def _drop(identity: Identity) -> Finding:
    os.setgroups(list(identity.groups))
    os.setgid(identity.gid)
    os.setuid(identity.uid)
    if identity.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            return Finding(
                "privileges", False, "setuid(0) succeeded after the drop", "report a bug"
            )
    return Finding("privileges", True, "")  # detail filled in by the parent from /proc


def _start_listing(source: CryptoSource) -> CommandLibraries | None:
    """COMMAND's loader asked now, when its libraries are what is probed: `ld.so --list`
    (the child's longest step before chroot) runs while the rest is readied. It maps the
    libraries without running their code, so it cannot make OpenSSL's marker either."""
    if source == _HOST_DEFAULT or source.paths or source.libs or source.missing:
        return None
    from jailshim.verify.libfind import CommandLibraries

    return CommandLibraries(source.command)


def _reseeders(
    source: CryptoSource, listing: CommandLibraries | None = None
) -> tuple[list[_Reseeder], list[Finding], list[ProbeLibrary]]:
    """One probe per library the daemon uses (loaded and seeded now, before chroot), the
    findings for libraries that cannot be probed, and every library for the verdict.
    ``listing``: COMMAND's loader, started earlier (_start_listing)."""
    from jailshim.verify.entropy import ProbeLibrary
    from jailshim.verify.openssl import OpenSSLProbe

    if source == _HOST_DEFAULT:
        host = OpenSSLProbe()
        known = [ProbeLibrary("OpenSSL", host.version, host.check)] if host.version else []
        return [host], [], known
    from jailshim.verify import cryptolib, libfind

    note = ""
    if source.paths:
        libs = libfind.for_paths(source.paths)
    elif source.libs or source.missing:
        libs, note = list(source.libs), source.missing
    else:
        libs, note = (listing or libfind.CommandLibraries(source.command)).result()
    if not libs:
        said = f"cannot tell: {note}" if source.missing else f"none probed: {note}"
        return [], [Finding("crypto library", True, said, warning=True, whose="probe")], []
    probes: list[_Reseeder] = []
    notes = []
    known = []
    for lib in libs:
        # a daemon's library that must not be loaded: "cannot probe", and nothing in its place
        kind = "" if lib.refusal else cryptolib.probe_kind(lib)
        probe: _Reseeder | None = None
        if kind == "openssl":
            probe = OpenSSLProbe(lib)
        elif kind == "gnutls":
            from jailshim.verify.gnutls import GnuTLSProbe

            probe = GnuTLSProbe(lib)
        if probe is not None:
            probes.append(probe)
            version = probe.version or lib.version
            if not version and lib.path and not lib.untrusted:
                # not loadable here (a vendored copy whose libz only its binary's rpath finds):
                # its version string still says which row of the table it is
                with contextlib.suppress(OSError):
                    version = cryptolib.version_in(libfind.read_bounded(lib.path))
            known.append(ProbeLibrary(lib.family, version, probe.check))
            continue
        check = f"{cryptolib.short_version(lib.version) or lib.family} reseed"
        notes.append(Finding(check, True, cryptolib.unprobeable(lib), warning=True, whose="probe"))
        known.append(ProbeLibrary(lib.family, lib.version, ""))
    return probes, notes, known


def _child(
    jail: str,
    identity: Identity | None,
    devices: tuple[Device, ...],
    *,
    notify: str,
    out: int,
    go: int,
    needs: Needs | None,
    crypto: CryptoSource,
) -> None:
    def emit(finding: Finding) -> None:
        os.write(out, (json.dumps(finding.to_json()) + "\n").encode())

    listing = _start_listing(crypto)
    try:
        from jailshim.verify.entropy import ProbeEntropy, absent_only, release_of

        # the marker as the daemon will find it: before any library here could make it
        marker = _marker_here()
        # before chroot: the libraries and their first seed come from the host, as the
        # daemon's did
        reseeders, notes, libraries = _reseeders(crypto, listing)
    finally:
        if listing is not None:
            listing.cancel()  # its answer was not read (a failure): killed and reaped
    if notify:  # loaded before chroot, like libcrypto: the jail has no Python to import
        import socket  # noqa: F401
    if needs is not None:
        from jailshim.verify.needs import gather, prepare_before_chroot

        now, host_zone = prepare_before_chroot()
    if os.read(go, 1) != b"1":  # the parent gave up (prepare failed, a signal): no probe
        os._exit(0)
    lookups = None
    if needs is not None and identity is not None:
        from jailshim.verify.needs import start_lookups

        lookups = start_lookups(needs, jail, identity.uid, identity.gid, identity.groups)
    # the host's /proc, to reopen a node looked at by fd (_device_facts); closed before anything
    # of the jail's could run here (the needs' NSS modules, as the daemon's user)
    proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    os.chroot(jail)
    os.chdir("/")
    emit(_drop(identity) if identity is not None else Finding("privileges", True, ""))
    try:
        os.getrandom(1, os.GRND_NONBLOCK)
        gr_errno = 0
    except OSError as exc:
        gr_errno = exc.errno or errno.EIO
    rng, getrandom, _ = judge_getrandom(gr_errno)
    emit(rng)
    emit(getrandom)
    uid = os.getuid()
    absent = []
    urandom: bool | None = None
    for device in devices:
        facts = _device_facts(device, proc_fd)
        finding = judge_device(device, facts, uid)
        if device.name in ENTROPY_DEVICES and not finding.ok and absent_only(facts):
            absent.append(finding.check)
        if device.name == "urandom":
            urandom = finding.ok
        emit(finding)
    os.close(proc_fd)
    if notify:
        emit(judge_notify(notify, _notify_facts(notify), uid))
    for finding in notes:
        emit(finding)
    for reseeder in reseeders:
        emit(reseeder.reseed())
    entropy = ProbeEntropy(
        getrandom_errno=gr_errno,
        marker=marker,
        kernel=release_of(os.uname().release),
        libraries=tuple(libraries),
        absent=tuple(absent),
        urandom=urandom,
    )
    os.write(out, (json.dumps({"entropy": entropy.to_json()}) + "\n").encode())
    if needs is not None:
        as_root = os.geteuid() == 0
        for finding in gather(needs, now, host_zone, as_root=as_root, lookups=lookups):
            emit(finding)


def _privileges(pid: int, identity: Identity | None, reported: Finding) -> Finding:
    """Confirm the drop from outside: the child's /proc status (readable while it is a zombie)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError as exc:
        return Finding(
            "privileges", False, f"cannot read the probe's status ({exc})", "report a bug"
        )
    uids = fields["Uid"].split()
    gids = fields["Gid"].split()
    groups = sorted(int(g) for g in fields["Groups"].split())
    seen = f"uid {'/'.join(uids)}, gid {'/'.join(gids)}, groups {groups or 'none'}"
    if identity is None:
        return Finding(
            "privileges",
            True,
            f"checked as {seen}: no --user given, so modes were not tested as the daemon's user",
            warning=True,
        )
    want_u, want_g = str(identity.uid), str(identity.gid)
    if not reported.ok:
        return reported
    if set(uids) != {want_u} or set(gids) != {want_g} or groups != sorted(identity.groups):
        return Finding(
            "privileges", False, f"the probe ran as {seen}, not as {identity.name}", "report a bug"
        )
    return Finding("privileges", True, f"ran as {identity.name} ({seen}); setuid(0) refused")


class Probe:
    """One probe child. Forked as early as the jail is known: it loads libcrypto and seeds
    OpenSSL (the slow part, ~2.5 ms) while the parent is still importing and preparing, then
    waits on a pipe until ``collect`` says go (or ``cancel`` closes the pipe: it exits)."""

    def __init__(
        self,
        jail: str,
        identity: Identity | None,
        devices: tuple[Device, ...],
        needs: Needs | None = None,
        *,
        notify: str = "",
        crypto: CryptoSource = _HOST_DEFAULT,
    ) -> None:
        """``notify``: $NOTIFY_SOCKET's path, when the daemon sends READY=1 from in the jail."""
        self.identity = identity
        # the entropy facts the child saw (collect() fills it in): the verdict's input
        self.entropy: ProbeEntropy | None = None
        self.read_end, write_end = os.pipe2(os.O_CLOEXEC)
        go_read, self.go = os.pipe2(os.O_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into the caller's stack
            code = 0
            try:
                os.close(self.read_end)
                os.close(self.go)
                _child(
                    jail,
                    identity,
                    devices,
                    notify=notify,
                    out=write_end,
                    go=go_read,
                    needs=needs,
                    crypto=crypto,
                )
            except BaseException as exc:
                finding = Finding(
                    "probe", False, f"could not enter the jail: {exc}", "check --chroot"
                )
                try:
                    os.write(write_end, (json.dumps(finding.to_json()) + "\n").encode())
                finally:
                    code = 1
            os._exit(code)
        os.close(write_end)
        os.close(go_read)

    def cancel(self) -> None:
        """The jail will not be probed after all: let the child go, and reap it."""
        os.close(self.go)
        os.close(self.read_end)
        os.waitpid(self.pid, 0)

    def collect(self) -> list[Finding]:
        """Let the child probe the (now prepared) jail; its findings. The child is reaped."""
        with contextlib.suppress(OSError):  # it already exited: its report says why
            os.write(self.go, b"1")
        os.close(self.go)
        # the verdict's modules, loaded while the child works in the jail: after its answer
        # they were ~1 ms of every run's critical path (issue 28)
        from jailshim.verify.entropy import ProbeEntropy

        pid, read_end = self.pid, self.read_end
        chunks, deadline, hung = [], time.monotonic() + _PROBE_DEADLINE, False
        try:
            while True:
                left = max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([read_end], [], [], left)
                if not ready:
                    hung = True
                    os.kill(pid, signal.SIGKILL)
                    break
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
            findings = []
            for line in b"".join(chunks).splitlines():
                data = json.loads(line)
                if "entropy" in data:
                    self.entropy = ProbeEntropy.from_json(data["entropy"])
                else:
                    findings.append(Finding.from_json(data))
            if findings and findings[0].check == "privileges":
                findings[0] = _privileges(pid, self.identity, findings[0])
            # rows that do not say whose they are: the probe's own (privileges, a probe that
            # failed), else the jail's (its files, its notify socket)
            findings = [
                f
                if f.whose
                else f._replace(whose="probe" if f.check in ("privileges", "probe") else "jail")
                for f in findings
            ]
            if hung:
                findings.append(
                    Finding(
                        "probe",
                        False,
                        f"the probe did not finish within {_PROBE_DEADLINE:.0f}s "
                        "(a blocking read?)",
                        "look for a device in the jail that blocks on read",
                        transient=True,
                    )
                )
            elif not findings:
                findings = [
                    Finding("probe", False, "the probe child reported nothing", "report a bug")
                ]
            return findings
        finally:
            os.close(read_end)
            os.waitpid(pid, 0)


def needs_of(spec: Spec) -> Needs:
    """What the probe proves beyond /dev: the time zone always (a warning unless --files
    time), getaddrinfo for --resolve, getservbyname with --files services."""
    return Needs(
        time_strict="time" in spec.file_sets,
        resolve=spec.resolve_names,
        services="services" in spec.file_sets,
    )


def crypto_source(spec: Spec) -> CryptoSource:
    """--crypto-lib, else COMMAND's libraries, else (neither given) the host's libcrypto."""
    return CryptoSource(paths=spec.crypto_libs, command=spec.command)


def start_probe(spec: Spec) -> Probe | None:
    """Fork the first probe now, so it readies OpenSSL while the caller vets and prepares the
    jail. Here, next to Probe, so that `run` forks it as soon as the spec is known, before
    importing check (issue 28: the child is the run's critical path). Before "go" the child
    reads only the host (COMMAND's loader, libcrypto, the time zone), never the jail."""
    if not spec.verify or spec.dry_run:
        return None
    return Probe(
        spec.chroot,
        spec.identity,
        spec.devices,
        needs_of(spec),
        notify=spec.notify_socket,
        crypto=crypto_source(spec),
    )


def run_probe(
    jail: str,
    identity: Identity | None,
    devices: tuple[Device, ...],
    crypto: CryptoSource = _HOST_DEFAULT,
) -> tuple[list[Finding], ProbeEntropy | None]:
    """Run the probe once in a child and return its findings and entropy facts (None when
    the child died before it could say them); the child is always reaped."""
    probe = Probe(jail, identity, devices, crypto=crypto)
    return probe.collect(), probe.entropy
