"""Daemon adapters: read what a daemon's own configuration says about its jail.

One module per daemon, each with an ``ADAPTER`` (an :class:`Adapter`). ``jailshim run`` asks
:func:`choose` which adapter, if any, speaks for COMMAND (its basename, or ``--daemon NAME``);
only that module is imported, so a daemon without an adapter imports none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from jailshim.daemon_registry import ADAPTERS, ALIASES, REGISTRY, Registered, config_options
from jailshim.errors import ConfigError, UsageError, said

if TYPE_CHECKING:
    from jailshim.logs import Logger
    from jailshim.options import RunOptions
    from jailshim.spec import Identity, WaitTarget

__all__ = [
    "ADAPTERS",
    "ALIASES",
    "REGISTRY",
    "Adapter",
    "DaemonAdapter",
    "DaemonPlan",
    "PendingCheck",
    "Registered",
    "choose",
    "config_options",
    "ip_wait_targets",
    "load",
    "plan_for",
    "read_file",
    "read_regular",
    "refuse_host_directory",
]


class PendingCheck:
    """A daemon's config checker, maybe still running while the jail is prepared (`haproxy -c`
    loads certificates: ~30 ms that need not wait). ``finish`` waits for it and raises its
    rejection; ``cancel`` stops it when the run fails first."""

    def finish(self) -> None:
        """Wait for the verdict; a rejection raises ConfigError."""

    def cancel(self) -> None:
        """Stop the checker (by PID) and reap it."""


class DaemonPlan(NamedTuple):
    """What a daemon's configuration says about its jail (None: the config does not say), in
    Spec's names, with the daemon's checker for exactly the command line that was read and its
    rule for the identity it really runs with (both bound by :func:`plan_for`)."""

    files: tuple[str, ...]  # what was read: files, or the daemon's tool and its file
    chroot: str | None = None
    user: str | None = None  # a name, or "+N" for a number
    group: str | None = None
    sockets: tuple[str, ...] = ()  # host log sockets the daemon needs at the same path
    wait_targets: tuple[WaitTarget, ...] = ()  # addresses it binds: wait until they are usable
    notes: tuple[str, ...] = ()  # warnings about what was read or passed over
    read: tuple[tuple[str, str], ...] = ()  # more facts read, for the log (name, value)
    notify: bool = False  # it sends READY=1 to $NOTIFY_SOCKET from inside its jail
    file_sets: tuple[str, ...] = ()  # named jail-file sets it needs (files.FILE_SETS keys)
    # host files it opens after its chroot at the same path (pdns_recursor's hint-file, read
    # again inside the jail at every root refresh): placed as --file paths are
    jail_files: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()  # device nodes it needs beyond jailshim's default ones
    # crypto libraries it loads at run time, not linked by COMMAND (lighttpd's mod_openssl
    # brings libcrypto): probed instead of COMMAND's, unless --crypto-lib names others
    crypto_libs: tuple[str, ...] = ()
    # directories its checker creates entries in (postfix check makes queue directories):
    # each is judged as a jail is before the checker runs
    checker_dirs: tuple[str, ...] = ()
    # the daemon's own checker over the command line read (bound by plan_for)
    start_check: Callable[[], PendingCheck] = PendingCheck
    # (identity its user and group name, group given?) -> the identity it really runs with
    identity_rule: Callable[[Identity, bool], Identity] = lambda identity, _group_given: identity


class DaemonAdapter(Protocol):
    """One daemon: recognised by ``name``; reads its config; runs its own checker."""

    @property
    def name(self) -> str: ...

    @property
    def check_writes(self) -> bool:
        """The checker changes files: a --dry-run, which changes nothing, skips it."""
        ...

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        """The daemon's config as ``argv`` (argv[0]: the binary whose tools to ask) names it."""
        ...

    def start_check(self, argv: Sequence[str]) -> PendingCheck:
        """Start the checker; ``finish()`` on the result gives its verdict."""
        ...

    def config_argv(self, command: str, path: str) -> list[str]:
        """The command line that reads configuration file ``path`` (--NAME-config FILE)."""
        ...

    def identity(self, identity: Identity, config: DaemonPlan, *, group_given: bool) -> Identity:
        """The identity the daemon really runs with, given the one its user and group name."""
        ...


class Adapter:
    """The defaults an adapter builds on (it meets DaemonAdapter by overriding ``read``)."""

    name = ""
    # The checker changes files (postfix check makes missing queue directories): a --dry-run,
    # which promises to change nothing, skips it and says so.
    check_writes = False

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
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

    def identity(self, identity: Identity, config: DaemonPlan, *, group_given: bool) -> Identity:
        """The identity the daemon really runs with, given the one its user and group name."""
        return identity


