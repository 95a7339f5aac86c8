"""Daemon adapters: read what a daemon's own configuration says about its jail.

One module per daemon, each with an ``ADAPTER`` (an :class:`Adapter`). ``jailshim run`` asks
:func:`choose` which adapter, if any, speaks for COMMAND (its basename, or ``--daemon NAME``);
only that module is imported, so a daemon without an adapter imports none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from jailshim.errors import ConfigError, UsageError, said

if TYPE_CHECKING:
    import argparse

    from jailshim.spec import Identity
    from jailshim.verify.network import WaitTarget

__all__ = [
    "ADAPTERS",
    "Adapter",
    "DaemonConfig",
    "PendingCheck",
    "choose",
    "load",
    "refuse_host_directory",
]

# daemon name (COMMAND's basename, or --daemon NAME) -> the module that holds its adapter
ADAPTERS = {
    "haproxy": "jailshim.daemons.haproxy",
    "named": "jailshim.daemons.named",
    "nsd": "jailshim.daemons.nsd",
    "postfix": "jailshim.daemons.postfix",
    "stunnel": "jailshim.daemons.stunnel",
    "unbound": "jailshim.daemons.unbound",
}
# other names the same daemon is installed under (Debian: /usr/bin/stunnel4)
ALIASES = {"stunnel4": "stunnel"}
# a run option that names a daemon's configuration file -> that daemon
_CONFIG_OPTIONS = {"haproxy_config": "haproxy"}


class DaemonConfig(NamedTuple):
    """What a daemon's configuration says about its jail (None: the config does not say)."""

    files: tuple[str, ...]  # what was read: files, or the daemon's tool and its file
    jail: str | None = None
    user: str | None = None  # a name, or "+N" for a number
    group: str | None = None
    log_sockets: tuple[str, ...] = ()  # host sockets the daemon needs at the same path
    targets: tuple[WaitTarget, ...] = ()  # addresses it binds: wait until they are usable
    notes: tuple[str, ...] = ()  # warnings about what was read or passed over
    read: tuple[tuple[str, str], ...] = ()  # more facts read, for the log (name, value)
    notify: bool = False  # it sends READY=1 to $NOTIFY_SOCKET from inside its jail
    file_sets: tuple[str, ...] = ()  # named jail-file sets it needs (files.FILE_SETS keys)
    devices: tuple[str, ...] = ()  # device nodes it needs beyond jailshim's default ones
    # directories its checker creates entries in (postfix check makes queue directories):
    # each is judged as a jail is before the checker runs
    checker_dirs: tuple[str, ...] = ()


class PendingCheck:
    """A daemon's config checker, maybe still running while the jail is prepared (`haproxy -c`
    loads certificates: ~30 ms that need not wait). ``finish`` waits for it and raises its
    rejection; ``cancel`` stops it when the run fails first."""

    def finish(self) -> None:
        """Wait for the verdict; a rejection raises ConfigError."""

    def cancel(self) -> None:
        """Stop the checker (by PID) and reap it."""


class Adapter:
    """One daemon: recognised by ``name``; reads its config; runs its own checker."""

    name = ""
    # The checker changes files (postfix check makes missing queue directories): a --dry-run,
    # which promises to change nothing, skips it and says so.
    check_writes = False

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonConfig:
        """The daemon's config as ``argv`` (argv[0]: the binary whose tools to ask) names it."""
        raise NotImplementedError

    def check_config(self, argv: Sequence[str]) -> None:
        """The daemon's own checker; a rejection raises ConfigError with its words."""

    def start_check(self, argv: Sequence[str]) -> PendingCheck:
        """Start the checker; ``finish()`` on the result gives its verdict. By default it runs
        to the end here; an adapter whose checker is slow starts it in the background."""
        self.check_config(argv)
        return PendingCheck()

    def config_argv(self, command: str, path: str) -> list[str]:
        """The command line that reads configuration file ``path`` (--NAME-config FILE)."""
        return [command, path]

    def identity(self, identity: Identity, config: DaemonConfig, *, group_given: bool) -> Identity:
        """The identity the daemon really runs with, given the one its user and group name."""
        return identity


