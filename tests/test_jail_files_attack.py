"""Jail files attacked: a daemon's user who owns the jail (and its etc/), host files that are
not files, forged records, names swapped while prepare runs. What held is listed in the
attack report (docs/ARCHITECTURE.md, "Jail files"); every test here broke something once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.handshake import FIFO_OPEN, kernel_wait, wait_until
from tests.support import NOBODY, mounts_below, run, snapshot

_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_NO_ID = 0xFFFFFFFF


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """The kernel's xattr form of a POSIX ACL (version 2, then tag/perm/id per entry)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


# A default ACL the daemon's user can set on its own directory: every file made below it would
# be readable by that user (the mask follows the new file's group bits).
_READ_FOR_NOBODY = _acl(
    (_ACL_USER_OBJ, 7, _NO_ID),
    (_ACL_USER, 7, NOBODY),
    (_ACL_GROUP_OBJ, 5, _NO_ID),
    (_ACL_MASK, 7, _NO_ID),
    (_ACL_OTHER, 5, _NO_ID),
)


def _as_nobody_can_read(path: Path) -> bool:
    proc = subprocess.run(
        ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", "cat", path],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def _has_xattr(path: Path, name: str) -> bool:
    return name in os.listxattr(path, follow_symlinks=False)


def _owned_by_nobody(*dirs: Path) -> None:
    for d in dirs:
        d.mkdir(exist_ok=True)
        os.chown(d, NOBODY, NOBODY)


def _nobodys_in_roots(inside: Path) -> None:
    """``inside`` owned by NOBODY, below root's own directories: the user's directory in one
    of the user's could be moved out of the jail, and is refused (test_attack_outside.py)."""
    inside.parent.mkdir(parents=True, exist_ok=True)
    _owned_by_nobody(inside)


def test_a_copy_of_a_secret_never_becomes_readable_by_the_daemons_user(
    jail: Path, area: Path
) -> None:
    """The daemon's user owns the jail and the directory the copy goes in: a setgid bit there
    would give the copy that user's group, a default ACL would give that user a read. The
    host's file is 0640 root:root: the copy must not be readable by that user either."""
    secret = area / "keys" / "secret.pem"
    secret.parent.mkdir()
    secret.write_text("-----BEGIN PRIVATE KEY-----\n")
    secret.chmod(0o640)
    os.chown(jail, NOBODY, NOBODY)
    inside = jail / str(secret.parent).lstrip("/")
    _nobodys_in_roots(inside)
    inside.chmod(0o2755)  # setgid: new entries take the directory's group (nobody's)
    os.setxattr(inside.parent, "system.posix_acl_default", _READ_FOR_NOBODY)  # for made dirs
    os.setxattr(inside, "system.posix_acl_default", _READ_FOR_NOBODY)
    (inside.parent / "sub").mkdir()  # sanity: the ACL is inherited on this filesystem
    assert _has_xattr(inside.parent / "sub", "system.posix_acl_access")
    (inside.parent / "sub").rmdir()
    other = area / "other" / "conf"  # its directory is made by jailshim below the ACL'd one
    other.parent.mkdir()
    other.write_text("setting\n")
    other.chmod(0o640)
    os.rename(area / "other", area / "keys" / "other")
    other = area / "keys" / "other" / "conf"

    args = ("--chroot", str(jail), "--user", "nobody", "--no-verify")
    result = run("prepare", *args, "--file", str(secret), "--file", str(other))
    assert result.code == 0, result.stderr
    made_dir = inside / "other"
    for copy in (inside / "secret.pem", made_dir / "conf"):
        st = copy.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o640), copy
        assert not _has_xattr(copy, "system.posix_acl_access"), copy
        assert not _as_nobody_can_read(copy), copy
    st = made_dir.stat()  # root's own directory, passing nothing on
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    assert not _has_xattr(made_dir, "system.posix_acl_default")
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert not (inside / "secret.pem").exists() and not made_dir.exists()


