"""Attacks on `jailshim doctor --pid` (issue 25, items 1, 7 and 8): a container's root and a
daemon's own user try to make doctor run their code as host root, or probe the host's library
in place of the daemon's, swap the probe's device after its look, or hold doctor's
--read-filter in vfork(); and doctor says the true thing about a PID it cannot inspect (the
newest of two seccomp filters' errno)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import pids
from tests.daemons import process_state
from tests.handshake import wait_until
from tests.multiarch import LIBDIR
from tests.planted import check_rows, evil_libcrypto, jailed_daemon, reseed_rows
from tests.support import (
    EXCHANGER,
    NOBODY,
    TESTS,
    clean_env,
    compile_c,
    jailshim_argv,
    need,
    run,
)

DEBIAN_LIBCRYPTO = f"{LIBDIR}/libcrypto.so.3"

# ---- 1: a container's library is never loaded by host root ---------------------------------


def test_a_containers_libcrypto_never_runs_as_host_root(
    area: Path, jail: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """A rootful container (mount namespace, no user namespace): its root-owned
    /usr/lib/MULTIARCH/libcrypto.so.3 has a constructor; a process there loads it,
    calls itself haproxy, chroots and drops to nobody. `doctor --pid` on the host ran that
    constructor as uid 0 in the host's mount namespace. Now: never loaded, the row says
    cannot probe (never ok, never the host's library in its place), the version comes from
    the bytes; --crypto-lib loads what the operator names."""
    marker = area / "ran"
    evil = evil_libcrypto(area, marker)
    container = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 f'mount --bind {evil} {DEBIAN_LIBCRYPTO} && exec "$@"', "sh"]  # fmt: skip
    pid = jailed_daemon(started, container, DEBIAN_LIBCRYPTO, jail)
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "haproxy"
    assert os.stat(f"/proc/{pid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino

    result = run("doctor", "--pid", str(pid))
    assert not marker.exists(), marker.read_text()
    assert result.named("doctor.daemon")[0]["libraries"] == ["libcrypto.so.3 (OpenSSL 3.0.99)"]
    (row,) = reseed_rows(result).values()
    assert row["check"] == "OpenSSL 3.0.99 reseed" and row["level"] == "warning", row
    assert row["detail"].startswith("cannot probe libcrypto.so.3 (OpenSSL 3.0.99)"), row
    assert "another mount namespace" in row["detail"] and "--crypto-lib" in row["detail"]

    chosen = run("doctor", "--pid", str(pid), "--crypto-lib", DEBIAN_LIBCRYPTO)
    assert not marker.exists(), marker.read_text()
    (row,) = reseed_rows(chosen).values()
    assert "primary DRBG" in row["detail"] and DEBIAN_LIBCRYPTO in row["detail"], row


def test_a_file_of_the_same_inode_number_on_another_filesystem_is_not_loaded(
    area: Path, jail: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """The daemon maps DIR/libcrypto.so.3 (inode 2 of a tmpfs); then another tmpfs is
    mounted over DIR holding a root-owned DIR/libcrypto.so.3, also inode 2. The inode check
    compared st_ino alone: doctor loaded the file now at the path, not the mapped one. Now the
    mapped file itself is loaded (map_files, device and inode), and nothing of the other."""
    libs = area / "libs"
    libs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "a", str(libs)], check=True)
    shutil.copy(DEBIAN_LIBCRYPTO, libs / "libcrypto.so.3")
    pid = jailed_daemon(started, [], str(libs / "libcrypto.so.3"), jail)
    marker = area / "ran"
    evil = evil_libcrypto(area, marker)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "b", str(libs)], check=True)
    shutil.copy(evil, libs / "libcrypto.so.3")
    mapped = os.stat(f"/proc/{pid}/map_files/" + _range_of(pid, "libcrypto.so.3"))
    now = os.stat(libs / "libcrypto.so.3")
    assert now.st_ino == mapped.st_ino and now.st_dev != mapped.st_dev

    result = run("doctor", "--pid", str(pid))
    assert not marker.exists(), marker.read_text()
    (row,) = reseed_rows(result).values()
    host = ctypes.CDLL(DEBIAN_LIBCRYPTO)
    host.OpenSSL_version.restype = ctypes.c_char_p
    version = host.OpenSSL_version(0).decode()
    assert row["check"] == f"{' '.join(version.split()[:2])} reseed", row
    assert "primary DRBG reseeded" in row["detail"], row


def _range_of(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith("/" + name):
            return line.split()[0]
    raise AssertionError(f"{name} is not mapped by {pid}")


def test_a_library_that_doctor_found_then_saw_remapped_is_not_loaded(
    area: Path, jail: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """Found (device, inode) and loaded file must be one: a library whose identity does not
    match what was found (another device, same inode number) is refused at load."""
    from jailshim.verify import libfind

    libs = area / "libs"
    libs.mkdir()
    shutil.copy(DEBIAN_LIBCRYPTO, libs / "libcrypto.so.3")
    pid = jailed_daemon(started, [], str(libs / "libcrypto.so.3"), jail)
    (lib,), _ = libfind.for_pid(pid)
    assert not lib.refusal, lib
    with pytest.raises(OSError, match="not the file the daemon had mapped"):
        libfind.load(lib._replace(dev=lib.dev + 1))


def test_without_map_files_the_path_is_used_only_while_it_is_the_mapped_file(
    area: Path, jail: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """doctor without CAP_SYS_ADMIN (in a container) cannot follow /proc/PID/map_files: the
    library is loaded from the path the maps show while that path is the mapped file (device
    and inode from the maps); once the path names another file, it is not loaded at all."""
    libs = area / "libs"
    libs.mkdir()
    shutil.copy(DEBIAN_LIBCRYPTO, libs / "libcrypto.so.3")
    pid = jailed_daemon(started, [], str(libs / "libcrypto.so.3"), jail)
    probed = run("doctor", "--pid", str(pid), wrap=_NO_MAP_FILES)
    (row,) = reseed_rows(probed).values()
    assert row["check"].startswith("OpenSSL 3.") and "primary DRBG" in row["detail"], row
    assert f"at {libs}/libcrypto.so.3:" in row["detail"], row

    marker = area / "ran"
    # root's, but not the mapped file
    os.rename(evil_libcrypto(area, marker), libs / "libcrypto.so.3")
    refused = run("doctor", "--pid", str(pid), wrap=_NO_MAP_FILES)
    assert not marker.exists(), marker.read_text()
    (row,) = reseed_rows(refused).values()
    assert row["level"] == "warning" and "could not be proven to be the file" in row["detail"]


_NO_MAP_FILES = ["setpriv", "--inh-caps=-sys_admin,-checkpoint_restore",
                 "--bounding-set=-sys_admin,-checkpoint_restore", "--"]  # fmt: skip


@pytest.mark.parametrize("wrap", [[], _NO_MAP_FILES], ids=["root", "without-map_files"])
def test_a_library_on_fuse_is_neither_trusted_nor_touched(
    area: Path, jail: Path, started: list[subprocess.Popen[bytes]], wrap: list[str]
) -> None:
    """A FUSE server says who owns its files: a "root-owned" libcrypto.so.3 (with a
    constructor) on a FUSE mount in doctor's own namespace was loaded as root. Now it is not,
    and doctor sends its server no request at all (a server may never answer one), also when
    it cannot follow map_files and would look at the path instead."""
    need(os.path.exists("/dev/fuse"), "needs /dev/fuse")
    marker = area / "ran"
    evil = evil_libcrypto(area, marker)
    mount, log = area / "fuse", area / "fuse.log"
    mount.mkdir()
    server = subprocess.Popen(
        [sys.executable, str(TESTS / "fuse_file.py"), str(mount), "libcrypto.so.3", str(evil),
         str(log)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline() == b"mounted\n"
        pid = jailed_daemon(started, [], str(mount / "libcrypto.so.3"), jail)
        before = log.read_text()
        time.sleep(1.1)  # past the attributes' validity: a lookup or stat would ask the server
        result = run("doctor", "--pid", str(pid), wrap=wrap)
        assert not marker.exists(), marker.read_text()
        assert log.read_text() == before  # not one request from doctor
        (row,) = reseed_rows(result).values()
        assert row["level"] == "warning", row
        assert "FUSE filesystem" in row["detail"] or "could not be proven" in row["detail"], row
    finally:
        for proc in started:  # the daemon maps the file: it goes first
            proc.kill()
            proc.wait(10)
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        server.kill()
        server.wait(10)


def test_a_containers_fuse_library_is_sent_no_request(
    area: Path, jail: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """A container (its own mount namespace, one chrooted process: its mountinfo hides the
    mounts outside the jail) maps libcrypto.so.3 from a FUSE mount of its own. doctor cannot
    tell that filesystem's type from the daemon; it must not stat or open the file (an OPEN or
    GETATTR its server may never answer hangs doctor): only its name is used."""
    need(os.path.exists("/dev/fuse"), "needs /dev/fuse")
    evil = evil_libcrypto(area, area / "ran")
    mount, log, ready, server = area / "fuse", area / "fuse.log", area / "ready", area / "pid"
    mount.mkdir()
    serve = (
        f"{sys.executable} {TESTS / 'fuse_file.py'} {mount} libcrypto.so.3 {evil} {log} "
        f"{jail} > {ready} & echo $! > {server}; "
        f'while [ ! -s {ready} ]; do sleep 0.05; done; exec "$@"'
    )
    container = ["unshare", "--mount", "--propagation", "private", "sh", "-c", serve, "sh"]
    try:
        pid = jailed_daemon(started, container, str(mount / "libcrypto.so.3"), jail)
        before = log.read_text()
        time.sleep(1.1)  # past the attributes' validity: a stat now would ask the server
        result = run("doctor", "--pid", str(pid))
        assert log.read_text() == before  # not one request from doctor
        (row,) = reseed_rows(result).values()
        assert row["level"] == "warning" and "another mount namespace" in row["detail"], row
    finally:
        for proc in started:
            proc.kill()
            proc.wait(10)
        if server.exists() and server.read_text().strip():  # the FUSE server: argv names MOUNT
            pids.kill([pids.pin(int(server.read_text()), pids.cmdline_has(str(mount)))])


# ---- 7: a renamed library is still the daemon's ---------------------------------------------


def test_a_library_renamed_by_the_daemons_user_is_still_found_and_probed(
    area: Path, jail: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """The daemon's user renames its mapped libcrypto.so.3 to data.bin (the directory is its
    own): doctor listed no library and probed the host's OpenSSL in its place ("OpenSSL
    reseed"). The mapped file is known by its soname, and that file is probed."""
    libs = area / "libs"
    libs.mkdir()
    os.chown(libs, NOBODY, NOBODY)
    shutil.copy(DEBIAN_LIBCRYPTO, libs / "libcrypto.so.3")  # root's, 0644: a trusted copy
    pid = jailed_daemon(started, [], str(libs / "libcrypto.so.3"), jail, rename=True)
    assert (libs / "data.bin").exists() and not (libs / "libcrypto.so.3").exists()

    result = run("doctor", "--pid", str(pid))
    (label,) = result.named("doctor.daemon")[0]["libraries"]
    assert label.startswith("libcrypto.so.3 (OpenSSL 3."), label
    rows = reseed_rows(result)
    assert "OpenSSL reseed" not in rows, rows  # the host's, unversioned
    (row,) = rows.values()
    assert row["check"].startswith("OpenSSL 3.") and "primary DRBG" in row["detail"], row