def load(name: str) -> Adapter:
    """The adapter for daemon ``name`` (a key of ADAPTERS); imports only its module."""
    import importlib

    adapter: Adapter = importlib.import_module(ADAPTERS[name]).ADAPTER
    return adapter


def choose(
    args: argparse.Namespace, argv: Sequence[str], binary: str
) -> tuple[Adapter, list[str]] | None:
    """The adapter for this run and the command line it reads (its argv[0] the binary to ask),
    or None: COMMAND has no adapter and no option names one."""
    from jailshim.cli import origin

    forced: str | None = getattr(args, "daemon", None)
    if forced is not None and forced not in ADAPTERS:
        raise UsageError(
            f"{said(origin(args, 'daemon'), forced)} is not a daemon jailshim has an adapter "
            f"for; give one of {', '.join(sorted(ADAPTERS))}, or leave it out."
        )
    by_option = [(opt, d) for opt, d in _CONFIG_OPTIONS.items() if getattr(args, opt, None)]
    if by_option and forced is not None and forced != by_option[0][1]:
        raise UsageError(
            f"{origin(args, by_option[0][0])} is {by_option[0][1]}'s configuration but "
            f"{origin(args, 'daemon')} says COMMAND is {forced}; give one of them."
        )
    basename = os.path.basename(argv[0])
    basename = ALIASES.get(basename, basename)
    name = forced or (by_option[0][1] if by_option else None)
    if name is None:
        name = basename if basename in ADAPTERS else None
    if name is None:
        return None
    runs_it = name in (forced, basename)  # COMMAND is the daemon itself
    command = binary if runs_it else name
    if by_option:
        option = by_option[0][0]
        path = getattr(args, option)
        _readable(path, origin(args, option), name)
        adapter = load(name)
        return adapter, adapter.config_argv(command, path)
    return load(name), [command, *argv[1:]]


def _readable(path: str, source: str, daemon: str) -> None:
    """A configuration file given by an option (or its variable) can be opened, or one
    sentence that names where it came from (the daemon's reader speaks of its own options)."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY))
    except OSError as exc:
        raise ConfigError(
            f"{said(source, path)} cannot be read ({exc.strerror}); give {daemon}'s "
            "configuration file."
        ) from None


def refuse_host_directory(path: str, tool: str) -> None:
    """``tool`` (a daemon's checker) will act in directory ``path``: refuse it, one sentence and
    78, when it is one of the host's own directories (jail/hostdirs.py), however it is spelled,
    or when a user other than root could change where its path leads (safepath.swappable_path).
    Symlinks are followed, as the tool follows them; a missing directory is nobody's yet."""
    from jailshim.jail.hostdirs import host_directory
    from jailshim.jail.safepath import swappable_path

    # checked where it exists, and where it does not: the tool makes what is missing in the
    # deepest directory that exists, which must be root's to keep (review1 R3)
    swappable = swappable_path(path, f"`{tool}`")
    if swappable:
        raise ConfigError(swappable, chroot=path)
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # missing or not a directory: the tool makes or refuses it, not ours
        return
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        host = host_directory(os.fstat(fd), real)
    finally:
        os.close(fd)
    if host is not None:
        raise ConfigError(
            f"`{tool}` would act in {path}, which is the system directory {host}"
            f"{'' if host == real else f' (reached as {real})'}, the host's own; jailshim runs "
            "no checker there. Give the daemon a directory of its own.",
            chroot=path,
        )


def log_read(logger: Any, adapter: Adapter, config: DaemonConfig) -> None:
    """The run log lines that name what was read from the daemon's config."""
    event = f"{adapter.name}.config"
    for note in config.notes:
        logger.warning(event, note=note)
    logger.info(
        event,
        files=list(config.files),
        chroot=config.jail,
        user=config.user,
        group=config.group,
        log_sockets=list(config.log_sockets),
        **({"devices": list(config.devices)} if config.devices else {}),
        addresses=[t.ip for t in config.targets],  # bound by the daemon: waited for
        # "notify": true read as "systemd is notified" even with no $NOTIFY_SOCKET: say both
        notify_capable=config.notify,  # it sends READY=1 from inside its jail when asked to
        notify_socket=(os.environ.get("NOTIFY_SOCKET") or None) if config.notify else None,
        **dict(config.read),
    )
