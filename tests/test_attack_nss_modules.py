"""A jail's NSS modules against the entropy probe (issue 25, review rounds 1 and 2): a module
the jail's owner (or another container on its volume) puts in the jail runs when the probe looks
a name up; it must never run as root, find a way out of the chroot, or read a host secret left
in the probe's memory. Each test here failed before its fix."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.multiarch import MULTIARCH
from tests.support import NOBODY, clean_env, jailshim_argv, need, run

_NSS_MODULE = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void ran(void) {
    FILE *f = fopen("/ran-as", "a");
    if (f) { fprintf(f, "uid=%d euid=%d\n", (int)getuid(), (int)geteuid()); fclose(f); }
}
"""


def test_the_probe_never_runs_a_jails_nss_module_as_root(tmp_path: Path) -> None:
    """Another container on the same jail volume (its root writes files owned by uid 0, so
    the jail passes every owner check without a flag) puts etc/nsswitch.conf ("hosts: evil
    files") and lib/MULTIARCH/libnss_evil.so.2 (a constructor) in the jail. `jailshim
    check --chroot JAIL --resolve localhost` without --user: the probe child chroots, keeps
    uid 0 (no identity to drop to), getaddrinfo() reads the jail's nsswitch.conf (NSS was
    never used before chroot, so glibc's "root changed: do not reload" guard has nothing to
    keep) and dlopen()s the module. The constructor ran as uid=0 euid=0 (also in prepare).
    A root in a chroot with every capability is root on the host's mount namespace."""
    need(shutil.which("gcc") is not None, "needs gcc")
    jail = tmp_path / "jail"
    for lib in (f"lib/{MULTIARCH}", f"usr/lib/{MULTIARCH}"):
        (jail / lib).mkdir(parents=True)
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(jail / lib / "libnss_evil.so.2"), "-x", "c", "-"],
            input=_NSS_MODULE,
            text=True,
            check=True,
        )
    (jail / "etc").mkdir()
    (jail / "etc" / "nsswitch.conf").write_text("hosts: evil files\nservices: evil files\n")
    ask = ("--device", "null", "--resolve", "localhost", "--files", "services", "--timeout", "1")
    checked = run("check", "--chroot", str(jail), *ask)
    ran = jail / "ran-as"
    assert not ran.exists(), f"the jail's NSS module ran in jailshim's probe: {ran.read_text()}"
    # the fix skips the lookup as root, and the row says why and how to have it made
    rows = [e for e in checked.named("check") if e["check"] in ("resolve localhost", "services")]
    assert len(rows) == 2, checked.stderr
    for row in rows:
        assert row["ok"] and "not looked up" in row["detail"] and "--user" in row["detail"], row


_NSS_FD_SCOUT = r"""
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
__attribute__((constructor)) static void ran(void) {
    int dirs = 0, open_fds = 0;
    for (int fd = 3; fd < 4096; fd++) {
        struct stat st;
        if (fstat(fd, &st) == 0) { open_fds++; if (S_ISDIR(st.st_mode)) dirs++; }
    }
    FILE *f = fopen("/tmp/scout", "a");
    if (f) { fprintf(f, "uid=%d fds=%d dirs=%d\n", (int)getuid(), open_fds, dirs); fclose(f); }
}
"""


def test_a_jails_nss_module_finds_no_way_out_of_the_chroot(tmp_path: Path) -> None:
    """With --user, the probe looks names up as the daemon's user, so the jail's NSS modules
    run in it (as they will in the daemon). The probe child inherits every fd of its parent,
    and a directory fd would be a way out of the chroot (fchdir): before the lookups the probe
    keeps none of them: the lookups run in a fresh interpreter."""
    need(shutil.which("gcc") is not None, "needs gcc")
    jail = tmp_path / "jail"
    for lib in (f"lib/{MULTIARCH}", f"usr/lib/{MULTIARCH}"):
        (jail / lib).mkdir(parents=True)
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(jail / lib / "libnss_db.so.2"), "-x", "c", "-"],
            input=_NSS_FD_SCOUT,
            text=True,
            check=True,
        )
    (jail / "tmp").mkdir(mode=0o1777)
    (jail / "tmp").chmod(0o1777)
    # Debian's own nsswitch.conf says "services: db files": glibc (which read the host's
    # config before chroot, for the user) loads libnss_db.so.2 lazily, from the jail
    ask = ("--user", "nobody", "--files", "services", "--timeout", "1")
    prepared = run("prepare", "--chroot", str(jail), *ask)
    assert (jail / "tmp" / "scout").exists(), prepared.stderr
    scout = (jail / "tmp" / "scout").read_text()
    assert scout.startswith(f"uid={NOBODY} "), scout
    # none: the lookups run in a fresh interpreter with only its standard streams; in the
    # probe child they had its report pipe and the parent's go pipe (the probe is forked
    # before prepare opens the jail, so no directory fd was among them yet; a later one would)
    assert " fds=0 dirs=0" in scout, f"the jail's NSS module found fds of jailshim's: {scout}"
    assert run("teardown", "--chroot", str(jail)).code == 0


