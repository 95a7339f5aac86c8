"""jailshim.8 and the bash completion, generated from the command line's one option table.

Run at package build time (debian/rules: ``PYTHONPATH=. python3 scripts/manpage.py OUTDIR``),
never at start-up: it lives outside the package, so nothing in the command's path can import
it. Every option, variable, choice and exit code comes from cli._OPTIONS, cli._COMMANDS,
cli._EXITS and errors.EXIT_CODES, so the page and the completion cannot drift from `--help`
(tests/test_manpage.py compares them).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

from jailshim import __version__, cli, daemon_registry, devices, errors

__all__ = ["EXAMPLES", "completion", "main", "manpage", "roff"]

# (what it does, the command line): each one is parsed by tests/test_manpage.py, so an
# example with an option its command no longer takes fails the suite.
EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Prepare haproxy's jail before systemd starts it (ExecStartPre=), with the host's "
        "log socket:",
        "jailshim prepare --chroot /var/lib/haproxy --user haproxy --log-socket /dev/log",
    ),
    (
        "As a container's entrypoint: prepare, verify, then become haproxy; the jail and "
        "user come from haproxy's configuration:",
        "jailshim run --log-socket /dev/log -- /usr/sbin/haproxy -W -db -f "
        "/usr/local/etc/haproxy/haproxy.cfg",
    ),
    (
        "The same as PID 1 of a container, stopping haproxy gracefully on SIGTERM:",
        "jailshim run --init --rewrite-signal TERM:USR1 --map-exit 143:0 -- /usr/sbin/haproxy "
        "-W -db -f /usr/local/etc/haproxy/haproxy.cfg",
    ),
    (
        "Verify a jail as its daemon's user, changing nothing:",
        "jailshim check --chroot /var/lib/unbound --user unbound -- /usr/sbin/unbound",
    ),
    (
        "Will a running daemon survive its next reseed?",
        "jailshim doctor --pid $(pidof haproxy)",
    ),
    (
        "Every chrooted daemon on the host, for node_exporter's textfile collector:",
        "jailshim doctor --all --format prometheus --output "
        "/var/lib/prometheus/node-exporter/jailshim.prom",
    ),
    ("Undo what prepare made:", "jailshim teardown --chroot /var/lib/haproxy"),
    ("What does this error line mean?", "journalctl -u haproxy | jailshim explain"),
)

_SYNOPSES = {
    cli.RUN: "[OPTIONS] -- COMMAND [ARG...]",
    cli.PREPARE: "--chroot DIR [OPTIONS]",
    cli.CHECK: "[OPTIONS] [-- COMMAND [ARG...]]",
    cli.TEARDOWN: "--chroot DIR [OPTIONS]",
    cli.DOCTOR: "--pid PID... | --all | --chroot DIR [OPTIONS]",
    cli.EXPLAIN: "[FILE]",
}


def roff(text: str) -> str:
    """``text`` as roff running text: backslashes and hyphens escaped (a hyphen in a flag must
    stay an ASCII minus so that the page can be searched and copied), and a line that would
    start with a control character guarded."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in escaped.split("\n")
    )


def _options_of(command: str) -> list[cli._Opt]:
    return [opt for opt in cli._OPTIONS if command in opt.commands]


def _value_words(opt: cli._Opt) -> str:
    """The option's value as --help shows it: METAVAR, {a,b} for choices, nothing for a
    switch, METAVAR [METAVAR ...] for several."""
    if opt.switch:
        return ""
    word = opt.metavar or "{" + ",".join(opt.choices or ()) + "}"
    return f"{word} [{word} ...]" if opt.several else word


def _option_entry(opt: cli._Opt) -> list[str]:
    value = _value_words(opt)
    head = f"\\fB{roff(opt.flag)}\\fR" + (f" \\fI{roff(value)}\\fR" if value else "")
    body = roff(opt.help)
    if opt.choices and opt.metavar:  # choices not already shown as the value
        body += f" (one of: {roff(', '.join(opt.choices))})"
    variable = f"{opt.env}=1" if opt.switch else opt.env
    if opt.repeat:
        variable += " (comma-separated)"
    return [".TP", head, body, ".br", f"Variable: \\fB{roff(variable)}\\fR"]


