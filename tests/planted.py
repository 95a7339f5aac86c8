"""A planted "libcrypto.so.3" and a daemon stand-in that loads it: what test_attack_doctor.py
and test_documented_claims.py point doctor at."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import Result, compile_c

# A "libcrypto.so.3" whose constructor records who ran it, unless the daemon itself loads it
# (EVIL_QUIET): any line in MARKER is doctor running the library's code.
EVIL = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((used)) const char version[] = "OpenSSL 3.0.99 1 Jan 2026";
__attribute__((constructor)) static void planted(void) {
    if (getenv("EVIL_QUIET") != NULL) return;
    char ns[64] = "";
    ssize_t n = readlink("/proc/self/ns/mnt", ns, sizeof ns - 1);
    if (n > 0) ns[n] = 0;
    FILE *f = fopen(MARKER, "a");
    if (f) { fprintf(f, "uid=%d %s\n", (int)getuid(), ns); fclose(f); }
}
"""

# The daemon: loads LIB (as haproxy loads libcrypto), calls itself haproxy, chroots, drops to
# nobody, says so, and sleeps. With RENAME, its user then renames the mapped library through a
# directory fd kept from before chroot (the directory is the user's).
DAEMON = """
import ctypes, os, sys, time
lib, jail, rename = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
with open("/proc/self/comm", "w") as f:
    f.write("haproxy")
ctypes.CDLL(lib)
dfd = os.open(os.path.dirname(lib), os.O_RDONLY | os.O_DIRECTORY)
os.chroot(jail)
os.chdir("/")
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
if rename:
    os.rename(os.path.basename(lib), "data.bin", src_dir_fd=dfd, dst_dir_fd=dfd)
print("jailed", flush=True)
time.sleep(120)
"""


def evil_libcrypto(area: Path, marker: Path) -> Path:
    """EVIL built as area/evil.so (soname libcrypto.so.3), writing to ``marker``."""
    return compile_c(
        area,
        "evil.so",
        EVIL,
        "-shared",
        "-fPIC",
        "-Wl,-soname,libcrypto.so.3",
        f'-DMARKER="{marker}"',
    )


def jailed_daemon(
    procs: list[subprocess.Popen[bytes]],
    argv_prefix: list[str],
    lib: str,
    jail: Path,
    *,
    rename: bool = False,
) -> int:
    """DAEMON loading ``lib`` in ``jail`` (under ``argv_prefix``), appended to ``procs``; its PID
    once it is jailed."""
    proc = subprocess.Popen(
        [*argv_prefix, sys.executable, "-c", DAEMON, lib, str(jail), "1" if rename else "0"],
        stdout=subprocess.PIPE,
        env={**os.environ, "EVIL_QUIET": "1"},
    )
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == b"jailed\n"
    return proc.pid


def check_rows(result: Result) -> dict[str, dict[str, Any]]:
    """doctor's check events by check name."""
    return {str(e["check"]): e for e in result.events if e["event"] == "check"}


def reseed_rows(result: Result) -> dict[str, dict[str, Any]]:
    """The rows of the libraries' reseed checks."""
    return {c: e for c, e in check_rows(result).items() if c.endswith(" reseed")}