def test_a_setgid_jail_root_of_the_daemons_user_is_prepared(jail: Path, area: Path) -> None:
    """A jail root 2750 nobody:nogroup (a shared directory): dev/ and etc/ made in it inherit
    the setgid bit; that is not someone swapping jailshim's directory."""
    host = area / "hosts"
    host.write_text("192.0.2.1 one.test\n")
    os.chown(jail, NOBODY, NOBODY)
    jail.chmod(0o2750)
    before = snapshot(jail)
    args = ("--chroot", str(jail), "--user", "nobody", "--no-verify", "--file", str(host))
    result = run("prepare", *args)
    assert result.code == 0, result.stderr
    for made in ("dev", "tmp"):
        st = (jail / made).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755), made
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert snapshot(jail) == before


def test_a_host_file_that_is_no_regular_file_is_never_opened(jail: Path, area: Path) -> None:
    """Opening acts for some files (a watchdog device arms the watchdog, a FIFO wakes its
    writer), reading for some "regular" ones (/proc/kmsg): the host side is looked at through
    O_PATH and read only when it is a regular file outside /proc, /sys and /dev (where --file
    itself may not point). A writer blocked opening the FIFO stays blocked."""
    fifo = area / "fifo"
    os.mkfifo(fifo)
    link = area / "null"
    link.symlink_to("/dev/null")  # a symlink on the host is followed, to a device here
    kmsg = area / "kmsg"
    kmsg.symlink_to("/proc/kmsg")  # a "regular file" whose read consumes syslog's messages
    writer = subprocess.Popen(["sh", "-c", f"exec 3>{fifo}; echo woke"], stdout=subprocess.PIPE)
    try:
        # The writer is asleep in the FIFO's open before prepare starts (an open that came
        # before the writer's would wake nothing), and right after prepare it still is: any
        # open of the reading end by prepare has made it runnable at once. (It was "not
        # exited 0.2 s later", which a loaded machine turned into a pass without looking.)
        wait_until(lambda: kernel_wait(writer.pid) == FIFO_OPEN, "the writer to block on the FIFO")
        args = ("prepare", "--chroot", str(jail), "--no-verify")
        result = run(*args, "--file", str(fifo), "--file", str(link), "--file", str(kmsg))
        assert kernel_wait(writer.pid) == FIFO_OPEN, "prepare opened the FIFO: its writer woke"
        assert result.code == 0, result.stderr
        warned = {e["path"]: e["detail"] for e in result.named("jail_file")}
        assert "not a regular file" in warned[str(fifo)]
        assert "not a regular file" in warned[str(link)]
        assert "under /proc" in warned[str(kmsg)]
    finally:
        writer.kill()  # by PID: the writer this test started
        writer.wait()
    assert run("teardown", "--chroot", str(jail)).code == 0


def _same_inode_again(path: Path, content: str) -> None:
    """The state after the daemon's user removed ``path`` and wrote its own file there, which
    got the freed inode number (ext4 hands it out again at once, when no other file is made
    meanwhile): that number, the user's file. Made here on the very inode, so the test does not
    depend on the allocator and on what other processes create meanwhile."""
    path.write_text(content)
    os.chown(path, NOBODY, NOBODY)


def test_a_file_of_the_daemons_user_on_a_reused_inode_is_never_deleted(
    jail: Path, area: Path
) -> None:
    """jailshim's copy is removed by the daemon's user, who writes its own file at the name
    and gets the same inode number: that file is not jailshim's copy (not root's), so a
    refresh moves it aside and teardown gives it back, never deletes it."""
    host = area / "hosts"
    host.write_text("192.0.2.1 one.test\n")
    os.chown(jail, NOBODY, NOBODY)
    inside = jail / str(host.parent).lstrip("/")
    _nobodys_in_roots(inside)
    args = ("prepare", "--chroot", str(jail), "--user", "nobody", "--no-verify")
    assert run(*args, "--file", str(host)).code == 0
    copy = inside / "hosts"
    _same_inode_again(copy, "192.0.2.9 mine.test\n")
    before = snapshot(inside)

    again = run(*args, "--file", str(host))
    assert again.code == 0, again.stderr
    assert [e["outcome"] for e in again.named("jail_file")] == ["copied"], again.stderr
    assert copy.read_text() == host.read_text()
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert copy.read_text() == "192.0.2.9 mine.test\n"
    assert snapshot(inside) == before

    # The same without a prepare in between: teardown alone leaves the user's file.
    assert run(*args, "--file", str(host)).code == 0  # displaces it, copies
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert run(*args, "--file", str(host)).code == 0
    _same_inode_again(copy, "192.0.2.9 mine.test\n")
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert copy.read_text() == "192.0.2.9 mine.test\n"