def test_a_daemon_with_no_library_doctor_can_name_gets_cannot_tell(
    area: Path, jail: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """The daemon's user owns its library, strips what names it (no soname, no version) and
    renames it: doctor cannot tell which library the daemon uses. It says so, and probes no
    library of the host's in its place."""
    libs = area / "libs"
    libs.mkdir()
    plain = compile_c(area, "plain.so", "int answer(void) { return 42; }\n", "-shared", "-fPIC")
    shutil.copy(plain, libs / "libcrypto.so.3")
    os.chown(libs / "libcrypto.so.3", NOBODY, NOBODY)
    os.chown(libs, NOBODY, NOBODY)
    pid = jailed_daemon(started, [], str(libs / "libcrypto.so.3"), jail, rename=True)

    result = run("doctor", "--pid", str(pid))
    assert result.named("doctor.daemon")[0]["libraries"] == []
    assert reseed_rows(result) == {}
    row = check_rows(result)["crypto library"]
    assert row["level"] == "warning" and row["detail"].startswith("cannot tell: none of the")
    assert "--crypto-lib" in row["detail"], row


# ---- 8: what doctor says about a PID it cannot inspect ---------------------------------------


def test_a_zombie_is_said_to_be_a_zombie(root: None) -> None:
    """A daemon that exited and is not reaped yet was "no such process"."""
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{child.pid}/status").read_text().count("State:\tZ"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        result = run("doctor", "--pid", str(child.pid))
        assert result.code == 64
        assert "has exited and is a zombie" in result.error
        assert f"its parent, PID {os.getpid()}, has not reaped it yet" in result.error
    finally:
        child.wait()


def _sleeper(started: list[subprocess.Popen[bytes]]) -> int:
    proc = subprocess.Popen(["sleep", "60"])
    started.append(proc)
    return proc.pid


def test_root_without_cap_sys_ptrace_is_told_so_not_to_become_root(
    root: None, started: list[subprocess.Popen[bytes]]
) -> None:
    """doctor as root without CAP_SYS_PTRACE (a container's default) on a process holding
    more capabilities: the kernel refuses /proc/PID/root, and doctor said "run doctor as
    root" to root."""
    pid = _sleeper(started)
    drop = ["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace", "--"]
    result = run("doctor", "--pid", str(pid), wrap=drop)
    assert result.code == 77, result.stderr
    assert "run doctor as root" not in result.error
    assert "doctor runs as root but without CAP_SYS_PTRACE" in result.error, result.error


_LANDLOCK = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
attr = ctypes.c_uint64(1 << 11)  # handles LANDLOCK_ACCESS_FS_MAKE_BLOCK only (ABI 1)
fd = libc.syscall(444, ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
if fd < 0 or libc.syscall(446, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
    sys.exit(99)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def test_root_confined_by_a_security_module_is_told_so(
    root: None, started: list[subprocess.Popen[bytes]]
) -> None:
    """doctor as root with CAP_SYS_PTRACE inside a Landlock domain, on a process outside it:
    the kernel refuses, whatever root holds (PID 1 on this machine). "run doctor as root" was
    no help; the sentence says a security module confines doctor."""
    pid = _sleeper(started)
    check = subprocess.run(
        [sys.executable, "-c", _LANDLOCK, "true"], capture_output=True, check=False
    )
    need(check.returncode == 0, "needs Landlock (Linux 5.13+, in the active LSMs)")
    result = run("doctor", "--pid", str(pid), wrap=[sys.executable, "-c", _LANDLOCK])
    assert result.code == 77, result.stderr
    assert "run doctor as root" not in result.error
    assert "although doctor runs as root with CAP_SYS_PTRACE: a security module" in result.error


# ---- the soname reader on hostile bytes --------------------------------------------------------


def _elf_head(phoff: int, phentsize: int, phnum: int) -> bytes:
    head = bytearray(b"\x7fELF\x02\x01" + b"\0" * 58)
    struct.pack_into("<Q", head, 0x20, phoff)
    struct.pack_into("<HH", head, 0x36, phentsize, phnum)
    return bytes(head)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x7fELF\x02\x01" + b"\xff" * 58,  # offsets past any file (pread would overflow)
        _elf_head(64, 56, 0xFFFF),  # 3.6 MB of program headers asked for
        _elf_head(64, 56, 1) + struct.pack("<IIQQQQQQ", 2, 0, 1 << 62, 0, 0, 1 << 40, 0, 0),
        b"OpenSSL " * 1000,
    ],
)
def test_soname_of_garbled_elf_is_empty(data: bytes) -> None:
    from jailshim.verify.cryptolib import soname_of

    assert soname_of(lambda at, size: data[at : at + size]) == ""


def test_soname_of_real_libraries() -> None:
    from jailshim.verify.cryptolib import soname_of

    data = Path(DEBIAN_LIBCRYPTO).read_bytes()
    assert soname_of(lambda at, size: data[at : at + size]) == "libcrypto.so.3"


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        ({"same_mount_namespace": False}, "another mount namespace"),
        ({"fstype": "fuse.sshfs"}, "FUSE filesystem"),  # its server says who owns it
        ({"fstype": "fuseblk"}, "FUSE filesystem"),
        ({"fstype": ""}, "not in the mount table"),
        ({"uid": NOBODY}, "owned by uid 65534"),
        ({"mode": 0o100664}, "mode 0664"),
        ({}, ""),
    ],
)
def test_what_a_daemons_library_must_be_to_be_loaded(facts: dict[str, Any], reason: str) -> None:
    """Pure: doctor's own mount namespace, a filesystem that is not a FUSE server's, root's
    alone; anything else is a reason not to load (run as root) the daemon's library."""
    from jailshim.verify.cryptolib import load_refusal

    given: dict[str, Any] = {
        "same_mount_namespace": True,
        "fstype": "ext4",
        "uid": 0,
        "mode": 0o100644,
        "pid": 42,
        "name": "libcrypto.so.3",
        **facts,
    }
    said = load_refusal(**given)
    assert (reason in said and said) if reason else said == "", said


