"""The pure decision table: survey in, plan out, no syscalls."""

from __future__ import annotations

import errno
import os

import pytest

from jailshim.devices import select
from jailshim.errors import ConfigError
from jailshim.jail.powers import Powers
from jailshim.jail.safepath import Entry, EntryKind
from jailshim.plan import Action, DevDir, Strategy, Survey, decide

ROOT = Powers(can_mknod=True, can_mount=True)
USERNS_MOUNT = Powers(False, True, "device nodes cannot be created inside a user namespace")
NOTHING = Powers(False, False, "no CAP_MKNOD", "no CAP_SYS_ADMIN")
DEVICES = select(["urandom", "null"])
URANDOM_OK = Entry("urandom", EntryKind.CHAR, rdev=os.makedev(1, 9), mode=0o666)
NULL_OK = Entry("null", EntryKind.CHAR, rdev=os.makedev(1, 3), mode=0o666)


def survey(
    powers: Powers = ROOT,
    *,
    exists: bool = True,
    readonly: bool = False,
    nodev: bool = False,
    ours_tmpfs: bool = False,
    urandom: Entry | None = None,
    null: Entry | None = None,
) -> Survey:
    return Survey(
        jail="/j",
        dev=DevDir(exists, readonly, nodev, ours_tmpfs),
        entries={
            "urandom": urandom or Entry("urandom", EntryKind.ABSENT),
            "null": null or Entry("null", EntryKind.ABSENT),
        },
        powers=powers,
    )


def actions(plan_steps: object) -> list[str]:
    return [str(s.action) for s in plan_steps]  # type: ignore[attr-defined]


def test_right_nodes_mean_nothing_to_do() -> None:
    """Both nodes right: no step, whatever the strategy or powers."""
    for strategy in Strategy:
        plan = decide(survey(NOTHING, urandom=URANDOM_OK, null=NULL_OK), DEVICES, strategy)
        assert not plan.changes_anything


def test_root_on_plain_fs_uses_mknod_and_creates_dev() -> None:
    """Root, no dev/: create dev/, mknod each."""
    plan = decide(survey(exists=False), DEVICES)
    assert plan.make_dev_dir and not plan.mount_tmpfs
    assert actions(plan.steps) == ["mknod", "mknod"]


def test_nodev_uses_bind_even_for_root() -> None:
    """nodev: mknod'ed nodes would not open, so bind."""
    assert actions(decide(survey(nodev=True), DEVICES).steps) == ["bind", "bind"]


def test_user_namespace_uses_bind() -> None:
    """In a user namespace with its own mount namespace: bind."""
    assert actions(decide(survey(USERNS_MOUNT), DEVICES).steps) == ["bind", "bind"]


def test_only_the_wrong_device_gets_a_step() -> None:
    """urandom right, null missing: one step."""
    plan = decide(survey(urandom=URANDOM_OK), DEVICES)
    assert actions(plan.steps) == ["nothing", "mknod"]


def test_readonly_mounts_tmpfs_and_binds_everything() -> None:
    """Read-only: tmpfs over dev/, every device bound (the tmpfs hides what was there)."""
    plan = decide(survey(readonly=True, urandom=URANDOM_OK), DEVICES)
    assert plan.mount_tmpfs
    assert actions(plan.steps) == ["bind", "bind"]


def test_readonly_without_dev_dir_is_a_config_error() -> None:
    """Nothing to mount the tmpfs on: 78 telling to create dev/ in the image."""
    with pytest.raises(ConfigError, match="create the empty directory dev/"):
        decide(survey(exists=False, readonly=True), DEVICES)


def test_readonly_with_forced_mknod_is_a_config_error() -> None:
    """--strategy mknod on a read-only jail cannot work."""
    with pytest.raises(ConfigError, match="read-only"):
        decide(survey(readonly=True), DEVICES, Strategy.MKNOD)


def test_our_tmpfs_is_writable_so_no_second_tmpfs() -> None:
    """A tmpfs jailshim mounted earlier is reused, never stacked."""
    plan = decide(survey(readonly=True, ours_tmpfs=True, nodev=True, urandom=URANDOM_OK), DEVICES)
    assert not plan.mount_tmpfs
    assert actions(plan.steps) == ["nothing", "bind"]


def test_no_powers_still_plans_an_attempt_marked_doubtful() -> None:
    """No powers: the plan says what it will try and that the kernel is expected to refuse."""
    plan = decide(survey(NOTHING), DEVICES)
    assert actions(plan.steps) == ["mknod", "mknod"]
    assert all("expected to be refused" in s.reason for s in plan.steps)


def test_wrong_mode_or_unopenable_node_is_not_right() -> None:
    """A 0600 node, or one whose open gave EACCES (nodev), must be replaced."""
    private = Entry("urandom", EntryKind.CHAR, rdev=os.makedev(1, 9), mode=0o600)
    nodev = Entry(
        "urandom", EntryKind.CHAR, rdev=os.makedev(1, 9), mode=0o666, open_errno=errno.EACCES
    )
    for entry in (private, nodev):
        plan = decide(survey(urandom=entry, null=NULL_OK), DEVICES)
        assert plan.steps[0].action is Action.MKNOD and plan.steps[0].displaces


def test_no_repair_refuses_a_wrong_entry() -> None:
    """--no-repair turns a replacement into a ConfigError naming what was found."""
    link = Entry("urandom", EntryKind.SYMLINK, link_target="/etc/shadow")
    with pytest.raises(ConfigError, match="a symlink to /etc/shadow"):
        decide(survey(urandom=link), DEVICES, repair=False)


def test_foreign_mount_point_is_refused() -> None:
    """A wrong entry that is a mount point jailshim did not make is not touched."""
    bound = Entry("urandom", EntryKind.CHAR, rdev=os.makedev(1, 3), mode=0o666, mountpoint=True)
    with pytest.raises(ConfigError, match="mount point"):
        decide(survey(urandom=bound), DEVICES)


def test_render_names_every_device() -> None:
    """The dry-run text has a line per device."""
    text = decide(survey(exists=False), DEVICES).render()
    assert "dev/urandom" in text and "dev/null" in text and "create dev/" in text
