"""tini's and dumb-init's flags as `jailshim run --init` flags, so one case runs on either.

    tini -e N -> --map-exit N:0     tini -g -> --kill-group     tini -p SIG -> --pdeath-signal SIG
    tini -w   -> --log-level debug  tini -s -> (always a subreaper)
    dumb-init -r S:R -> --rewrite-signal S:R    dumb-init (setsid mode, its default) -> --kill-group
    dumb-init --single-child -> (no equivalent: the stop sequence always ends every descendant)

`argv(runner, peer, flags, pid1)` is the command line that starts COMMAND (appended after it)
under RUNNER: "jailshim", or the peer itself (Debian's package), the control.
"""

from __future__ import annotations

import shutil

from tests.support import jailshim_argv, need

PID_NS = ["unshare", "--pid", "--fork", "--mount-proc"]


def jailshim_flags(peer: str, flags: list[str]) -> list[str]:
    out: list[str] = []
    words = iter(flags)
    for flag in words:
        if peer == "tini" and flag == "-e":
            out += ["--map-exit", f"{next(words)}:0"]
        elif peer == "tini" and flag == "-g":
            out.append("--kill-group")
        elif peer == "tini" and flag == "-p":
            out += ["--pdeath-signal", next(words)]
        elif peer == "tini" and flag == "-w":
            out += ["--log-level", "debug"]
        elif peer == "tini" and flag == "-s":
            pass
        elif peer == "dumb-init" and flag in ("-r", "--rewrite"):
            out += ["--rewrite-signal", next(words)]
        elif peer == "dumb-init" and flag == "--setsid":
            out.append("--kill-group")
        else:
            raise ValueError(f"{peer} {flag}: no jailshim equivalent")
    return out


def argv(runner: str, peer: str, flags: list[str], pid1: bool = False) -> list[str]:
    wrap = PID_NS if pid1 else []
    if runner == "jailshim":
        return [*wrap, *jailshim_argv("run", "--init", *jailshim_flags(peer, flags), "--")]
    binary = shutil.which(peer)
    need(binary is not None, f"Debian's {peer} (the control) is not installed")
    assert binary is not None
    dumb = [f for f in flags if f != "--setsid"]  # setsid is dumb-init's default mode
    return [*wrap, binary, *(dumb if peer == "dumb-init" else [*flags, "--"])]