def _exit_status() -> list[str]:
    lines = [".SH EXIT STATUS", ".TP", ".B 0", "Success (for \\fBrun\\fR: COMMAND's own status)."]
    codes = sorted((code, cls) for cls, code in errors.EXIT_CODES.items())
    for code, cls in codes:
        doc = " ".join((cls.__doc__ or cls.__name__).split())
        lines += [".TP", f".B {code}", roff(doc)]
    lines += [
        ".PP",
        "With \\fB\\-\\-init\\fR, \\fBrun\\fR exits with the daemon's status, or 128 plus the "
        "number of the signal that ended it (as changed by \\fB\\-\\-map\\-exit\\fR). "
        "\\fBdoctor \\-\\-all \\-\\-format nagios\\fR exits with a monitoring plugin's state: "
        + roff(", ".join(f"{code} {verdict}" for verdict, code in errors.NAGIOS_STATES.items()))
        + ". Each command's own codes are listed under it above.",
    ]
    return lines


def manpage(date: str = "") -> str:
    """jailshim.8 in roff (man macros)."""
    out = [
        f'.TH JAILSHIM 8 "{date}" "jailshim {__version__}" "System Administration"',
        ".SH NAME",
        "jailshim \\- start chrooted daemons safely: prepare the jail's /dev, prove entropy "
        "works inside it, hand over",
        ".SH SYNOPSIS",
    ]
    for name in cli._COMMANDS:
        out += [".SY jailshim", f".B {name}", roff(_SYNOPSES[name]), ".YS"]
    out += [".SY jailshim", ".B \\-\\-version", ".YS"]
    out += [
        ".SH DESCRIPTION",
        "\\fBjailshim\\fR is run as root before a chrooted daemon starts: it makes the jail's "
        "device nodes, log sockets and files right, verifies as the daemon's user that entropy "
        "can be read inside the jail, then hands over to the daemon (exec, or \\fBrun "
        "\\-\\-init\\fR as a lean PID 1 supervisor). \\fBdoctor\\fR audits daemons that are "
        "already running.",
        ".PP",
        "Every option is also an environment variable, named under it (flags win); a variable "
        "for an option a command does not take is ignored, so a container may set them for "
        "every command. A switch's variable takes 1/0, true/false, yes/no or on/off; a "
        "repeatable option's variable takes comma\\-separated values.",
        ".SH COMMANDS",
    ]
    for name, summary in cli._COMMANDS.items():
        out += [".SS " + f'"{name} {roff(_SYNOPSES[name])}"', roff(summary) + "."]
        options = _options_of(name)
        if options:
            out.append(".PP")
            out.append("Options:")
            for opt in options:
                out += _option_entry(opt)
        out += [".PP", roff(cli._EXITS[name])]
    out += _exit_status()
    out.append(".SH EXAMPLES")
    for what, line in EXAMPLES:
        out += [".PP", roff(what), ".PP", ".RS", ".EX", roff(line), ".EE", ".RE"]
    out += [
        ".SH FILES",
        ".TP",
        ".I /usr/share/doc/jailshim/examples/",
        "systemd drop\\-ins and units, Containerfiles and Kubernetes manifests for each "
        "daemon jailshim has an adapter for: "
        + roff(", ".join(sorted(daemon_registry.REGISTRY)))
        + ". The systemd examples call /usr/local/bin/jailshim; with the Debian package the "
        "command is /usr/bin/jailshim (see README.Debian).",
        ".TP",
        ".I /usr/share/bash\\-completion/completions/jailshim",
        "bash completion of commands, options and their values.",
        ".SH SEE ALSO",
        ".BR chroot (2),",
        ".BR getrandom (2),",
        ".BR random (4),",
        ".BR systemd.exec (5),",
        ".BR sysexits.h (3head)",
        "",
    ]
    return "\n".join(out)


def _signal_names(numbers: Iterable[int]) -> list[str]:
    names = {int(s): s.name.removeprefix("SIG") for s in signal.Signals}
    return [names[n] for n in sorted(set(numbers)) if n in names]


# the options whose values the completion names itself (their case lines below)
_VALUED = frozenset(
    ("--daemon", "--device", "--user", "--group", "--pdeath-signal", "--pid", "--rewrite-signal")
)


def _alternatives(options: Iterable[cli._Opt]) -> str:
    """A bash case pattern matching each option's flag (every option, not just a command's)."""
    return "|".join(sorted({o.flag for o in options}))


