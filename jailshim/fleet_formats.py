"""`doctor --all`'s outputs, each by its ecosystem's own rules: pure functions of a Scan.

- table: for a person at a terminal; JSON lines: one object per daemon, for machines.
- prometheus: the text exposition format (prometheus.io/docs/instrumenting/exposition_formats)
  for node_exporter's textfile collector: HELP and TYPE once per metric, label values with
  backslash, double quote and line feed escaped, base units (seconds), no sample timestamps
  (the collector rejects a file that has them), a line feed after the last line; labels of low
  cardinality only (daemon, jail, library: no PID, which changes at every restart and would
  make a new series each time).
- nagios: the plugin guidelines (monitoring-plugins.org/doc/guidelines.html): one line
  "SERVICE STATUS - text | perfdata", perfdata 'label'=value[UOM];[warn];[crit];[min];[max]
  separated by spaces, the states combined as their max_state_alt (CRITICAL > WARNING >
  UNKNOWN > OK), further lines the long text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from jailshim.errors import NAGIOS_STATES

if TYPE_CHECKING:
    from jailshim.fleet import Judged, Scan

__all__ = [
    "VERDICT_VALUES",
    "json_lines",
    "label_value",
    "nagios",
    "nagios_unknown",
    "prometheus",
    "table",
]

# The gauge's value: the Nagios state of the verdict, so one vocabulary serves both.
VERDICT_VALUES = NAGIOS_STATES
_ORDER = ("will fail", "safe now, fragile", "cannot tell", "safe")  # worst first


def _pids(j: Judged) -> str:
    shown = ",".join(map(str, j.daemon.pids[:4]))
    return shown + (f",+{len(j.daemon.pids) - 4}" if len(j.daemon.pids) > 4 else "")


def table(scan: Scan) -> str:
    """One row per daemon, worst first; under it, each unsafe daemon's verdict and fix."""
    rows = [("VERDICT", "DAEMON", "PIDS", "JAIL", "USER", "LIBRARY")]
    judged = sorted(scan.judged, key=lambda j: _ORDER.index(j.verdict))
    for j in judged:
        where = f"{j.daemon.root} (container)" if j.container else j.daemon.root
        rows.append(
            (j.verdict, j.daemon.name, _pids(j), where, j.user, ", ".join(j.libraries) or "-")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
        for r in rows
    ]
    if not scan.judged:
        lines = ["no chrooted daemon found"]
    for j in judged:
        if j.verdict != "safe":
            lines.append(f"\nPID {j.daemon.pids[0]} {j.daemon.name}: {j.words}")
    lines += [f"note: {n}" for n in scan.notes]
    lines.append(
        f"{len(scan.judged)} chrooted daemon{'s' if len(scan.judged) != 1 else ''} among "
        f"{scan.processes} processes, in {scan.seconds:.2f} s"
    )
    return "\n".join(lines) + "\n"


def json_lines(scan: Scan) -> str:
    """One JSON object per daemon ("kind": "daemon"), one per note ("kind": "skipped")."""
    out = []
    for j in scan.judged:
        d = j.daemon
        out.append(
            {
                "kind": "daemon",
                "name": d.name,
                "pid": d.pids[0],
                "pids": list(d.pids),
                "master": d.master,
                "jail": d.root,
                "container": j.container,
                "user": j.user,
                "libraries": list(j.libraries),
                "verdict": j.verdict,
                "detail": j.words,
            }
        )
    out += [{"kind": "skipped", "detail": note} for note in scan.notes]
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in out)