@contextlib.contextmanager
def _loop_device(backing: Path) -> Iterator[str]:
    """A loop block device over ``backing`` (all zeros): stands for the host's disk, whose
    numbers a rootful container's root (CAP_MKNOD) can give to a node in its own files."""
    need(shutil.which("losetup") is not None, "needs losetup (util-linux)")
    made = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], check=False, capture_output=True, text=True
    )
    need(made.returncode == 0, f"needs a free loop device: {made.stderr.strip()}")
    device = made.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_doctors_probe_never_opens_a_device_swapped_in_after_its_look(tmp_path: Path) -> None:
    """A rootful container's root owns every file of its chrooted daemon's jail, and the daemon
    runs as uid 0, so doctor's probe stays root in /proc/PID/root. It exchanges dev/urandom with
    a block node of the host's disk (here a loop device over zeros) in a loop. The probe's
    _device_facts looks (lstat: 1:9) and then opens the name: the open gets the block device,
    which root in the host's cgroup may open (the container's device cgroup does not apply), and
    reads it. Measured end to end: `jailshim doctor --pid` read the loop device in 5 of 40 runs;
    a node 10:130 would have armed the host's watchdog. Here the probe's own function runs
    2000 times in a chrooted child as root (what doctor's probe child is), for a high rate."""
    from jailshim.devices import ALLOWLIST
    from jailshim.verify import probe

    exchanger = compile_c(tmp_path, "exchange", EXCHANGER, "-O2")
    backing = tmp_path / "disk.img"
    backing.write_bytes(bytes(1 << 20))
    jail = tmp_path / "jail"
    (jail / "dev").mkdir(parents=True)
    urandom = ALLOWLIST["urandom"]
    os.mknod(jail / "dev" / "urandom", 0o666 | 0o020000, urandom.rdev)
    with _loop_device(backing) as device:
        os.mknod(jail / "dev" / "disk", 0o600 | 0o060000, os.stat(device).st_rdev)
        racer = subprocess.Popen([str(exchanger), str(jail / "dev"), "urandom", "disk"])
        deadline = time.monotonic() + 10
        while not stat.S_ISBLK(os.lstat(jail / "dev" / "urandom").st_mode):  # it is racing
            assert racer.poll() is None and time.monotonic() < deadline, "the racer did not run"
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # doctor's probe child for a uid-0 daemon: chrooted, still root
            try:
                os.close(read_end)
                proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY)  # as _child does
                os.chroot(jail)
                os.chdir("/")
                # probes for a while, not a count: on a busy machine 2000 probes (0.1 s) could
                # all fall in one slice where the racer did not run (seen: 0 hits on the old code)
                hits = reads = probes = 0
                until = time.monotonic() + 1.5
                while probes < 2000 or time.monotonic() < until:
                    probes += 1
                    facts = probe._device_facts(urandom, proc_fd)
                    if facts.samples and all(not any(s) for s in facts.samples):
                        hits += 1  # 2 x 64 zero bytes: the block device was read
                    elif facts.samples:
                        reads += 1  # urandom itself, opened by the fd of its look
                os.write(write_end, f"{hits} {reads} {probes}".encode())
            finally:
                os._exit(0)
        os.close(write_end)
        try:
            with os.fdopen(read_end, "rb") as f:
                hits, reads, probes = (int(n) for n in (f.read() or b"-1 -1 -1").split())
        finally:
            os.waitpid(child, 0)
            racer.send_signal(signal.SIGTERM)
            racer.wait(timeout=10)
    assert hits == 0, f"root read the swapped-in block device in {hits} of {probes} probes"
    assert reads > 0, f"the probe never read dev/urandom itself in {probes} probes"