def _bash_words(words: Iterable[str]) -> str:
    return " ".join(words)


def completion() -> str:
    """A bash completion script defining _jailshim (``complete -F _jailshim jailshim``)."""
    from jailshim.supervisor import FORWARDED  # signals only a generator needs

    per_command = "\n".join(
        f'        {name}) opts="{_bash_words(o.flag for o in _options_of(name))} --help" ;;'
        for name in cli._COMMANDS
    )
    choices = "\n".join(
        f'        {o.flag}) COMPREPLY=($(compgen -W "{_bash_words(o.choices)}" -- "$cur")) ;;'
        for o in dict((o.flag, o) for o in cli._OPTIONS if o.choices).values()
        if o.choices
    )
    daemons = _bash_words(sorted(daemon_registry.REGISTRY))
    # by the value's name in the table: a new PATH option completes file names unasked
    directories = _alternatives(o for o in cli._OPTIONS if o.metavar == "DIR")
    files = _alternatives(o for o in cli._OPTIONS if o.metavar in ("PATH", "FILE"))
    free = _alternatives(  # a number, a name, an address: nothing to offer
        o
        for o in cli._OPTIONS
        if not (o.switch or o.choices or o.flag in _VALUED)
        and o.metavar not in ("DIR", "PATH", "FILE")
    )
    forwarded = _bash_words(_signal_names(FORWARDED))
    every_signal = _bash_words(["0", *_signal_names(signal.valid_signals())])
    return f"""# bash completion for jailshim {__version__}
# generated by jailshim.manpage from jailshim's option table; do not edit

_jailshim()
{{
    local cur prev words cword
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local commands="{_bash_words(cli._COMMANDS)}"
    local command="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
        --)
            # after --: COMMAND and its arguments
            if ((i == COMP_CWORD - 1)); then
                COMPREPLY=($(compgen -c -- "$cur"))
            else
                COMPREPLY=($(compgen -f -- "$cur"))
            fi
            return 0
            ;;
        -*) ;;
        *) [[ -z $command ]] && command="${{COMP_WORDS[i]}}" ;;
        esac
    done
    if [[ -z $command ]]; then
        COMPREPLY=($(compgen -W "$commands --help --version -V" -- "$cur"))
        return 0
    fi
    case "$prev" in
{choices}
        --daemon) COMPREPLY=($(compgen -W "{daemons}" -- "$cur")) ;;
        --device) COMPREPLY=($(compgen -W "{_bash_words(devices.ALLOWLIST)}" -- "$cur")) ;;
        --user) COMPREPLY=($(compgen -u -- "$cur")) ;;
        --group) COMPREPLY=($(compgen -g -- "$cur")) ;;
        --pdeath-signal) COMPREPLY=($(compgen -W "{forwarded}" -- "$cur")) ;;
        --rewrite-signal)
            if [[ $cur == *:* ]]; then
                COMPREPLY=($(compgen -P "${{cur%%:*}}:" -W "{every_signal}" -- "${{cur#*:}}"))
            else
                COMPREPLY=($(compgen -S : -W "{forwarded}" -- "$cur"))
                compopt -o nospace 2>/dev/null
            fi
            ;;
        {directories}) COMPREPLY=($(compgen -d -- "$cur")) ;;
        --pid) COMPREPLY=($(compgen -W "$(ps -e -o pid= 2>/dev/null)" -- "$cur")) ;;
        {files}) COMPREPLY=($(compgen -f -- "$cur")) ;;
        {free}) ;;
        *)
            local opts=""
            case "$command" in
{per_command}
            esac
            if [[ $cur == -* || $command != explain ]]; then
                COMPREPLY=($(compgen -W "$opts" -- "$cur"))
            else
                COMPREPLY=($(compgen -f -- "$cur"))
            fi
            [[ $command == run || $command == check ]] && [[ -z $cur ]] && COMPREPLY+=(--)
            ;;
    esac
    return 0
}}
complete -F _jailshim jailshim
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m jailshim.manpage",
        description="Write jailshim.8 and the bash completion (jailshim) into DIR.",
    )
    parser.add_argument("dir", type=Path)
    parser.add_argument("--date", default="", help="the page's date (debian/changelog's)")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    (args.dir / "jailshim.8").write_text(manpage(args.date), encoding="utf-8")
    (args.dir / "jailshim").write_text(completion(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
