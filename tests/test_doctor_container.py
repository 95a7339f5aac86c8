"""`jailshim doctor --pid HOSTPID` on haproxy inside a real (rootful podman) container.

README ("doctor"): doctor reads /proc/PID without entering anything and probes "chrooted into
/proc/PID/root — the daemon's root in its own mount namespace, so a daemon in a container is
seen as it sees itself"; a library the daemon maps from another mount namespace is never loaded
(a rootful container's root is uid 0 too: its libcrypto's constructor would run as host root),
so that row is "cannot probe … another mount namespace" and the verdict "cannot tell" (75).
test_attack_doctor.py stands a container in with `unshare --mount`; this is the image the
container suite builds (its session fixtures, imported: one build per run), run by podman.

The jail is a path that exists only in the container (a tmpfs at /srv/dot-jail, named to
haproxy by JAIL): the host has nothing there, so a jail doctor names from its own view of the
paths would be wrong or missing.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support import run
from tests.test_containers import (  # noqa: F401  (session fixtures, shared with that module)
    Podman,
    Shared,
    _container,
    image,
    podman,
    shared,
)

pytestmark = pytest.mark.slow

JAIL = "/srv/dot-jail"  # exists only inside the container


def _host_pid(pod: Podman, name: str) -> int:
    """The container's PID 1 (haproxy's master: jailshim exec'd into it) as the host numbers it."""
    out = pod("inspect", "--format", "{{.State.Pid}}", name, timeout=60).stdout
    return int(out.decode().strip())


def _chrooted_worker(master: int, timeout: float = 30) -> int:
    """haproxy's worker below the master, once it runs chrooted in the jail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{master}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    if Path(f"/proc/{child}/root").readlink() == Path(JAIL):
                        return int(child)
                except OSError:
                    continue
        time.sleep(0.1)
    raise AssertionError(f"no chrooted worker below haproxy's master {master}")


def _mapped_libcrypto(pid: int, root_of: int) -> Path:
    """The libcrypto.so.3 ``pid`` maps, through the root of ``root_of`` (the master, not
    chrooted, in the same mount namespace): the container's own file."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split(maxsplit=5)[5:]
        if path and Path(path[0]).name == "libcrypto.so.3":
            return Path(f"/proc/{root_of}/root") / path[0].lstrip("/")
    raise AssertionError(f"PID {pid} maps no libcrypto.so.3")


def _openssl_version(data: bytes) -> str:
    """The version string a libcrypto carries ("OpenSSL 3.0.19 27 Jan 2026" -> "3.0.19")."""
    found = re.search(rb"OpenSSL (\d+\.\d+\.\d+[a-z]*) \d+ \w+ \d{4}", data)
    assert found, "no OpenSSL version string in the container's libcrypto"
    return found[1].decode()


def test_doctor_on_haproxy_in_a_container_sees_the_containers_jail_and_library(
    podman: Podman,  # noqa: F811
    image: str,  # noqa: F811
    shared: Shared,  # noqa: F811
) -> None:
    """The master (not chrooted) stands for its worker; the worker's jail is the container's
    /srv/dot-jail, its library the container's libcrypto.so.3 (version read from the container's
    own file), which doctor does not load: "cannot probe … another mount namespace". The jail's
    nodes are checked in the container's jail. podman's seccomp profile gives haproxy a filter:
    without --read-filter the verdict is "cannot tell" (75); with it, the daemon's own facts
    (OpenSSL 3 reads getrandom(), which its filter allows) make it "safe" (0) — still without
    loading the container's library."""
    assert not Path(JAIL).exists(), f"{JAIL} exists on the host: the test could not tell views"
    # a tmpfs of the container's own (podman's default is nodev: mknod'd nodes would not open)
    extra = ["--cap-add=MKNOD", "-e", f"JAIL={JAIL}", "--tmpfs", f"{JAIL}:rw,dev,mode=0755"]
    with _container(podman, image, shared, *extra) as name:
        master = _host_pid(podman, name)
        worker = _chrooted_worker(master)
        version = _openssl_version(_mapped_libcrypto(worker, master).read_bytes())
        library = f"libcrypto.so.3 (OpenSSL {version})"

        for flags, code, verdict in (
            ((), 75, "cannot tell: what getrandom() does under the daemon's seccomp filter"),
            (("--read-filter",), 0, "safe: OpenSSL 3 reads getrandom(), which works"),
        ):
            result = run("doctor", "--pid", str(master), *flags)
            logs = podman("logs", name, check=False)
            context = result.stderr + (logs.stdout + logs.stderr).decode(errors="replace")

            (workers,) = result.named("doctor.workers")
            assert workers["pid"] == master and workers["workers"] == [worker], context
            (daemon,) = result.named("doctor.daemon")
            assert daemon["pid"] == worker and daemon["name"] == "haproxy", daemon
            assert daemon["root"] == JAIL, daemon  # the container's path, absent on the host
            assert daemon["user"] == "nobody", daemon
            assert daemon["libraries"] == [library], daemon

            checks = {str(e["check"]): e for e in result.events if e["event"] == "check"}
            for node in ("dev/urandom", "dev/random"):  # made by jailshim in the container
                assert checks[node]["level"] == "info", checks[node]
                assert checks[node]["detail"].startswith("character device"), checks[node]
            row = checks[f"OpenSSL {version} reseed"]
            assert row["level"] == "warning", row
            assert row["detail"].startswith(f"cannot probe {library}"), row
            assert "another mount namespace" in row["detail"], row

            (said,) = result.named("doctor.verdict")
            assert str(said["verdict"]).startswith(verdict), said
            assert result.code == code, context