def ip_wait_targets(
    found: Iterable[tuple[str, str, str]],
) -> tuple[tuple[WaitTarget, ...], tuple[str, ...]]:
    """The addresses to wait for from (host, source, named) triples an adapter read: each IP
    literal once, as a WaitTarget from ``source``; 0.0.0.0 and :: bind wherever, so need no
    wait; a host that is no IP literal (a name) is not waited for, and a note says so, naming
    it as ``named``. One rule for every adapter (four copies of it had grown)."""
    import ipaddress

    from jailshim.spec import WaitTarget

    targets: dict[str, WaitTarget] = {}
    notes: list[str] = []
    for host, source, named in found:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            notes.append(f"{named} is not an IP literal; not waited for")
            continue
        if not address.is_unspecified:
            targets.setdefault(str(address), WaitTarget(str(address), source))
    return tuple(targets.values()), tuple(notes)


def load(name: str) -> DaemonAdapter:
    """The adapter for daemon ``name`` (a key of REGISTRY); imports only its module."""
    import importlib

    adapter: DaemonAdapter = importlib.import_module(REGISTRY[name].module).ADAPTER
    return adapter


def plan_for(adapter: DaemonAdapter, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
    """What ``adapter`` reads from the command line ``argv``, with its checker bound to that
    same command line (the files it read are the files it checks) and its identity rule."""
    plan = adapter.read(argv, env)
    read_argv = list(argv)

    def start_check() -> PendingCheck:
        return adapter.start_check(read_argv)

    def identity_rule(identity: Identity, group_given: bool) -> Identity:
        return adapter.identity(identity, plan, group_given=group_given)

    return plan._replace(start_check=start_check, identity_rule=identity_rule)


def choose(
    options: RunOptions, argv: Sequence[str], binary: str
) -> tuple[DaemonAdapter, list[str]] | None:
    """The adapter for this run and the command line it reads (its argv[0] the binary to ask),
    or None: COMMAND has no adapter and no option names one."""
    forced = options.daemon
    if forced is not None and forced not in REGISTRY:
        raise UsageError(
            f"{said(options.origin('daemon'), forced)} is not a daemon jailshim has an adapter "
            f"for; give one of {', '.join(sorted(REGISTRY))}, or leave it out."
        )
    owners = config_options()
    by_option = [(dest, path, owners[dest][0]) for dest, path in options.daemon_configs]
    if by_option and forced is not None and forced != by_option[0][2]:
        raise UsageError(
            f"{options.origin(by_option[0][0])} is {by_option[0][2]}'s configuration but "
            f"{options.origin('daemon')} says COMMAND is {forced}; give one of them."
        )
    basename = os.path.basename(argv[0])
    basename = ALIASES.get(basename, basename)
    name = forced or (by_option[0][2] if by_option else None)
    if name is None:
        name = basename if basename in REGISTRY else None
    if name is None:
        return None
    runs_it = name in (forced, basename)  # COMMAND is the daemon itself
    command = binary if runs_it else name
    if by_option:
        dest, path, _ = by_option[0]
        _readable(path, options.origin(dest), name)
        adapter = load(name)
        return adapter, adapter.config_argv(command, path)
    return load(name), [command, *argv[1:]]


def read_file(path: str, limit: int, *, dir_fd: int | None = None, nofollow: bool = False) -> bytes:
    """A regular file's content, or OSError (its strerror one a sentence can carry). The one
    way adapters read a file a config names (or one inside a jail): opened non-blocking — a
    FIFO in its place held jailshim, root, in open() for ever (haproxy's -f, stunnel's,
    vsftpd's and privoxy's config, openvpn's `config`, pdns's include-dir and Lua files,
    ntpd's includefile) — and bounded, so a link to /dev/zero is no endless read and a file
    over ``limit`` bytes is refused, never parsed cut short; ``nofollow`` for a last
    component a jail's user may have made a symlink (with ``dir_fd``: relative to it)."""
    import errno
    import stat

    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags | (os.O_NOFOLLOW if nofollow else 0), dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
    return data


def read_regular(
    path: str, limit: int, *, dir_fd: int | None = None, nofollow: bool = False
) -> bytes | None:
    """:func:`read_file`, or None where it raises (missing, unreadable, no regular file, too
    large): for readers whose daemon passes over such a file, or judges it itself."""
    try:
        return read_file(path, limit, dir_fd=dir_fd, nofollow=nofollow)
    except OSError:
        return None


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


def log_read(logger: Logger, adapter: DaemonAdapter, config: DaemonPlan) -> None:
    """The run log lines that name what was read from the daemon's config."""
    event = f"{adapter.name}.config"
    for note in config.notes:
        logger.warning(event, note=note)
    logger.info(
        event,
        files=list(config.files),
        chroot=config.chroot,
        user=config.user,
        group=config.group,
        log_sockets=list(config.sockets),
        **({"devices": list(config.devices)} if config.devices else {}),
        addresses=[t.ip for t in config.wait_targets],  # bound by the daemon: waited for
        # "notify": true read as "systemd is notified" even with no $NOTIFY_SOCKET: say both
        notify_capable=config.notify,  # it sends READY=1 from inside its jail when asked to
        notify_socket=(os.environ.get("NOTIFY_SOCKET") or None) if config.notify else None,
        **dict(config.read),
    )
