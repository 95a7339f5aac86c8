"""The haproxy adapter: read haproxy's configuration the way haproxy 2.6 does.

tokenizer.py splits a line as parse_line() does; config.py finds the files (-f, directories,
--, -C) and gives global's chroot/user/group, the unix `log` targets, and the addresses the
`bind` lines will bind (to wait for); checker.py runs `haproxy -c`. Only a configuration with
a `.if` imports conditions.py and asks `haproxy -vv` (facts.py): this adapter runs at every
start of haproxy, and most configurations have none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jailshim.daemons import Adapter, DaemonPlan, PendingCheck
from jailshim.daemons.haproxy.config import (
    Bind,
    HaproxyConfig,
    cfg_args,
    config_files,
    haproxy_targets,
    identity_as_set,
    jail_of,
    parse_config,
    read_config,
)
from jailshim.daemons.haproxy.tokenizer import ParseError, split_line

if TYPE_CHECKING:
    from jailshim.daemons.haproxy.facts import Facts, binary_facts
    from jailshim.spec import Identity

__all__ = [
    "ADAPTER",
    "Bind",
    "Facts",
    "HaproxyConfig",
    "ParseError",
    "binary_facts",
    "config_files",
    "haproxy_targets",
    "identity_as_set",
    "jail_of",
    "parse_config",
    "read_config",
    "split_line",
]

# Names importable from here whose modules a plain start does not need (PEP 562).
_LAZY = {
    "Facts": "facts",
    "binary_facts": "facts",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


class _Haproxy(Adapter):
    """haproxy: its -f files read as haproxy 2.6 reads them; `haproxy -c` as its checker."""

    name = "haproxy"

    def read(self, argv: Sequence[str], env: Mapping[str, str]) -> DaemonPlan:
        # .if predicates (feature(), version_atleast()) ask the binary that will run: argv[0]
        config = read_config(config_files(argv), env, binary=argv[0])
        targets, notes = haproxy_targets(config.binds)
        jail = config.chroot
        if jail is not None and not jail.startswith("/"):
            _, change_dir = cfg_args(argv)
            # only then is the version asked: `haproxy -vv` is a process of its own
            version = "0"
            if change_dir is not None:
                from jailshim.daemons.haproxy.facts import binary_facts

                version = binary_facts(argv[0]).version
            jail = jail_of(jail, os.getcwd(), change_dir, version)
        return DaemonPlan(
            files=config.files,
            chroot=jail,
            user=config.user,
            group=config.group,
            sockets=config.log_sockets,
            wait_targets=tuple(targets),
            notes=tuple(notes),
        )

    def start_check(self, argv: Sequence[str]) -> PendingCheck:
        from jailshim.daemons.haproxy.checker import RunningCheck

        return RunningCheck(argv[0], tuple(config_files(argv)))

    def config_argv(self, command: str, path: str) -> list[str]:
        return [command, "-f", path]

    def identity(self, identity: Identity, config: DaemonPlan, *, group_given: bool) -> Identity:
        return identity_as_set(identity, group_given=group_given)


ADAPTER = _Haproxy()
