"""Build a run's Spec from its options record and, for `run`, the daemon's plan (what its own
configuration says): the flags win, the plan fills what they left unset.

Every value is checked here with the name of where it came from (its flag, its JAILSHIM_
variable, or the daemon's config), so one sentence can say which one is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jailshim.errors import ConfigError, UsageError, said

if TYPE_CHECKING:
    from jailshim.daemons import DaemonPlan
    from jailshim.devices import Device
    from jailshim.options import JailOptions, LookInOptions, TeardownOptions
    from jailshim.spec import Identity, Spec, WaitTarget

__all__ = [
    "build_spec",
    "chroot_of",
    "crypto_libs_of",
    "devices_of",
    "identity_of",
    "short",
    "wait_targets_of",
]

PATH_MAX = 4096  # the kernel's limit on a path, the terminating NUL included
NAME_MAX = 255  # and on one name in it
_CONFIG = "the daemon's config ({})"  # where a value the daemon's config gave came from


def short(text: str, keep: int = 60) -> str:
    """``text`` cut in the middle when longer than ``keep`` characters (for sentences)."""
    if len(text) <= keep:
        return text
    return f"{text[: keep // 2]}…{text[-keep // 2 :]}"


def checked_path(path: str, source: str, *, config: bool = False) -> str:
    """``path`` if the kernel can take it; else one sentence naming where it came from."""
    if not path.strip():
        raise UsageError(f"{source} is empty; give the jail directory, such as /var/lib/haproxy.")
    raw = os.fsencode(path)
    longest = max(len(name) for name in raw.split(b"/"))
    if len(raw) < PATH_MAX and longest <= NAME_MAX:
        return path
    error = ConfigError if config else UsageError
    raise error(
        f"{said(source, short(path))} is too long for the kernel ({len(raw)} bytes, the longest "
        f"name {longest}; the limits are {PATH_MAX - 1} and {NAME_MAX}): give a shorter path."
    )


def devices_of(options: LookInOptions, default: Sequence[str]) -> tuple[Device, ...]:
    """--device names added to ``default``; with --only-devices, exactly the names."""
    from jailshim.devices import select

    names = list(options.device)
    return select(names if options.only_devices else [*default, *names], options.origin("device"))


def identity_of(options: LookInOptions, plan: DaemonPlan | None = None) -> Identity | None:
    """--user/--group resolved on the host; the daemon's config fills unset flags."""
    from jailshim.spec import resolve_identity

    user, group = options.user, options.group
    user_from, group_from = options.origin("user"), options.origin("group")
    if user is None and plan is not None and plan.user is not None:
        user, user_from = plan.user, _CONFIG.format("user")
    if group is None and plan is not None and plan.group is not None:
        group, group_from = plan.group, _CONFIG.format("group")
    return resolve_identity(user, group, user_from=user_from, group_from=group_from)


def chroot_of(
    options: LookInOptions | TeardownOptions,
    command: str,
    plan: DaemonPlan | None = None,
) -> str:
    """The jail: --chroot, else the daemon's config; checked to be a path the kernel takes."""
    if options.chroot is not None:
        return checked_path(options.chroot, options.origin("chroot"))
    if plan is not None and plan.chroot is not None:
        return checked_path(plan.chroot, _CONFIG.format("chroot"), config=True)
    raise UsageError(f"jailshim {command} needs --chroot DIR (or JAILSHIM_CHROOT).")