_VFORK_HANG = r"""
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <grp.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    /* started by root (the test's scratch directory is root's 0700), runs as argv[1] */
    uid_t user = argc > 1 ? (uid_t)atoi(argv[1]) : 65534;
    if (setgroups(0, NULL) || setresgid(user, user, user) || setresuid(user, user, user)) return 4;
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {1, allow};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return 2;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) return 3;
    printf("ready\n");
    fflush(stdout);
    /* the parent waits in vfork() (killable only) for a child that never execs */
    if (vfork() == 0) for (;;) syscall(SYS_pause);
    return 0;
}
"""


@contextlib.contextmanager
def _as_nobody(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """``argv`` (a program of ours that drops to the uid it is given) as nobody."""
    proc = subprocess.Popen([*argv, str(NOBODY)], stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        # proc is unreaped, so its number is its own; its children are pinned as its children
        pids.kill(reversed(pids.pin_family(proc.pid)))
        proc.wait()


def test_a_daemon_in_vfork_never_holds_doctors_read_filter(root: None, tmp_path: Path) -> None:
    """The daemon's user (or any local user whose process doctor is pointed at, e.g. a worker
    of a master given by --pid) makes its main thread wait in vfork() for a child that never
    execs: that wait is killable only, so PTRACE_INTERRUPT never brings it to a stop, and
    doctor --read-filter waited in waitpid() for ever (root's doctor hung; found by review2).
    Wanted: doctor answers within seconds, "cannot tell", and the daemon is left running."""
    binary = compile_c(tmp_path, "vforkhang", _VFORK_HANG, "-O2")
    with _as_nobody([str(binary)]) as daemon:
        assert daemon.stdout is not None and daemon.stdout.readline() == "ready\n"
        wait_until(lambda: process_state(daemon.pid) == "D", "the daemon's vfork wait (state D)")
        started = time.monotonic()
        try:
            done = subprocess.run(
                jailshim_argv("doctor", "--pid", str(daemon.pid), "--read-filter"),
                check=False,
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=20,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("doctor --read-filter still waits for a daemon in vfork() after 20 s")
        took = time.monotonic() - started
        assert done.returncode in (0, 1, 69, 75), done.stderr
        assert "ETIMEDOUT" in done.stdout + done.stderr
        assert took < 15
        # not left in a ptrace stop: still in its vfork wait, and it runs on once that ends
        assert process_state(daemon.pid) == "D"
        (vfork_child,) = pids.pin_descendants(daemon.pid)
        pids.kill([vfork_child])
        assert daemon.wait(timeout=5) == 0


_TWO_FILTERS = r"""
/* Two seccomp filters answering getrandom() with different errnos: the oldest EPERM, the
   newest ENOSYS. The kernel runs the newest first and keeps the first of equal actions. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

static void install(int err) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getrandom, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = 4, .filter = f};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) perror("seccomp");
}

int main(void) {
    char b[8];
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    install(EPERM);
    install(ENOSYS);
    long r = syscall(SYS_getrandom, b, 8, 0);
    const char *name = errno == ENOSYS ? "ENOSYS" : errno == EPERM ? "EPERM" : "other";
    printf("getrandom=%ld errno=%s\n", r, name);
    fflush(stdout);
    for (;;) pause();
}
"""


def test_the_newest_seccomp_filters_errno_is_the_one_reported(tmp_path: Path) -> None:
    """Of two filters that both answer getrandom() with an errno, the kernel returns the
    newest's (it runs them newest first and keeps the first of equal actions). The ptrace
    request numbers filters from the oldest, and doctor took the first: a daemon getting
    ENOSYS was said to get EPERM. Not a top severity: a wrong fact in doctor's row."""
    need(shutil.which("gcc") is not None, "needs gcc (Debian package gcc)")
    from jailshim.verify.daemon_entropy import read_filters
    from jailshim.verify.seccomp import getrandom_answer

    (tmp_path / "two.c").write_text(_TWO_FILTERS)
    binary = tmp_path / "two"
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(tmp_path / "two.c")], check=True)
    daemon = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        assert daemon.stdout.readline() == "getrandom=-1 errno=ENOSYS\n"
        _, why = getrandom_answer(read_filters(daemon.pid), os.uname().machine)
        assert "ENOSYS" in why, why
    finally:
        daemon.kill()
        daemon.wait(10)