def test_a_mount_moved_to_a_bound_files_name_is_never_unmounted(jail: Path, area: Path) -> None:
    """--file-mode bind left a bind at the file's name; the host then renamed a new file into
    place (stale bind). The daemon's user, who owns the directories, moves that directory away
    (the bind goes with it) and moves in its place a directory holding the operator's own
    mount at the same name: neither the stale-bind release nor teardown may unmount that."""
    host = area / "hosts"
    host.write_text("192.0.2.1 one.test\n")
    os.chown(jail, NOBODY, NOBODY)
    inside = jail / str(area).lstrip("/")  # root's (jailshim makes it), in the user's own
    _nobodys_in_roots(inside.parent)
    operator = jail / "srv" / "conf"
    _owned_by_nobody(operator.parent, operator)
    (operator / "hosts").write_text("")
    (area / "operators").write_text("the operator's mount\n")
    subprocess.run(
        ["mount", "--bind", str(area / "operators"), str(operator / "hosts")], check=True
    )

    args = ("prepare", "--chroot", str(jail), "--user", "nobody", "--no-verify")
    bound = run(*args, "--file", str(host), "--file-mode", "bind")
    assert bound.code == 0, bound.stderr
    (area / "hosts.new").write_text("192.0.2.2 two.test\n")
    (area / "hosts.new").rename(host)  # the host's file replaced: the jail's bind is stale
    inside.rename(inside.with_name("moved"))  # as the daemon's user could: the bind goes along
    operator.rename(inside)
    assert (inside / "hosts").read_text() == "the operator's mount\n"

    again = run(*args, "--file", str(host), "--file-mode", "bind")
    assert (inside / "hosts").read_text() == "the operator's mount\n", again.stderr
    assert again.code == 78, again.stderr  # a mount point jailshim did not make
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert (inside / "hosts").read_text() == "the operator's mount\n"


HOST_FILES = ("/etc/hosts", "/etc/services")


def test_etc_swapped_for_a_symlink_out_while_prepare_runs(jail: Path, outside: Path) -> None:
    """The daemon's user owns the jail and its etc/ and swaps etc/ for a symlink to a directory
    outside, back and forth, while prepares (copy and bind) and teardowns run: nothing outside
    changes, every run ends in one sentence, and once it stops one teardown gives back the jail
    as it was, with no mount left."""
    os.chown(jail, NOBODY, NOBODY)
    etc = jail / "etc"
    _owned_by_nobody(etc)
    (etc / "keep").write_text("the jail's own\n")
    (jail / "dev").mkdir()
    before, kept = snapshot(jail), snapshot(outside)
    stop = threading.Event()

    def swap() -> None:
        aside, link = jail / "etc.real", jail / "etc.link"
        steps = (
            lambda: link.symlink_to(outside),
            lambda: etc.rename(aside),
            lambda: link.rename(etc),
            lambda: time.sleep(0.0005),
            lambda: etc.rename(link),
            lambda: aside.rename(etc),
            link.unlink,
            lambda: time.sleep(0.002),  # mostly a real directory: prepares get far
        )
        while not stop.is_set():
            for step in steps:
                with contextlib.suppress(OSError):
                    step()

    swapper = threading.Thread(target=swap)
    swapper.start()
    codes: list[int] = []
    odd: list[str] = []
    try:
        for i in range(16):
            mode = ("copy", "bind")[i % 2]
            args = ("--chroot", str(jail), "--user", "nobody", "--no-verify")
            files = ("--file", HOST_FILES[0], "--file", HOST_FILES[1], "--file-mode", mode)
            for result in (run("prepare", *args, *files), run("teardown", "--chroot", str(jail))):
                codes.append(result.code)
                odd += [] if result.code in (0, 78) else [result.stderr]
    finally:
        stop.set()
        swapper.join()
    for name in ("etc", "etc.link"):  # the swap's symlinks go; then etc/ is put back
        if (jail / name).is_symlink():
            (jail / name).unlink()
    assert run("teardown", "--chroot", str(jail)).code == 0  # an etc/ jailshim made goes
    if (jail / "etc.real").exists():
        (jail / "etc.real").rename(etc)
    assert set(codes) <= {0, 78}, odd
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert snapshot(outside) == kept
    assert mounts_below(jail) == []
    # What the user's renames hid from a rollback or teardown may stay (its directory was
    # gone, so its record was forgotten): only root's inert files, copies of the two files or
    # empty placeholders (maybe moved aside by a later prepare), nothing else.
    after = snapshot(jail)
    left = {k: v for k, v in after.items() if before.get(k) != v}
    copies = {hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in HOST_FILES}
    copies.add(hashlib.sha256(b"").hexdigest())
    assert all(v[2] == 0 and v[4] in copies for v in left.values()), left
    assert all(before[k] == after.get(k) for k in before), after