def build_spec(
    options: JailOptions,
    command: str,
    plan: DaemonPlan | None = None,
    *,
    executable: str = "",
    notify_socket: str = "",
) -> Spec:
    """The Spec for this run of ``command``; ``plan`` (the daemon's config) fills unset flags.
    ``executable``: COMMAND's, whose crypto libraries are probed; ``notify_socket``: the
    $NOTIFY_SOCKET brought into the jail (already among the plan's sockets)."""
    from jailshim.devices import DEFAULT_DEVICES
    from jailshim.files import refuse_reserved
    from jailshim.plan import Strategy
    from jailshim.spec import Spec

    chroot = chroot_of(options, command, plan)
    from_plan = plan.sockets if plan is not None else ()
    if notify_socket:
        from_plan = (*from_plan, notify_socket)
    sockets = tuple(dict.fromkeys([*options.log_socket, *from_plan]))
    targets = wait_targets_of(options, plan.wait_targets if plan is not None else ())
    for path in sockets:
        source = options.origin("log_socket") if path in options.log_socket else "log"
        if not path.startswith("/"):
            raise UsageError(f"{said(source, path)} must be an absolute path, such as /dev/log.")
        checked_path(path, source, config=source == "log")
        refuse_reserved(path, source, config=source == "log")
    return Spec(
        chroot=chroot,
        devices=devices_of(options, [*DEFAULT_DEVICES, *(plan.devices if plan else ())]),
        identity=identity_of(options, plan),
        strategy=Strategy(options.strategy),
        dry_run=options.dry_run,
        allow_writable_jail=options.allow_writable_jail,
        repair=not options.no_repair,
        verify=not options.no_verify,
        timeout=options.timeout,
        sockets=sockets,
        wait_targets=targets,
        ensure_loopback=options.ensure_loopback,
        **_files_of(
            options,
            plan.file_sets if plan is not None else (),
            plan.jail_files if plan is not None else (),
            daemon=os.path.basename(executable) or "the daemon",
            read=plan.files if plan is not None else (),
        ),
        notify_socket=notify_socket,
        crypto_libs=crypto_libs_of(options) or (plan.crypto_libs if plan is not None else ()),
        command=executable,
    )


def _files_of(
    options: JailOptions,
    from_config: Sequence[str] = (),
    paths: Sequence[str] = (),
    *,
    daemon: str = "the daemon",
    read: Sequence[str] = (),
) -> dict[str, Any]:
    """The jail files of this run: --file paths and the --files sets, with the sets and
    files the daemon's adapter needs (union); --file-mode says how they are placed. A file
    the daemon's config names is placed only if everyone may read it on the host."""
    from jailshim.files import FileMode, jail_files, readable_by_all

    private = [p for p in paths if os.path.lexists(p) and not readable_by_all(p)]
    if private:
        raise ConfigError(
            f"{daemon}'s configuration makes it read {', '.join(private)} again inside its "
            "jail, and jailshim copies there only what everyone may read on the host: its copy "
            "is root's with the file's mode, so one some cannot read would become readable in "
            f"the jail, or stay unreadable by {daemon}. Make it readable by others (chmod o+r, "
            "and o+x on its directories), or place it in the jail yourself."
        )

    sets = tuple(dict.fromkeys([*options.files, *from_config]))
    names = tuple(dict.fromkeys(n.strip() for n in options.resolve if n.strip()))
    for name in names:
        if len(name) > 253 or any(c.isspace() or c == "\0" for c in name):
            raise UsageError(
                f"{said(options.origin('resolve'), name)} is not a host name; give one such as "
                "mail.example.org."
            )
    return {
        "files": jail_files(
            options.file,
            sets,
            source=options.origin("file"),
            config_paths=tuple(paths),
            config_source=f"{daemon}'s configuration ({', '.join(read) or 'its command line'})",
        ),
        "file_mode": FileMode(options.file_mode),
        "file_sets": sets,
        "resolve_names": names,
    }


def crypto_libs_of(options: LookInOptions) -> tuple[str, ...]:
    """--crypto-lib paths, each checked to be a file jailshim can load."""
    for path in options.crypto_lib:
        source = options.origin("crypto_lib")
        checked_path(path, source)
        if not os.path.isfile(path):
            raise UsageError(
                f"{said(source, path)} is not a file; give the library's path, such as "
                "/usr/lib/x86_64-linux-gnu/libcrypto.so.3."
            )
    return options.crypto_lib


def wait_targets_of(
    options: JailOptions, from_config: Sequence[WaitTarget] = ()
) -> tuple[WaitTarget, ...]:
    """--wait-addr values, then the daemon's own bind addresses, without repeats."""
    if not options.wait_addr and not from_config:
        return ()
    from jailshim.verify.network import parse_wait_addr

    source = options.origin("wait_addr")
    targets: dict[str, WaitTarget] = {}
    given: list[WaitTarget] = []
    for text in options.wait_addr:
        try:
            given.append(parse_wait_addr(text))
        except UsageError as exc:
            if source == "--wait-addr":
                raise
            # network.py words it for the flag; name the variable the value really came from
            raise UsageError(
                said(source, text) + exc.sentence.removeprefix(f"--wait-addr {text!r}")
            ) from None
    for target in [*given, *from_config]:
        targets.setdefault(target.ip, target)
    return tuple(targets.values())
