"""`haproxy -c` on the files the adapter read, started in the background while the jail is
prepared: a rejection is a config error with haproxy's own words."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jailshim.daemons import PendingCheck
from jailshim.errors import ConfigError

if TYPE_CHECKING:
    from jailshim.daemons.checkconf import Tool

__all__ = ["RunningCheck"]


def _check_argv(binary: str, files: tuple[str, ...]) -> list[str]:
    argv = [binary, "-c"]
    for f in files:
        argv += ["-f", f]
    return argv


def _judge(returncode: int, output: str) -> None:
    """haproxy -c's verdict: a rejection is a config error with haproxy's words."""
    if returncode == 0:
        return
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    alerts = [ln.split(":", 1)[1].strip() if ":" in ln else ln for ln in lines if "[ALERT]" in ln]
    said = " | ".join(alerts) or (lines[-1] if lines else f"exit status {returncode}")
    raise ConfigError(
        f"haproxy rejected its configuration (haproxy -c, exit {returncode}): {said}",
        haproxy_output=lines[-20:],
    )


def _start_check(binary: str, files: tuple[str, ...]) -> Tool:
    """`haproxy -c` on the same files, in a session of its own (checkconf.Tool)."""
    import subprocess

    from jailshim.daemons.checkconf import Tool

    return Tool(
        _check_argv(binary, files),
        "haproxy",
        remedy="or check the haproxy binary",
        stderr=subprocess.STDOUT,
    )


class RunningCheck(PendingCheck):
    """`haproxy -c` started in the background: it runs while the jail is prepared."""

    def __init__(self, binary: str, files: tuple[str, ...]) -> None:
        self.tool: Tool | None = _start_check(binary, files)

    def finish(self) -> None:
        if self.tool is None:
            return
        tool, self.tool = self.tool, None
        code, output, _ = tool.communicate("haproxy -c")
        _judge(code, output)

    def cancel(self) -> None:
        if self.tool is not None:
            tool, self.tool = self.tool, None
            tool.end()