def label_value(text: str) -> str:
    """A label value as the exposition format wants it: valid UTF-8 (a path's stray bytes
    as \\xNN), with backslash, double quote and line feed escaped."""
    utf8 = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return utf8.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(key: tuple[str, str, str]) -> str:
    name, jail, library = key
    return (
        f'daemon="{label_value(name)}",jail="{label_value(jail)}",library="{label_value(library)}"'
    )


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def prometheus(scan: Scan) -> str:
    """The textfile: one gauge per daemon (two daemons with the same labels, such as one
    haproxy in each of two containers, are one series with the worse verdict and their
    process count summed: a duplicate series makes node_exporter reject the whole file),
    the count per verdict, the scan's duration and the time it finished."""
    series: dict[tuple[str, str, str], tuple[int, int]] = {}
    for j in scan.judged:
        key = (j.daemon.name, j.daemon.root, ", ".join(j.libraries) or "unknown")
        value = VERDICT_VALUES[j.verdict]
        old_value, old_count = series.get(key, (0, 0))
        worse = max((old_value, value), key=_severity) if key in series else value
        series[key] = (worse, old_count + len(j.daemon.pids))
    counts = {verdict: 0 for verdict in VERDICT_VALUES}
    for j in scan.judged:
        counts[j.verdict] += 1
    lines = [
        "# HELP jailshim_daemon_verdict Entropy verdict of a chrooted daemon as jailshim "
        "doctor --pid judges it: 0 safe, 1 safe now but fragile, 2 will fail, 3 cannot tell "
        "(the Nagios states).",
        "# TYPE jailshim_daemon_verdict gauge",
    ]
    for key, (value, _) in sorted(series.items()):
        lines.append(f"jailshim_daemon_verdict{{{_labels(key)}}} {value}")
    lines += [
        "# HELP jailshim_daemon_processes Chrooted processes of the daemon (a master's workers).",
        "# TYPE jailshim_daemon_processes gauge",
    ]
    for key, (_, count) in sorted(series.items()):
        lines.append(f"jailshim_daemon_processes{{{_labels(key)}}} {count}")
    lines += [
        "# HELP jailshim_doctor_daemons Chrooted daemons found, by verdict.",
        "# TYPE jailshim_doctor_daemons gauge",
        *(
            f'jailshim_doctor_daemons{{verdict="{label_value(v)}"}} {counts[v]}'
            for v in VERDICT_VALUES
        ),
        "# HELP jailshim_doctor_skipped_processes Processes skipped during the scan (exited, "
        "or their root unreadable).",
        "# TYPE jailshim_doctor_skipped_processes gauge",
        f"jailshim_doctor_skipped_processes {len(scan.notes)}",
        "# HELP jailshim_doctor_unreadable_processes Processes whose root the kernel would not "
        "show to doctor (it lacks CAP_SYS_PTRACE).",
        "# TYPE jailshim_doctor_unreadable_processes gauge",
        f"jailshim_doctor_unreadable_processes {scan.unreadable}",
        "# HELP jailshim_doctor_scan_duration_seconds How long the last scan took.",
        "# TYPE jailshim_doctor_scan_duration_seconds gauge",
        f"jailshim_doctor_scan_duration_seconds {_number(round(scan.seconds, 6))}",
        "# HELP jailshim_doctor_last_run_timestamp_seconds When the last scan finished, in "
        "seconds since the Unix epoch.",
        "# TYPE jailshim_doctor_last_run_timestamp_seconds gauge",
        f"jailshim_doctor_last_run_timestamp_seconds {_number(round(scan.finished, 3))}",
    ]
    return "\n".join(lines) + "\n"


_NAGIOS_WORDS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
_ALT_ORDER = (2, 1, 3, 0)  # max_state_alt: CRITICAL > WARNING > UNKNOWN > OK


def _severity(state: int) -> int:
    return -_ALT_ORDER.index(state)


def nagios_unknown(sentence: str) -> str:
    return f"JAILSHIM UNKNOWN - {sentence.replace('|', '/')}"


def nagios(scan: Scan) -> tuple[str, int]:
    """The status line (and long text), and the plugin's exit code."""
    states = [VERDICT_VALUES[j.verdict] for j in scan.judged]
    if scan.unreadable:
        states.append(3)
    state = max(states or [0], key=_severity)
    counts = {v: sum(1 for j in scan.judged if j.verdict == v) for v in VERDICT_VALUES}
    worst = [j for j in scan.judged if VERDICT_VALUES[j.verdict] == state]
    n = len(scan.judged)
    if state == 0:
        text = f"{n} chrooted daemon{'s' if n != 1 else ''}, all safe"
    elif scan.unreadable and not worst:
        text = f"{scan.unreadable} processes could not be inspected (no CAP_SYS_PTRACE?)"
    else:
        named = ", ".join(
            f"{j.daemon.name} (PID {j.daemon.pids[0]}, jail {j.daemon.root})" for j in worst[:3]
        )
        more = f" and {len(worst) - 3} more" if len(worst) > 3 else ""
        text = f"{len(worst)} of {n} chrooted daemons {worst[0].verdict}: {named}{more}"
    perf = " ".join(
        [
            f"daemons={n};;;0",
            f"will_fail={counts['will fail']};;0;0",  # critical when above 0
            f"fragile={counts['safe now, fragile']};0;;0",  # warning when above 0
            f"cannot_tell={counts['cannot tell']};;;0",
            f"safe={counts['safe']};;;0",
            f"scan_time={scan.seconds:.3f}s;;;0",
        ]
    )
    long_text = [
        f"{j.daemon.name} (PID {j.daemon.pids[0]}, jail {j.daemon.root}): {j.words}".replace(
            "|", "/"
        )
        for j in sorted(scan.judged, key=lambda j: _ORDER.index(j.verdict))
        if j.verdict != "safe"
    ] + [f"note: {n}".replace("|", "/") for n in scan.notes]
    line = f"JAILSHIM {_NAGIOS_WORDS[state]} - {text.replace('|', '/')} | {perf}"
    return "\n".join([line, *long_text]), state
