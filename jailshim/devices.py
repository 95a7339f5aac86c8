"""The allowlist: the only device nodes jailshim will ever put in a jail.

Character devices only, with fixed numbers, so no option or config can make jailshim create a
block device or an arbitrary major:minor inside a directory a daemon can read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

from jailshim.errors import UsageError, said

__all__ = ["ALLOWLIST", "DEFAULT_DEVICES", "ENTROPY_DEVICES", "Device", "select"]


class Device(NamedTuple):
    """One allowlisted character device: its name under dev/ and its identity."""

    name: str
    major: int
    minor: int
    mode: int = 0o666

    @property
    def rdev(self) -> int:
        return os.makedev(self.major, self.minor)

    @property
    def numbers(self) -> str:
        return f"{self.major}:{self.minor}"

    @property
    def host_path(self) -> str:
        return f"/dev/{self.name}"


ALLOWLIST: dict[str, Device] = {
    d.name: d
    for d in (
        Device("null", 1, 3),
        Device("zero", 1, 5),
        Device("full", 1, 7),
        Device("random", 1, 8),
        Device("urandom", 1, 9),
        Device("tty", 5, 0),
    )
}

DEFAULT_DEVICES: tuple[str, ...] = ("urandom", "random", "null")

# The ones a crypto library reads for seeding; the verifier reads these for sane bytes.
ENTROPY_DEVICES = frozenset({"urandom", "random"})


def select(names: Iterable[str], source: str = "--device") -> tuple[Device, ...]:
    """The allowlisted devices named, in order, without repeats; unknown names are a usage error
    naming ``source`` (the flag or variable they came from)."""
    chosen: dict[str, Device] = {}
    for raw in names:
        name = raw.strip().removeprefix("/dev/")
        if name not in ALLOWLIST:
            allowed = ", ".join(ALLOWLIST)
            raise UsageError(
                f"{said(source, raw)} is not an allowlisted character device; "
                f"choose from {allowed}."
            )
        chosen.setdefault(name, ALLOWLIST[name])
    return tuple(chosen.values())
