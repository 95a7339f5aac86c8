"""Attacks on crypto-library discovery (issue 17) and the --init stop sequence (issue 18)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from pathlib import Path

import pytest

from jailshim.verify import libfind
from jailshim.verify.cryptolib import CryptoLib

_IN_OPEN = 0x20


def _opens_of(path: Path, action: object) -> int:
    """How many times ``path`` was opened (inotify IN_OPEN) while ``action`` ran."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0
    try:
        assert libc.inotify_add_watch(fd, str(path).encode(), _IN_OPEN) >= 0
        action()  # type: ignore[operator]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return 0
        count, at = 0, 0
        while at < len(data):
            _, mask, _, size = struct.unpack_from("iIII", data, at)
            count += bool(mask & _IN_OPEN)
            at += 16 + size
        return count
    finally:
        os.close(fd)


def test_a_daemons_library_swapped_for_a_device_is_never_opened(tmp_path: Path) -> None:
    """A path from a daemon's maps (a file its user controls) replaced by a link to a device
    or FIFO: root must not open it (opening /dev/watchdog arms the machine's reboot, a tape
    rewinds). Only its inode is looked at, through O_PATH, before anything is opened."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    swapped = tmp_path / "libcrypto.so.1.1"
    swapped.symlink_to(fifo)
    lib = CryptoLib("OpenSSL", swapped.name, str(swapped), untrusted=True)

    def attempt() -> None:
        assert libfind.read_bounded(str(swapped)) == b""
        with pytest.raises(OSError, match="regular file"):
            libfind.load(lib)

    assert _opens_of(fifo, attempt) == 0


def test_a_daemons_library_swapped_after_discovery_is_not_loaded(tmp_path: Path) -> None:
    """doctor --pid finds libcrypto at a path the daemon's user can rename; between finding
    it and loading it (as root), the user puts a link to another root-owned library there.
    What root loads must be the very file the daemon has mapped, or nothing: it is loaded
    through /proc/PID/map_files, whatever the path now names."""
    import shutil
    import subprocess
    import sys

    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    mapped = lib_dir / "libcrypto.so.3"
    shutil.copy("/usr/lib/x86_64-linux-gnu/libcrypto.so.3", mapped)
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import ctypes, sys; ctypes.CDLL({str(mapped)!r}); "
            "print(flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert daemon.stdout is not None
        daemon.stdout.readline()
        (lib,), _ = libfind.for_pid(daemon.pid)
        assert lib.path.startswith(f"/proc/{daemon.pid}/map_files/") and not lib.refusal
        mapped.unlink()  # the swap: another root-owned library under the name doctor found
        mapped.symlink_to("/usr/lib/x86_64-linux-gnu/libz.so.1")
        loaded = libfind.load(lib)
        assert hasattr(loaded, "OpenSSL_version") and not hasattr(loaded, "inflate")
    finally:
        daemon.kill()
        daemon.wait()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # never caught, so never forwarded: the sentence says why, not only that
        ("KILL:TERM", r"KILL is not a signal the supervisor forwards \(it cannot be caught\)"),
        ("STOP:TERM", r"STOP is not a signal the supervisor forwards \(it cannot be caught\)"),
        # TERM starts the stop sequence, which sends CONT right after it: a STOP in its place
        # was undone at once, and the daemon was killed after the grace without a word
        ("TERM:STOP", r"TERM:STOP.*would be undone at once"),
        ("INT:TSTP", r"INT:TSTP.*would be undone at once"),
    ],
)
def test_rewrites_that_cannot_work_are_refused(raw: str, message: str) -> None:
    from jailshim.cli import parse_args
    from jailshim.errors import UsageError

    with pytest.raises(UsageError, match=message):
        parse_args(["run", "--init", "--rewrite-signal", raw, "--", "true"], {})


def test_a_rewrite_to_stop_outside_the_stop_sequence_is_kept() -> None:
    from jailshim.init_options import rewrites

    assert rewrites(["USR1:STOP"], "--rewrite-signal") == ((10, 19),)


def test_a_daemon_mapping_one_hostile_file_under_many_names_costs_doctor_little(
    tmp_path: Path,
) -> None:
    """The daemon's user maps one file full of "OpenSSL " under 60 crypto-library names
    (hard links, its own file): doctor read and scanned it once per name, 32 MB and a second
    each, as root. One inode is one library, and a process has a few crypto libraries."""
    import subprocess
    import sys
    import time

    hostile = tmp_path / "hostile"
    hostile.write_bytes(b"OpenSSL " * (1 << 20))
    names = []
    for n in range(60):
        name = tmp_path / f"libcrypto-{n:08x}.so.1.1"
        os.link(hostile, name)
        names.append(str(name))
    code = (
        "import mmap, sys\n"
        f"files = [open(p, 'rb') for p in {names!r}]\n"
        "maps = [mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ) for f in files]\n"
        "print(flush=True); sys.stdin.read()\n"
    )
    daemon = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert daemon.stdout is not None
        daemon.stdout.readline()
        began = time.monotonic()
        libs, _ = libfind.for_pid(daemon.pid)
        took = time.monotonic() - began
        assert len(libs) <= 1, [lib.name for lib in libs]
        assert took < 1.0, took
    finally:
        daemon.kill()
        daemon.wait()


def test_many_distinct_mapped_files_in_one_process_are_capped() -> None:
    from jailshim.verify.cryptolib import MAX_FILES, mapped_files

    maps = "".join(
        f"7f{n:05x}000-7f{n:05x}100 r--p 00000000 fd:01 {1000 + n} /x/libcrypto-{n:08x}.so.1\n"
        for n in range(2 * MAX_FILES)
    )
    assert len(mapped_files(maps)) == MAX_FILES


def test_a_comm_with_parentheses_and_fields_does_not_fool_the_tree_walk() -> None:
    """A descendant names itself ") R 1 1 1\\n)x" (its /proc/PID/stat then reads as if its
    parent were PID 1) and its child "z) Z 1 (" (as if a zombie): both are still found, as
    descendants, and signalled; nothing else is."""
    import subprocess
    import sys

    from jailshim import supervisor

    code = (
        "import os, sys\n"
        "open('/proc/self/comm', 'w').write(') R 1 1 1\\n)x')\n"
        "if os.fork() == 0:\n"
        "    open('/proc/self/comm', 'w').write('z) Z 1 (')\n"
        "    print(flush=True); sys.stdin.read(); os._exit(0)\n"
        "sys.stdin.read(); os.wait()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()
        reached = supervisor.signal_descendants(0)
        assert len(reached) == 2, reached
        assert reached[-1].endswith(f"[{child.pid}]") and reached[0].startswith("z) Z 1 (")
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


@pytest.mark.parametrize("head", [b"\x7fELF", b"\x7fELF\x02", b"\x7fELF\x02\x01" + b"\xff" * 58])
def test_a_truncated_or_garbled_elf_command_is_no_crash(tmp_path: Path, head: bytes) -> None:
    """COMMAND's first bytes are parsed for its loader: a truncated file raised IndexError in
    the probe child, reported as 'could not enter the jail: index out of range; check
    --chroot'."""
    binary = tmp_path / "daemon"
    binary.write_bytes(head)
    libs, note = libfind.for_command(str(binary))
    assert libs == [] and note