_NSS_HEAP_SCOUT = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <nss.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
/* The jail's libnss_db.so.2 (Debian's "services: db files" loads it lazily, from the jail),
   run by the probe child as the daemon's user: it scans the process's brk heap, which is
   root's jailshim's memory as forked, for the secret's marker. */
__attribute__((constructor)) static void scan(void) {
    char *here = malloc(32), mark[16];
    uintptr_t page = (uintptr_t)here & ~(uintptr_t)4095;
    unsigned char v;
    while (page > 4096 && mincore((void *)(page - 4096), 4096, &v) == 0) page -= 4096;
    char *end = sbrk(0);
    strcpy(mark, "TOPSECRET");
    strcat(mark, "-");
    char *p = memmem((void *)page, (size_t)(end - (char *)page), mark, strlen(mark));
    if (p && p + 40 < end) {
        int fd = open("/leak/found", O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) { write(fd, p, 40); write(fd, "\n", 1); close(fd); }
    }
    free(here);
}
enum nss_status _nss_db_getservbyname_r(const char *n, const char *p, struct servent *r,
                                         char *b, size_t l, int *e) {
    (void)n; (void)p; (void)r; (void)b; (void)l; (void)e;
    return NSS_STATUS_UNAVAIL; /* "files" answers: the check passes */
}
"""


def test_a_jails_nss_module_never_finds_a_host_secret_in_the_probes_memory(
    area: Path,
) -> None:
    """The daemon's user owns lib/ in its jail (jailshim never acts there, so nothing refuses
    it) and puts a libnss_db.so.2 there. With --user the probe looks names up as that user,
    so the module runs, as designed, as the daemon would. But the probe child is a fork of
    root's jailshim: a retry (any transient failure: a --resolve name not known yet, a busy
    wait address) is forked AFTER prepare read the host's --file (root 0600 in a 0700
    directory) into memory, and the module finds its bytes in the heap. Seen: 7 of 8
    attempts wrote the key's bytes into the jail."""
    need(shutil.which("gcc") is not None, "needs gcc")
    nsswitch = Path("/etc/nsswitch.conf").read_text()
    need(
        any(line.split()[:2] == ["services:", "db"] for line in nsswitch.splitlines()),
        "needs Debian's 'services: db files'",
    )
    secret_dir = area / "private"
    secret_dir.mkdir(mode=0o700)
    secret = secret_dir / "key"
    secret.write_text("TOPSECRET-4711-host-private-key-material\n" * 3)
    secret.chmod(0o600)
    jail = area / "jail"
    lib = jail / "lib" / MULTIARCH
    lib.mkdir(parents=True)
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", str(lib / "libnss_db.so.2"), "-x", "c", "-"],
        input=_NSS_HEAP_SCOUT,
        text=True,
        check=True,
    )
    (jail / "leak").mkdir()
    for path in (jail / "lib", lib, lib / "libnss_db.so.2", jail / "leak"):
        os.chown(path, NOBODY, NOBODY)
    # The host's resolv.conf neither decides whether the probe retries nor is asked: a copy of
    # /etc (an overlay in a private mount namespace) names 127.0.0.1 in a network namespace of
    # the run's own, where nothing answers, so every --resolve attempt fails and is retried.
    upper, work = area / "etc-upper", area / "etc-work"
    upper.mkdir()
    work.mkdir()
    private = (
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc && "
        "rm -f /etc/resolv.conf && echo 'nameserver 127.0.0.1' > /etc/resolv.conf && "
        'ip link set lo up && exec "$@"'
    )
    wrap = ["unshare", "--mount", "--propagation", "private", "--net", "sh", "-c", private, "sh"]
    try:
        prepared = subprocess.run(
            wrap
            + jailshim_argv(
                "prepare",
                "--chroot",
                str(jail),
                "--user",
                "nobody",
                "--file",
                str(secret),
                "--files",
                "services",
                "--files",
                "resolver",
                "--resolve",
                "r2.invalid",
                "--timeout",
                "5",
            ),
            env=clean_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        found = jail / "leak" / "found"
        leaked = found.read_text() if found.exists() else ""
        assert "TOPSECRET" not in leaked, f"the daemon's user read the host's key: {leaked!r}"
        # the case the test is about: resolv.conf placed, the name never resolved, retried
        assert '"attempts": 1,' not in prepared.stderr and '"attempts": ' in prepared.stderr
        assert (jail / "etc" / "resolv.conf").read_text() == "nameserver 127.0.0.1\n"
    finally:
        subprocess.run(
            jailshim_argv("teardown", "--chroot", str(jail)),
            env=clean_env(),
            capture_output=True,
            check=False,
        )