def test_a_bind_moved_with_its_directory_is_kept_until_it_is_back(jail: Path, area: Path) -> None:
    """The daemon's user renames its etc/ (the bind of --file-mode bind goes along) and makes
    a new one: teardown cannot reach the bind, and must not forget it (a mount no teardown
    would ever take back); once etc/ is back, teardown unmounts it."""
    host = area / "hosts"
    host.write_text("192.0.2.1 one.test\n")
    os.chown(jail, NOBODY, NOBODY)
    inside = jail / str(area).lstrip("/")  # root's (jailshim makes it), in the user's own
    _nobodys_in_roots(inside.parent)
    args = ("--chroot", str(jail), "--user", "nobody", "--no-verify", "--file-mode", "bind")
    assert run("prepare", *args, "--file", str(host)).code == 0
    moved = inside.with_name("moved")
    inside.rename(moved)
    inside.mkdir()

    kept = run("teardown", "--chroot", str(jail))
    assert kept.code == 0, kept.stderr
    [unbind] = [e for e in kept.named("teardown") if e["step"].startswith("unbind")]
    assert unbind["level"] == "warning" and str(moved / "hosts") in unbind["outcome"]
    assert mounts_below(jail) == [str(moved / "hosts")]
    inside.rmdir()
    moved.rename(inside)
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert mounts_below(jail) == []
    assert not inside.exists()  # jailshim's own, kept with the bind's record until now


def test_planted_names_are_never_written_through(jail: Path, outside: Path, area: Path) -> None:
    """Held (no engine change): a hard link to a file outside at the copy's name is moved
    aside and given back, never written; a symlink, a FIFO or a hard link at the temporary name
    is in the way (78), never opened, followed or removed; a symlink at the aside name is
    skipped. Nothing outside changes."""
    host = area / "hosts"
    host.write_text("192.0.2.1 one.test\n")
    etc = jail / str(area).lstrip("/")
    etc.mkdir(parents=True)
    args = ("prepare", "--chroot", str(jail), "--no-verify", "--file", str(host))
    secret = outside / "secret"
    kept = snapshot(outside)
    for shape in ("symlink", "fifo", "hardlink"):
        planted = etc / ".jailshim-new-hosts"
        if shape == "symlink":
            planted.symlink_to(secret)
        elif shape == "fifo":
            os.mkfifo(planted)
        else:
            os.link(secret, planted)
        before = snapshot(jail)
        refused = run(*args)
        assert refused.code == 78, refused.stderr
        assert ".jailshim-new-hosts is in the way" in refused.error
        assert snapshot(jail) == before
        planted.unlink()
    os.link(secret, etc / "hosts")  # the name itself: the user's link to a file outside
    (etc / ".jailshim-displaced-hosts").symlink_to(secret)
    before = snapshot(jail)
    placed = run(*args)
    assert placed.code == 0, placed.stderr
    assert (etc / "hosts").read_text() == host.read_text()
    assert (etc / ".jailshim-displaced-hosts.1").stat().st_ino == secret.stat().st_ino
    assert run("teardown", "--chroot", str(jail)).code == 0
    assert snapshot(jail) == before
    assert snapshot(outside) == kept