def test_two_libraries_of_one_daemon_are_two_libraries() -> None:
    """doctor --pid on a daemon with libcrypto and GnuTLS: both are loaded through
    /proc/self/fd/N, and the fd closed after the first made the second the same name, which
    the dynamic loader answers with the library it already has: GnuTLS was 'libcrypto'."""
    import subprocess
    import sys

    code = (
        "import ctypes, sys\n"
        "for name in ('libcrypto.so.3', 'libgnutls.so.30'):\n"
        "    ctypes.CDLL('/usr/lib/x86_64-linux-gnu/' + name)\n"
        "print(flush=True); sys.stdin.read()\n"
    )
    daemon = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert daemon.stdout is not None
        daemon.stdout.readline()
        libs, _ = libfind.for_pid(daemon.pid)
        by_family = {lib.family: lib for lib in libs}
        first = libfind.load(by_family["OpenSSL"])
        second = libfind.load(by_family["GnuTLS"])
        assert hasattr(first, "OpenSSL_version") and hasattr(second, "gnutls_check_version")
    finally:
        daemon.kill()
        daemon.wait()


_SUBREAPER = """\
import ctypes, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, as handover does
sys.path[0] = {root!r}
from jailshim.supervisor import main
sys.exit(main(sys.argv[1:]))
"""

_TREE = """\
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(sys.argv[1], "w") as f:
            f.write(os.readlink("/proc/self"))  # its PID as /proc (and the test) number it
        time.sleep(30)
    os._exit(0)
while not os.path.getsize(sys.argv[1]):
    time.sleep(0.01)
"""


@pytest.mark.parametrize("shell", ['exec "$@"', '"$@"'], ids=["pid1", "subreaper"])
def test_stop_sequence_with_a_proc_of_another_pid_namespace(tmp_path: Path, shell: str) -> None:
    """`unshare --pid --fork` without --mount-proc: /proc numbers processes as the parent
    namespace does, getpid() as the new one. The supervisor walked /proc/GETPID (another
    process) and pinned /proc's numbers with pidfd_open (its own numbering): it found no
    descendant, never sent TERM or KILL, and waited for the grandchild to end by itself."""
    import subprocess
    import sys
    import time

    root = str(Path(__file__).resolve().parent.parent)
    out = tmp_path / "grandchild"
    out.write_text("")
    argv = ["unshare", "--pid", "--fork", "sh", "-c", f"sleep 0.01; {shell}", "sh"]
    argv += [sys.executable, "-S", "-E", "-c", _SUBREAPER.format(root=root), "--grace", "0.3"]
    argv += ["--", sys.executable, "-c", _TREE, str(out)]
    began = time.monotonic()
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - began
        assert proc.returncode == 0, stderr
        # before the grandchild's own 30 s sleep ended: the bug waited for that (a fixed 5 s
        # stood for it, and a slow start on a loaded machine could pass it)
        assert took < 30, stderr
        assert '"killed_count": 1' in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if out.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(out.read_text()), 9)
