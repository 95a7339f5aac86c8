"""`jailshim doctor --all`: the command around jailshim/fleet.py's scan — its usage rules, the
format chosen, the output written, the log events and the exit code.

Its own module so that the scan (fleet.py) and the renderers (fleet_formats.py, which read the
scan's types) do not import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jailshim.errors import VERDICT_ERRORS, JailshimError, UsageError, exit_code_for
from jailshim.fleet import FORMATS, UNKNOWN, Scan, scan, write_atomically

if TYPE_CHECKING:
    from jailshim.devices import Device
    from jailshim.logs import Logger

__all__ = ["doctor_all"]


def _usage(
    *,
    scan_all: bool,
    names: tuple[str, ...],
    output_format: str | None,
    output: str | None,
    conflicting: tuple[str, ...],
) -> str:
    """What is wrong with the command line, in one sentence, or ""."""
    if not scan_all:
        given = [
            flag
            for flag, value in (
                ("--name", names),
                ("--format", output_format),
                ("--output", output),
            )
            if value
        ]
        return (
            f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with --all."
            if given
            else ""
        )
    if conflicting:
        return (
            f"jailshim doctor --all finds every chrooted daemon itself; drop "
            f"{' and '.join(conflicting)}."
        )
    if output_format not in (None, *FORMATS):
        return f"--format {output_format!r}: choose one of {', '.join(FORMATS)}."
    if output_format == "prometheus" and output and not output.endswith(".prom"):
        return (
            f"--output {output}: node_exporter's textfile collector reads only files ending "
            "in .prom; name it so."
        )
    if output_format == "nagios" and output:
        return (
            "--format nagios writes its status line to stdout, for the plugin runner; drop "
            "--output."
        )
    return ""


def doctor_all(
    *,
    scan_all: bool,
    names: tuple[str, ...],
    output_format: str | None,
    output: str | None,
    conflicting: tuple[str, ...],
    devices: tuple[Device, ...],
    log: Logger,
    read_filter: bool,
    on_terminal: bool,
) -> int:
    """`jailshim doctor --all [--name NAME] [--format F] [--output FILE]`; the exit code.

    table/json: 0 when every daemon is safe, else doctor's code for the worst verdict (69
    action needed, 75 cannot tell). prometheus: 0 once the metrics are written (the verdicts
    are in them; a timer's unit does not fail for a fragile daemon). nagios: the plugin
    guidelines' 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (bad usage or a scan failure too)."""
    from jailshim import fleet_formats as formats

    wrong = _usage(
        scan_all=scan_all,
        names=names,
        output_format=output_format,
        output=output,
        conflicting=conflicting,
    )
    nagios = output_format == "nagios"
    if wrong:
        if nagios:
            return _say(formats.nagios_unknown(wrong), UNKNOWN)
        raise UsageError(wrong)
    fmt = output_format or "auto"
    if fmt == "auto":
        fmt = "table" if on_terminal and not output else "json"
    try:
        result = scan(devices, log, names=names, read_filter=read_filter)
    except (JailshimError, OSError) as exc:
        if not nagios:
            raise
        failed = (
            exc.sentence
            if isinstance(exc, JailshimError)
            else f"the scan of /proc failed: {exc.strerror}"
        )
        return _say(formats.nagios_unknown(failed), UNKNOWN)
    # A person reading the table is not shown the same daemons again as log events (issue 26)
    table = fmt == "table" and not output
    _log_scan(result, log, table=table)
    if nagios:
        line, code = formats.nagios(result)
        return _say(line, code)
    text = {
        "table": formats.table,
        "json": formats.json_lines,
        "prometheus": formats.prometheus,
    }[fmt](result)
    if output:
        write_atomically(output, text)
    else:
        _say(text)
    if fmt == "prometheus":
        return 0
    return _exit_for(result, log, table=table)


def _log_scan(result: Scan, log: Logger, *, table: bool) -> None:
    """One event per daemon and per skipped process; at debug under a table on screen."""
    import logging

    for j in result.judged:
        quiet = logging.INFO if j.verdict == "safe" else logging.ERROR
        log.log(
            logging.DEBUG if table else quiet,
            "doctor.all",
            pid=j.daemon.pids[0],
            name=j.daemon.name,
            jail=j.daemon.root,
            verdict=j.verdict,
            detail=j.words,
        )
    for note in result.notes:
        log.log(logging.DEBUG if table else logging.INFO, "doctor.skipped", detail=note)


def _exit_for(result: Scan, log: Logger, *, table: bool) -> int:
    """doctor's exit code for the worst verdict (unreadable processes: cannot tell); raised as
    its failure, or only logged at debug when the table on screen already says it."""
    from jailshim.verify.entropy import worst_verdict
    from jailshim.verify.verdict import Verdict

    verdicts = [Verdict(j.verdict) for j in result.judged] or [Verdict.SAFE]
    if result.unreadable:
        verdicts.append(Verdict.CANNOT_TELL)
    error = VERDICT_ERRORS[worst_verdict(verdicts)]
    if error is None:
        return 0
    said = [
        f"PID {j.daemon.pids[0]} {j.daemon.name} (jail {j.daemon.root}): {j.words}"
        for j in result.judged
        if j.verdict != "safe"
    ]
    if result.unreadable:
        said.append(result.notes[-1])
    failure = error(" ".join(said))
    if table:  # the table is on screen: the exit code, not a `failed` event
        log.debug("failed", error=failure.sentence, exit_code=exit_code_for(failure))
        return exit_code_for(failure)
    raise failure


def _say(text: str, code: int = 0) -> int:
    import sys

    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return code
