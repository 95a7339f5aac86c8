"""Run a daemon's own config tool: `TOOL -o OPTION FILE` prints one option's value as the daemon
reads it (unbound-checkconf, nsd-checkconf), and `TOOL FILE` is its checker; postfix's postconf
answers several questions per run and `postfix check` speaks only to a terminal.

Every tool runs in a session of its own (setsid), and ends with its whole session: on its
time-out, on a stop signal to jailshim, or when the run fails first, every process of that
session is killed and jailshim confirms none is left. `postfix check` runs postfix-script, which
runs find and post-install: killing postfix alone left them running under PID 1 (issue 25).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jailshim.errors import ConfigError

if TYPE_CHECKING:
    from jailshim.spec import WaitTarget

__all__ = [
    "TIMEOUT",
    "Tool",
    "ask",
    "ip_targets",
    "run",
    "run_all",
    "run_on_terminal",
    "session_members",
]

TIMEOUT = 60.0  # seconds a daemon's tool may take before its session is ended
_REAP_WITHIN = 5.0  # seconds to see a killed session's last process gone


def session_members(sid: int) -> list[tuple[int, int, str]]:
    """(pid, ppid, state) of every process in session ``sid``, from /proc/PID/stat."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        # comm may hold spaces and parentheses: the fields start after the last ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            found.append((int(name), int(fields[1]), fields[0].decode()))
    return found


