"""POSIX getopt(3) as daemons written in C read their command line, without GNU's reordering.

named (isc_commandline_parse) and postfix (GETOPT with "+") both read options this way: flags
combine (-gu bind), a value is the rest of its word or the next word (-tDIR, -t DIR), and `--`
or the first word that is not an option ends the options. Each adapter turns a GetoptError into
its daemon's own sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from jailshim.errors import UsageError

__all__ = ["GetoptError", "Parsed", "getopt", "options_of"]


class GetoptError(Exception):
    """An option the daemon does not take (``missing`` False) or one whose value is missing."""

    def __init__(self, letter: str, *, missing: bool) -> None:
        super().__init__(letter)
        self.letter = letter
        self.missing = missing


class Parsed(NamedTuple):
    options: tuple[tuple[str, str], ...]  # (letter, value) in order; a flag's value is ""
    rest: int  # the index in argv of the first word after the options


def getopt(argv: Sequence[str], optstring: str) -> Parsed:
    """Read ``argv[1:]`` against ``optstring`` (getopt's own syntax: "c:Dv")."""
    with_value = {optstring[i - 1] for i, ch in enumerate(optstring) if ch == ":"}
    flags = set(optstring.replace(":", "")) - with_value
    options: list[tuple[str, str]] = []
    i = 1
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        for j in range(1, len(word)):
            letter = word[j]
            if letter in with_value:
                value = word[j + 1 :]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise GetoptError(letter, missing=True)
                    value = argv[i]
                options.append((letter, value))
                break
            if letter not in flags:
                raise GetoptError(letter, missing=False)
            options.append((letter, ""))
        i += 1
    return Parsed(tuple(options), i)


def options_of(daemon: str, argv: Sequence[str], optstring: str) -> dict[str, list[str]]:
    """Each option letter's values (a flag's: ""), or the sentence for a command line the
    daemon itself would refuse (it would print its usage and exit)."""
    try:
        parsed = getopt(argv, optstring)
    except GetoptError as exc:
        what = "needs a value and COMMAND ends there" if exc.missing else "is not one it takes"
        raise UsageError(
            f"{daemon}'s option -{exc.letter} {what}, so {daemon} would refuse to start; "
            f"fix COMMAND (`{daemon} -h` lists its options)."
        ) from None
    found: dict[str, list[str]] = {}
    for letter, value in parsed.options:
        found.setdefault(letter, []).append(value)
    return found
