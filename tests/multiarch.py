"""The host's multiarch library directory (x86_64-linux-gnu, aarch64-linux-gnu, …): tests that
name Debian's libraries by path must not assume an amd64 machine."""

from __future__ import annotations

import subprocess
import sysconfig


def _multiarch() -> str:
    # Debian's interpreter knows its triplet; dpkg-architecture (dpkg-dev) when it does not
    triplet = sysconfig.get_config_var("MULTIARCH")
    if triplet:
        return str(triplet)
    proc = subprocess.run(
        ["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


MULTIARCH = _multiarch()
LIBDIR = f"/usr/lib/{MULTIARCH}"  # also /lib/MULTIARCH on a merged /usr