class Tool:
    """One tool running in a session of its own (its PID is the session's and the group's id);
    ``end`` kills the whole session and reaps what is jailshim's to reap."""

    def __init__(
        self,
        argv: Sequence[str],
        package: str,
        *,
        remedy: str = "or pass --chroot and --user",
        stdout: int = subprocess.PIPE,
        stderr: int = subprocess.PIPE,
        timeout: float = TIMEOUT,
    ) -> None:
        self.argv = list(argv)
        self.package = package
        self.timeout = timeout
        self.started = time.monotonic()
        try:
            self.proc: subprocess.Popen[str] = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                text=True,
                close_fds=True,
                # a session of its own: a terminal given to it is not its controlling one (no
                # SIGHUP), and its group is every process it starts, killed together
                start_new_session=True,
            )
        except OSError as exc:
            raise ConfigError(
                f"`{self.argv[0]}` could not run ({exc.strerror}); install {package}'s tools "
                f"(Debian package {package}) {remedy}."
            ) from None

    def left(self) -> float:
        """Seconds of its time-out still left."""
        return max(0.0, self.started + self.timeout - time.monotonic())

    def timed_out(self, what: str | None = None) -> ConfigError:
        return ConfigError(
            f"`{what or ' '.join(self.argv)}` did not finish in {self.timeout:g} s; its "
            f"processes were stopped. Check {self.package}'s tools and configuration."
        )

    def communicate(self, what: str | None = None) -> tuple[int, str, str]:
        """Its exit status, stdout and stderr; past its time-out its session is ended."""
        try:
            out, err = self.proc.communicate(timeout=self.left())
        except subprocess.TimeoutExpired:
            self.end()
            raise self.timed_out(what) from None
        except BaseException:  # a stop signal (Interrupted) or any failure: leave nothing
            self.end()
            raise
        self._after()
        return self.proc.returncode, out or "", err or ""

    def wait(self, what: str | None = None) -> int:
        """Its exit status (output not piped); past its time-out its session is ended."""
        try:
            code = self.proc.wait(timeout=self.left())
        except subprocess.TimeoutExpired:
            self.end()
            raise self.timed_out(what) from None
        except BaseException:
            self.end()
            raise
        self._after()
        return code

    def end(self) -> None:
        """Kill every process of its session and reap the tool; its pipes are closed."""
        from jailshim.stopsignals import signals_deferred

        with signals_deferred():  # a second TERM must not cut the clean-up short
            self._end_group()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def _after(self) -> None:
        """The tool has exited (and was reaped): end what it left in its group, if anything.
        Signal 0 to the group asks without acting; while any member lives its number stays
        reserved (the kernel does not hand out a PID a group or session still uses)."""
        try:
            os.killpg(self.proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        self._end_group()

    def _end_group(self) -> None:
        sid = self.proc.pid
        deadline = time.monotonic() + _REAP_WITHIN
        while True:
            living = []
            for pid, ppid, state in session_members(sid):
                if state == "Z" and ppid == os.getpid() and pid != sid:
                    # an orphan that came back to us (jailshim as PID 1, or a subreaper)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                elif state not in ("Z", "X"):
                    living.append(pid)
            if self.proc.returncode is None or living:
                # The tool unreaped (alive or a zombie) or a living member holds the number:
                # it names this group and no other.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(sid, signal.SIGKILL)
                for pid in living:  # one that moved to another group of the same session
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            self.proc.poll()  # reaps the tool itself
            if not living and self.proc.returncode is not None:
                return
            if time.monotonic() > deadline:
                from jailshim.log import get_logger

                get_logger().warning(
                    "checker.left",
                    detail=f"processes of `{self.argv[0]}`'s session still alive after SIGKILL",
                    pids=living,
                )
                return
            time.sleep(0.01)


def run(argv: list[str], package: str, *, timeout: float = TIMEOUT) -> tuple[int, str]:
    """The checker (``TOOL FILE``): its exit status and everything it printed."""
    code, out, err = Tool(argv, package, timeout=timeout).communicate(argv[0])
    return code, out + err


def run_all(argvs: Sequence[list[str]], package: str) -> list[tuple[int, str, str]]:
    """Several commands side by side: each one's exit status, stdout and stderr, in order."""
    tools: list[Tool] = []
    try:
        for argv in argvs:
            tools.append(Tool(argv, package))
        return [tool.communicate(tool.argv[0]) for tool in tools]
    finally:
        for tool in tools:
            if tool.proc.returncode is None:
                tool.end()


def run_on_terminal(argv: list[str], package: str, *, timeout: float = TIMEOUT) -> tuple[int, str]:
    """The checker with its stdout and stderr on a pseudo-terminal (a tool that logs to stderr
    only when it is a TTY): its exit status and everything it printed."""
    import select

    controller, terminal = os.openpty()
    try:
        try:
            tool = Tool(
                argv,
                package,
                remedy="or pass --no-config-check",
                stdout=terminal,
                stderr=terminal,
                timeout=timeout,
            )
        finally:
            os.close(terminal)
        chunks: list[bytes] = []
        try:
            while tool.left() > 0:
                ready, _, _ = select.select([controller], [], [], tool.left())
                if not ready:
                    break
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        except BaseException:
            tool.end()
            raise
    finally:
        os.close(controller)
    code = tool.wait(" ".join(argv))
    return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def ask(
    tool: str, options: Sequence[str], tail: Sequence[str], package: str
) -> tuple[dict[str, list[str]], tuple[int, str] | None]:
    """Each option's value lines (one process per option, all running at once), and the first
    failure as (exit status, everything it printed), or None."""
    results = run_all([[tool, "-o", opt, *tail] for opt in options], package)
    values: dict[str, list[str]] = {}
    failed: tuple[int, str] | None = None
    for opt, (code, out, err) in zip(options, results, strict=True):
        if code != 0 and failed is None:
            failed = (code, out + err)
        values[opt] = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return values, failed


def ip_targets(
    lines: Sequence[str], where: str, keyword: str
) -> tuple[tuple[WaitTarget, ...], tuple[str, ...]]:
    """The IPs of `KEYWORD: ADDR[@PORT]` values to wait for, and notes for those that are not
    IP literals (names are not waited for); 0.0.0.0 and :: bind wherever, so need no wait."""
    from jailshim.daemons import ip_wait_targets

    found = []
    for raw in lines:
        host = raw.split()[0].rsplit("@", 1)[0] if raw.split() else raw
        said = f"{where}: {keyword} {raw}"
        found.append((host.split("%", 1)[0], said, said))
    return ip_wait_targets(found)
