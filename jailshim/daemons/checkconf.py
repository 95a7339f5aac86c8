"""Run a daemon's own config tool: `TOOL -o OPTION FILE` prints one option's value as the daemon
reads it (unbound-checkconf, nsd-checkconf), and `TOOL FILE` is its checker; postfix's postconf
answers several questions per run and `postfix check` speaks only to a terminal."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jailshim.errors import ConfigError

if TYPE_CHECKING:
    from jailshim.verify.network import WaitTarget

__all__ = ["ask", "ip_targets", "run", "run_all", "run_on_terminal"]


def _start(argv: list[str], package: str) -> subprocess.Popen[str]:
    try:
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, close_fds=True
        )
    except OSError as exc:
        raise ConfigError(
            f"`{argv[0]}` could not run ({exc.strerror}); install {package}'s tools (Debian "
            f"package {package}) or pass --chroot and --user."
        ) from None


def _finish(proc: subprocess.Popen[str], what: str, package: str) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ConfigError(f"`{what}` did not finish in 60 s; check {package}'s tools.") from None
    return proc.returncode, out, err


def run(argv: list[str], package: str) -> tuple[int, str]:
    """The checker (``TOOL FILE``): its exit status and everything it printed."""
    code, out, err = _finish(_start(argv, package), argv[0], package)
    return code, out + err


def run_all(argvs: Sequence[list[str]], package: str) -> list[tuple[int, str, str]]:
    """Several commands side by side: each one's exit status, stdout and stderr, in order."""
    procs = [_start(argv, package) for argv in argvs]
    return [_finish(proc, argv[0], package) for proc, argv in zip(procs, argvs, strict=True)]


def run_on_terminal(argv: list[str], package: str) -> tuple[int, str]:
    """The checker with its stdout and stderr on a pseudo-terminal (a tool that logs to stderr
    only when it is a TTY): its exit status and everything it printed."""
    import select
    import time

    controller, terminal = os.openpty()
    try:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=terminal,
                stderr=terminal,
                close_fds=True,
                start_new_session=True,  # the terminal is not its controlling one: no SIGHUP
            )
        except OSError as exc:
            raise ConfigError(
                f"`{argv[0]}` could not run ({exc.strerror}); install {package}'s tools (Debian "
                f"package {package}) or pass --no-config-check."
            ) from None
        finally:
            os.close(terminal)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
    try:
        code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise ConfigError(f"`{' '.join(argv)}` did not finish in 60 s; check {package}.") from None
    return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def ask(
    tool: str, options: Sequence[str], tail: Sequence[str], package: str
) -> tuple[dict[str, list[str]], tuple[int, str] | None]:
    """Each option's value lines (one process per option, all running at once), and the first
    failure as (exit status, everything it printed), or None."""
    procs = {opt: _start([tool, "-o", opt, *tail], package) for opt in options}
    values: dict[str, list[str]] = {}
    failed: tuple[int, str] | None = None
    for opt, proc in procs.items():
        code, out, err = _finish(proc, f"{tool} -o {opt}", package)
        if code != 0 and failed is None:
            failed = (code, out + err)
        values[opt] = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return values, failed


def ip_targets(
    lines: Sequence[str], where: str, keyword: str
) -> tuple[tuple[WaitTarget, ...], tuple[str, ...]]:
    """The IPs of `KEYWORD: ADDR[@PORT]` values to wait for, and notes for those that are not
    IP literals (names are not waited for); 0.0.0.0 and :: bind wherever, so need no wait."""
    import ipaddress

    from jailshim.verify.network import WaitTarget

    targets: dict[str, WaitTarget] = {}
    notes: list[str] = []
    for raw in lines:
        host = raw.split()[0].rsplit("@", 1)[0] if raw.split() else raw
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            notes.append(f"{where}: {keyword} {raw} is not an IP literal; not waited for")
            continue
        ip = str(address)
        if not address.is_unspecified:
            targets.setdefault(ip, WaitTarget(ip, f"{where}: {keyword} {raw}"))
    return tuple(targets.values()), tuple(notes)
