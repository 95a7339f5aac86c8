"""The daemons jailshim has an adapter for: each one's module and its own run option, if any.

A table, and no adapter code: the command line reads it on every start (the --NAME-config rows
and --daemon's help come from here), and importing the daemons package for it cost ~1 ms on
every command. jailshim.daemons re-exports it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ADAPTERS", "ALIASES", "REGISTRY", "Registered", "config_options"]


class Registered(NamedTuple):
    """A daemon jailshim has an adapter for: the module that holds it (imported only when the
    daemon runs) and the run option, if any, that names its configuration file. The option is
    declared here, not in the module, so that building the command line imports no adapter."""

    module: str
    config_flag: str = ""  # such as --haproxy-config: COMMAND's config file, for any COMMAND
    config_help: str = ""


# daemon name (COMMAND's basename, or --daemon NAME) -> its adapter
REGISTRY = {
    "haproxy": Registered(
        "jailshim.daemons.haproxy",
        "--haproxy-config",
        "haproxy's configuration file (default: from -f)",
    ),
    "lighttpd": Registered("jailshim.daemons.lighttpd"),
    "named": Registered("jailshim.daemons.named"),
    "nsd": Registered("jailshim.daemons.nsd"),
    "ntpd": Registered("jailshim.daemons.ntpsec"),
    "openvpn": Registered("jailshim.daemons.openvpn"),
    "pdns_recursor": Registered("jailshim.daemons.pdns_recursor"),
    "pdns_server": Registered("jailshim.daemons.pdns_server"),
    "postfix": Registered("jailshim.daemons.postfix"),
    "privoxy": Registered("jailshim.daemons.privoxy"),
    "radvd": Registered("jailshim.daemons.radvd"),
    "sshd": Registered("jailshim.daemons.sshd"),
    "stunnel": Registered("jailshim.daemons.stunnel"),
    "unbound": Registered("jailshim.daemons.unbound"),
    "vsftpd": Registered("jailshim.daemons.vsftpd"),
}
ADAPTERS = {name: entry.module for name, entry in REGISTRY.items()}
# other names the same daemon is installed under (Debian: /usr/bin/stunnel4)
ALIASES = {"stunnel4": "stunnel"}


def config_options() -> dict[str, tuple[str, str]]:
    """The adapters' own run options: dest -> (daemon, help), such as haproxy_config."""
    return {
        entry.config_flag.removeprefix("--").replace("-", "_"): (name, entry.config_help)
        for name, entry in REGISTRY.items()
        if entry.config_flag
    }