def _host_tree(area: Path, shape: str) -> tuple[Path, bytes]:
    """A host file named by --file, reached the way ``shape`` says; its content."""
    content = b"wanted\n"
    mine = area / "mine"  # a directory the daemon's user owns
    mine.mkdir(mode=0o755)
    os.chown(mine, NOBODY, NOBODY)
    roots = area / "roots"  # root's own
    roots.mkdir(mode=0o755)
    if shape in ("own file in own directory", "root's file in the user's directory"):
        named = mine / "app.conf"
        named.write_bytes(content)
        if shape == "own file in own directory":
            os.chown(named, NOBODY, NOBODY)
    elif shape in ("root's link into a service user's directory", "the user's link in root's"):
        stub = mine / "stub-resolv.conf"  # as systemd-resolve keeps /run/systemd/resolve
        stub.write_bytes(content)
        os.chown(stub, NOBODY, NOBODY)
        named = roots / "resolv.conf"
        named.symlink_to("../mine/stub-resolv.conf")
        if shape == "the user's link in root's":
            os.chown(named, NOBODY, NOBODY, follow_symlinks=False)
    elif shape == "root's link in the user's directory":
        target = roots / "real.conf"
        target.write_bytes(content)
        named = mine / "app.conf"
        named.symlink_to(target)
    elif shape == "a directory its group can write":
        os.chown(roots, 0, NOBODY)
        roots.chmod(0o775)
        named = roots / "app.conf"
        named.write_bytes(content)
    else:  # a sticky directory like /tmp: only root's entries
        sticky = area / "sticky"
        sticky.mkdir()
        sticky.chmod(0o1777)
        named = sticky / "app.conf"
        named.write_bytes(content)
        if shape == "the user's file in a sticky directory":
            os.chown(named, NOBODY, NOBODY)
        if shape == "root's file in a user's sticky directory":
            # the sticky bit protects an entry from everyone but its owner AND the
            # directory's owner: nobody may rename root's file away and put a link there
            os.chown(sticky, NOBODY, NOBODY)
    return named, content


@pytest.mark.parametrize(
    "shape",
    [
        "own file in own directory",
        "root's link into a service user's directory",
        "root's file in a sticky directory",
    ],
)
def test_a_host_file_its_directories_keep_is_taken(jail: Path, area: Path, shape: str) -> None:
    """review1 R1's fix refuses names another user could have pointed elsewhere, and only
    those: the daemon's user's own file in its own directory (its app.conf), root's symlink
    into a service user's directory (resolv.conf into systemd-resolve's), root's file in /tmp
    are still copied."""
    named, content = _host_tree(area, shape)
    result = run("prepare", "--chroot", str(jail), "--no-verify", "--file", str(named))
    try:
        assert result.code == 0, result.error
        assert (jail / str(named).lstrip("/")).read_bytes() == content
    finally:
        assert run("teardown", "--chroot", str(jail)).code == 0


@pytest.mark.parametrize(
    ("shape", "blamed"),
    [
        ("the user's link in root's", "nobody"),
        ("root's link in the user's directory", "nobody"),
        ("root's file in the user's directory", "nobody"),
        ("a directory its group can write", "other than its owner"),
        ("the user's file in a sticky directory", "nobody"),
        ("root's file in a user's sticky directory", "other than its owner"),
    ],
)
def test_a_host_file_another_user_could_point_elsewhere_is_refused(
    jail: Path, area: Path, shape: str, blamed: str
) -> None:
    """review1 R1: a name on the host path that a user other than root could have made lead
    to a file that user cannot read (a symlink, a hard link's name, an entry moved in) is
    refused in one sentence naming it and its owner (78), before the jail is touched."""
    named, _ = _host_tree(area, shape)
    before = snapshot(jail)
    result = run("prepare", "--chroot", str(jail), "--no-verify", "--file", str(named))
    try:
        assert result.code == 78, result.stderr
        assert str(named) in result.error and blamed in result.error, result.error
        assert "run again" in result.error and "Traceback" not in result.stderr
        assert snapshot(jail) == before
    finally:
        run("teardown", "--chroot", str(jail))
