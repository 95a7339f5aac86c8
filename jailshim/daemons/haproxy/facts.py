"""What `.if` predicates ask about the haproxy binary, from `haproxy -vv`; and haproxy's way of
comparing versions. Imported only for a `.if` or a relative chroot under `-C`: asking costs a
process of its own."""

from __future__ import annotations

from typing import NamedTuple

from jailshim.errors import ConfigError

__all__ = ["Facts", "binary_facts", "version_key"]


class Facts(NamedTuple):
    """What `.if` predicates ask about the haproxy binary (from `haproxy -vv`)."""

    version: str = "2.6.12"
    features: str = ""
    openssl: str = ""


def binary_facts(binary: str = "haproxy") -> Facts:
    """The version, feature list and OpenSSL version of ``binary``, from `haproxy -vv`."""
    from jailshim.daemons.checkconf import Tool

    try:
        _, out, _ = Tool([binary, "-vv"], "haproxy", timeout=30).communicate()
    except ConfigError:  # could not run, or no answer in time: predicates see no facts
        return Facts()
    version = features = openssl = ""
    for ln in out.splitlines():
        if ln.startswith(("HAProxy version ", "HA-Proxy version ")) and not version:
            version = ln.split()[2]
        elif ln.startswith("Feature list :"):
            features = ln.split(":", 1)[1].strip()
        elif ln.startswith("Running on OpenSSL version :"):
            openssl = ln.split(":", 1)[1].strip()
    return Facts(version or "0", features, openssl)


def version_key(text: str) -> tuple[int, ...]:
    """split_version() (src/tools.c), simplified: the leading dotted numbers."""
    nums: list[int] = []
    for part in text.replace("-", ".").split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        nums.append(int(digits))
    return tuple(nums)
